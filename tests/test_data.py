"""Problem generators: shapes, determinism, the properties they promise, and clear errors."""

import numpy as np
import pytest

from ltn.data import check_problem, load_npz, separable_classification, separation_margin, sparse_regression


def test_sparse_regression_is_deterministic_and_sparse():
    a, b = sparse_regression(3, 5, 12, 2, noise=0.0), sparse_regression(3, 5, 12, 2, noise=0.0)
    assert a.X.shape == (5, 12) and np.array_equal(a.X, b.X)
    assert np.count_nonzero(a.beta_star) == 2 and np.allclose(a.X @ a.beta_star, a.y)
    assert not np.array_equal(a.X, sparse_regression(4, 5, 12, 2).X)
    noisy = sparse_regression(3, 5, 12, 2, noise=0.5)
    assert not np.allclose(noisy.X @ noisy.beta_star, noisy.y)


@pytest.mark.parametrize("kwargs, needle", [(dict(n=12, d=12, sparsity=2), "n < d"),
                                            (dict(n=3, d=12, sparsity=13), "sparsity")])
def test_sparse_regression_rejects_bad_sizes(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        sparse_regression(0, **kwargs)


def test_separable_classification_has_the_promised_margin():
    problem = separable_classification(1, 20, 6, margin=0.3)
    assert set(np.unique(problem.y)) <= {-1.0, 1.0}
    assert np.min(problem.y * (problem.X @ problem.beta_star)) >= 0.3 - 1e-12
    assert separation_margin(problem.X, problem.y) > 0
    with pytest.raises(ValueError, match="margin"):
        separable_classification(1, 20, 6, margin=0.0)


def test_load_npz_round_trip_and_errors(tmp_path):
    problem = sparse_regression(0, 3, 6, 2)
    np.savez(tmp_path / "p.npz", X=problem.X, y=problem.y)
    loaded = load_npz(tmp_path / "p.npz", "regression")
    assert np.array_equal(loaded.X, problem.X) and loaded.beta_star is None
    np.savez(tmp_path / "noy.npz", X=problem.X)
    with pytest.raises(ValueError, match="lacks"):
        load_npz(tmp_path / "noy.npz", "regression")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz", "regression")


def test_check_problem_rejects_non_separable_labels():
    X = np.array([[1.0, 0.0], [1.0, 0.0]])
    problem = separable_classification(0, 4, 2)
    with pytest.raises(ValueError, match="not linearly separable"):
        check_problem(type(problem)(X, np.array([1.0, -1.0]), "classification"))


def test_load_npz_refuses_complex_and_non_finite_arrays_by_name(tmp_path):
    problem = sparse_regression(0, 3, 6, 2)
    np.savez(tmp_path / "c.npz", X=problem.X + 0j, y=problem.y)  # a zero imaginary part is still refused
    with pytest.raises(ValueError, match=r"c.npz': array 'X' is complex \(dtype complex128\)"):
        load_npz(tmp_path / "c.npz", "regression")
    X = problem.X.copy()
    X[2, 4] = -np.inf
    np.savez(tmp_path / "inf.npz", X=X, y=problem.y)
    with pytest.raises(ValueError, match=r"inf.npz': X has 1 NaN or infinite entries, the first X\[2, 4\] = -inf"):
        load_npz(tmp_path / "inf.npz", "regression")
    np.savez(tmp_path / "b.npz", X=problem.X, y=problem.y, beta_star=problem.beta_star + 1j)
    with pytest.raises(ValueError, match="array 'beta_star' is complex"):
        load_npz(tmp_path / "b.npz", "regression")


def test_a_tensor_file_is_read_with_the_same_checks(tmp_path):
    from ltn.sweep._build import build_network
    from ltn.sweep._config import NetworkSpec

    np.savez(tmp_path / "M.npz", M=np.ones((3, 2, 2)) * 1j)
    with pytest.raises(ValueError, match=r"tensor file '.*M.npz': array 'M' is complex"):
        build_network(NetworkSpec("tensor", path="M.npz"), 3, str(tmp_path))
    np.savez(tmp_path / "deep.npz", M=np.ones((3,) + (1,) * 33))
    with pytest.raises(ValueError, match="has depth 33, more than 32"):
        build_network(NetworkSpec("tensor", path="deep.npz"), 3, str(tmp_path))
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="tensor file .* is empty"):
        build_network(NetworkSpec("tensor", path="empty.npz"), 3, str(tmp_path))


def test_the_test_set_is_deterministic_and_independent_of_the_training_set():
    from ltn.data import TEST_STREAM

    plain, held = sparse_regression(3, 5, 12, 2, noise=0.1), sparse_regression(3, 5, 12, 2, noise=0.1, n_test=400)
    # the training set does not depend on n_test, and there is no test set without it
    assert np.array_equal(plain.X, held.X) and np.array_equal(plain.y, held.y) and plain.X_test is None
    again = sparse_regression(3, 5, 12, 2, noise=0.1, n_test=400)
    assert np.array_equal(held.X_test, again.X_test) and np.array_equal(held.y_test, again.y_test)
    assert not np.array_equal(held.X_test, sparse_regression(4, 5, 12, 2, n_test=400).X_test)
    # its own stream: not the training stream continued, and no training point reappears
    continued = np.random.default_rng(3)
    continued.standard_normal((5, 12)), continued.standard_normal(5)
    assert not np.allclose(held.X_test[:5], continued.standard_normal((5, 12)))
    assert not (held.X_test[:, None, :] == held.X[None]).all(axis=2).any()
    assert np.array_equal(held.X_test, np.random.default_rng((3, TEST_STREAM)).standard_normal((400, 12)))
    # same distribution: x ~ N(0, I) (4800 draws: mean and variance within 5 standard errors)
    assert abs(held.X_test.mean()) < 5 / np.sqrt(4800) and abs(held.X_test.var() - 1) < 5 * np.sqrt(2 / 4800)
    cls = separable_classification(1, 20, 6, margin=0.3, n_test=50)
    assert np.array_equal(cls.X, separable_classification(1, 20, 6, margin=0.3).X)
    assert np.min(cls.y_test * (cls.X_test @ cls.beta_star)) >= 0.3 - 1e-12  # labelled by the same teacher


def test_held_out_and_teacher_errors_on_known_answers():
    from ltn.data import error_columns, held_out_error, teacher_error

    problem = sparse_regression(0, 5, 12, 2, n_test=20000)
    assert held_out_error(problem, problem.beta_star) == 0.0 and teacher_error(problem, problem.beta_star) == 0.0
    delta = np.zeros(12)
    delta[[0, 7]] = [0.3, -0.4]  # |delta|^2 = 0.25: the population MSE of beta* + delta for x ~ N(0, I)
    assert abs(held_out_error(problem, problem.beta_star + delta) - 0.25) < 0.25 * 0.05  # 20000 points: ~1% noise
    assert teacher_error(problem, np.zeros(12)) == 1.0
    assert np.isnan(held_out_error(sparse_regression(0, 5, 12, 2), problem.beta_star))
    cls = separable_classification(2, 10, 6, margin=0.2, n_test=300)
    assert held_out_error(cls, cls.beta_star) == 0.0 and held_out_error(cls, -cls.beta_star) == 1.0
    assert error_columns(cls, cls.beta_star)["test_error"] == 0.0 and np.isnan(teacher_error(cls, cls.beta_star))


def test_data_n_test_reaches_the_problem_of_a_run():
    from ltn.sweep._build import build_problem
    from ltn.sweep._config import DataSpec

    problem = build_problem(DataSpec("sparse_gaussian", n=3, d=6, sparsity=2, n_test=7), "regression")
    assert problem.X_test.shape == (7, 6)
    assert build_problem(DataSpec("separable", n=3, d=6), "classification").X_test is None
