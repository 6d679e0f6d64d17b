"""Problem generators: sparse regression, separable classification, and data loaded from a file.

Every generator returns a `Problem` of NumPy float64 arrays; generation is deterministic in the seed. The
generators with a teacher also draw a held-out test set of `n_test` points (default none) from the same
distribution, with a random stream of its own: the training set is the same whatever `n_test` is, and the test
set is independent of it. `held_out_error` and `teacher_error` measure a predictor against them.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np
import scipy.optimize


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """Data `X` (n, d) and targets `y` (n,); `beta_star` is the generating predictor when there is one;
    `X_test` (n_test, d) and `y_test` a held-out test set from the same distribution, when one was drawn."""

    X: np.ndarray
    y: np.ndarray
    task: str  # "regression" or "classification"
    beta_star: np.ndarray | None = None
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]


# The test set's stream: SeedSequence((seed, TEST_STREAM)), independent of the training stream default_rng(seed).
TEST_STREAM = 1


def _test_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng((seed, TEST_STREAM))


def sparse_regression(seed: int, n: int, d: int, sparsity: int, noise: float = 0.0, n_test: int = 0) -> Problem:
    """Woodworth et al. (2020): `x ~ N(0, I_d)`, `beta*` with `sparsity` entries `1/sqrt(sparsity)`,
    `y = X beta* + noise * N(0, 1)`; `n_test` held-out points drawn the same way (see the module docstring)."""
    if not 1 <= sparsity <= d:
        raise ValueError(f"sparsity must be between 1 and d = {d}, got {sparsity}")
    if n >= d:
        raise ValueError(f"regression needs an underdetermined problem (n < d), got n = {n}, d = {d}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    beta_star = np.zeros(d)
    beta_star[:sparsity] = 1 / np.sqrt(sparsity)
    y = X @ beta_star + noise * rng.standard_normal(n)
    test = _test_rng(seed)
    X_test = test.standard_normal((n_test, d))
    y_test = X_test @ beta_star + noise * test.standard_normal(n_test)
    return Problem(X, y, "regression", beta_star, *((X_test, y_test) if n_test else (None, None)))


def separable_classification(seed: int, n: int, d: int, margin: float = 0.1, sparsity: int | None = None,
                             n_test: int = 0) -> Problem:
    """Labels of a teacher `w*` (unit norm, `sparsity` non-zeros; dense by default) on Gaussian inputs, with
    every point moved along `w*` so that `y_i <x_i, w*> >= margin`: separable with margin at least `margin`;
    `n_test` held-out points drawn the same way (see the module docstring)."""
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    rng = np.random.default_rng(seed)
    k = d if sparsity is None else sparsity
    if not 1 <= k <= d:
        raise ValueError(f"sparsity must be between 1 and d = {d}, got {sparsity}")
    teacher = np.zeros(d)
    teacher[:k] = rng.standard_normal(k)
    teacher /= np.linalg.norm(teacher)
    X, y = _teacher_labelled(rng.standard_normal((n, d)), teacher, margin)
    test = (*_teacher_labelled(_test_rng(seed).standard_normal((n_test, d)), teacher, margin),) if n_test else ()
    return Problem(X, y, "classification", teacher, *test)


def _teacher_labelled(X: np.ndarray, teacher: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian points labelled by the teacher's sign and moved along it to the margin."""
    scores = X @ teacher
    y = np.where(scores >= 0, 1.0, -1.0)
    shortfall = np.maximum(margin - y * scores, 0.0)
    return X + (y * shortfall)[:, None] * teacher[None, :], y


def held_out_error(problem: Problem, beta) -> float:
    """The test error of the linear predictor `beta` on the problem's held-out set: mean squared error
    `mean((X_test beta - y_test)^2)` for regression, the 0-1 error `mean(sign(X_test beta) != y_test)` for
    classification (a score of exactly 0 counts as an error). NaN when the problem has no test set.

    Arguments:
        problem: a `Problem` drawn with `n_test > 0`.
        beta: the end-to-end predictor, shape (d,).

    Returns:
        The error as a float.
    """
    if problem.X_test is None:
        return float("nan")
    scores = problem.X_test @ np.asarray(beta, dtype=float)
    if problem.task == "regression":
        return float(np.mean((scores - problem.y_test) ** 2))
    return float(np.mean(~(scores * problem.y_test > 0)))


def teacher_error(problem: Problem, beta) -> float:
    """`||beta - beta*||^2 / ||beta*||^2` for regression data with a teacher `beta*` (for isotropic inputs and no
    noise, the population mean squared error relative to `||beta*||^2`); NaN otherwise.

    Arguments:
        problem: a `Problem`.
        beta: the end-to-end predictor, shape (d,).

    Returns:
        The relative squared distance as a float.
    """
    if problem.task != "regression" or problem.beta_star is None or not np.any(problem.beta_star):
        return float("nan")
    beta_star = problem.beta_star
    return float(np.sum((np.asarray(beta, dtype=float) - beta_star) ** 2) / np.sum(beta_star**2))


def error_columns(problem: Problem, beta) -> dict[str, float]:
    """The results columns `test_error` (`held_out_error`) and `teacher_error` of one run's end predictor."""
    return {"test_error": held_out_error(problem, beta), "teacher_error": teacher_error(problem, beta)}


def read_npz(path: str | os.PathLike, required: tuple[str, ...], optional: tuple[str, ...] = (),
             what: str = "data file") -> dict[str, np.ndarray]:
    """The named arrays of a `.npz` archive as float64, each checked real and finite. Every error is a
    `ValueError` (`FileNotFoundError` for a missing file) naming `what`, the file and the array: a complex array
    is refused, not cast to its real part."""
    label = f"{what} {os.fspath(path)!r}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{label} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"{label} is a directory, not an .npz file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{label} is empty")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{label} is not an .npz archive (a zip of .npy arrays, as numpy.savez writes)")
    arrays, name = {}, None
    try:
        with np.load(path, allow_pickle=False) as archive:
            files = sorted(archive.files)
            for name in (*required, *optional):
                if name in files:
                    arrays[name] = archive[name]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        array = f" (array {name!r})" if name is not None else ""
        raise ValueError(f"{label} is not a readable .npz archive{array}: {error}") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise ValueError(f"{label} lacks array(s) {missing} (it has {files})")
    for name, array in arrays.items():
        if np.iscomplexobj(array):
            raise ValueError(f"{label}: array {name!r} is complex (dtype {array.dtype}); ltn needs real data")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise ValueError(f"{label}: array {name!r} must be numeric, got dtype {array.dtype}")
        arrays[name] = array.astype(np.float64)
        nonfinite = nonfinite_problem(name, arrays[name])
        if nonfinite is not None:
            raise ValueError(f"{label}: {nonfinite}")
    return arrays


def load_npz(path: str | os.PathLike, task: str) -> Problem:
    """`X` and `y` (and optionally `beta_star`) from a `.npz` file; errors name the file and the array."""
    arrays = read_npz(path, ("X", "y"), ("beta_star",))
    try:
        return check_problem(Problem(arrays["X"], arrays["y"], task, arrays.get("beta_star")))
    except ValueError as error:
        raise ValueError(f"data file {os.fspath(path)!r}: {error}") from None


def nonfinite_problem(name: str, array: np.ndarray) -> str | None:
    """"X has 2 NaN or infinite entries, the first X[0, 3] = nan", or None when every entry is finite."""
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return (f"{name} has {int(bad.sum())} NaN or infinite entries, the first {name}[{', '.join(map(str, first))}] "
            f"= {array[first]}")


def separation_margin(X: np.ndarray, y: np.ndarray) -> float:
    """Largest `min_i y_i <x_i, w>` over `||w||_inf <= 1` (an LP): positive iff the data are linearly separable
    through the origin."""
    n, d = X.shape
    # variables (w, t): maximise t subject to t - y_i x_i^T w <= 0, -1 <= w <= 1
    cost = np.zeros(d + 1)
    cost[-1] = -1.0
    constraints = np.hstack([-(y[:, None] * X), np.ones((n, 1))])
    result = scipy.optimize.linprog(cost, A_ub=constraints, b_ub=np.zeros(n),
                                    bounds=[(-1, 1)] * d + [(None, None)], method="highs")
    if result.status != 0:
        raise RuntimeError(f"separability LP failed: {result.message}")
    return float(-result.fun)


def check_problem(problem: Problem) -> Problem:
    """Shapes, finiteness, labels, rank and separability, with errors that name what is wrong."""
    X, y = problem.X, problem.y
    if X.ndim != 2:
        raise ValueError(f"X must be a matrix (n, d), got shape {X.shape}")
    if 0 in X.shape:
        raise ValueError(f"X must have at least one row and one column, got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X {X.shape}, got {y.shape}")
    for name, array in (("X", X), ("y", y)):
        if np.iscomplexobj(array):
            raise ValueError(f"{name} must be real, got dtype {array.dtype}")
        nonfinite = nonfinite_problem(name, array)
        if nonfinite is not None:
            raise ValueError(nonfinite)
    if problem.task == "regression":
        n, d = X.shape
        if n >= d:
            raise ValueError(f"regression needs an underdetermined problem (n < d), got n = {n}, d = {d}")
        if np.linalg.matrix_rank(X) < n:
            raise ValueError(f"regression needs X of full row rank n = {n}, got rank {np.linalg.matrix_rank(X)}")
    elif problem.task == "classification":
        if not np.all(np.isin(y, (-1.0, 1.0))):
            raise ValueError("classification labels y must be -1 or +1")
        margin = separation_margin(X, y)
        if margin <= 1e-9 * np.abs(X).max():
            raise ValueError("classification data are not linearly separable through the origin "
                             f"(best l_inf-normalised margin {margin:.3e})")
    else:
        raise ValueError(f"task must be 'regression' or 'classification', got {problem.task!r}")
    return problem
