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
