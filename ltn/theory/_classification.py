"""Classification predictions: max-margin problems solved with well-kept convex solvers (docs/theory.md §5-6).

- l2 max margin (hard-margin SVM through the origin): a least-distance program, SciPy's NNLS.
- l1 max margin in transformed space `z = S x`: an LP (SciPy's HiGHS) for real S; an SOCP (cvxpy + Clarabel)
  for complex S, with the constraint on `Re(z^T rho)` (the optimum can be taken conjugate-symmetric, so
  `beta = Re(S^T rho)` loses nothing).
- l_{2/L} max margin, L > 2: KKT points by iteratively reweighted l1 (each step one LP/SOCP) from several starts
  (`stationary_points`), and for small real problems the global optimum by vertex enumeration
  (`global_lp_optimum`: the objective is concave on each orthant, so the optimum is a vertex of the feasible set
  cut by an orthant).
A convex solver that does not report an optimum is retried (`SOLVER_ATTEMPTS`) before `SolverError` is raised
with every attempt's status.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import scipy.optimize

from ._certificates import kkt_from_rho

if TYPE_CHECKING:
    import cvxpy


class SolverError(RuntimeError):
    """A convex solver did not return an optimum; the message carries the solver's status."""


# Clarabel's default tolerances (1e-8) leave ~1e-8 errors in the direction; these reach ~1e-10.
CLARABEL_OPTIONS = dict(tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, max_iter=500)


@dataclasses.dataclass(frozen=True)
class MarginSolution:
    """A max-margin point `rho` (scaled to minimum margin 1) with the solver's report."""

    rho: np.ndarray
    multipliers: np.ndarray  # nu >= 0 of the margin constraints (solver's duals), shape (n,)
    diagnostics: dict


# What a conic solve tries, in order, until one reports 'optimal': Clarabel at the tight tolerances; Clarabel
# with more iterations and the tolerances it can certify on badly scaled problems (where the first attempt ends
# 'optimal_inaccurate', e.g. full-length convolutions at L >= 3); SCS, a first-order method with its own
# polishing-free termination, at a tight tolerance. The attempt that succeeded is named in the diagnostics.
SOLVER_ATTEMPTS = (
    ("Clarabel", "CLARABEL", CLARABEL_OPTIONS),
    ("Clarabel (1e-9, 5000 iterations)", "CLARABEL",
     dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, max_iter=5000)),
    ("SCS (1e-10)", "SCS", dict(eps_abs=1e-10, eps_rel=1e-10, max_iters=200000)),
)


def _solve_cvxpy(problem: cvxpy.Problem, what: str) -> str:
    """Solve `problem` with the first of SOLVER_ATTEMPTS that reports 'optimal'; returns that attempt's name."""
    import cvxpy as cp

    failures = []
    for name, solver, options in SOLVER_ATTEMPTS:
        try:
            with warnings.catch_warnings():  # an inaccurate solution is recorded below, not warned about
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                problem.solve(solver=solver, **options)
        except cp.error.SolverError as error:
            failures.append(f"{name}: {error}")
            continue
        if problem.status == cp.OPTIMAL:
            return name
        failures.append(f"{name}: status {problem.status!r}")
    raise SolverError(f"{what}: no solver reported 'optimal' ({'; '.join(failures)})")


def l2_max_margin(features: np.ndarray, y: np.ndarray) -> MarginSolution:
    """`argmin ||w||_2 s.t. y_i f_i^T w >= 1` (hard-margin SVM without bias), exactly: a least-distance program,
    solved as Lawson and Hanson's nonnegative least squares (`scipy.optimize.nnls`, an active-set method that
    ends on the exact support). With `G` the signed features, `u = argmin_{u >= 0} ||[G^T; 1^T] u - e||` gives
    `r = [G^T u; 1^T u - 1]`, `w = G^T u / (1 - 1^T u)` and the multipliers `u / (1 - 1^T u)`. At the optimum
    `||r||^2 = 1 - 1^T u = 1 / (1 + ||w||^2)`: a residual at round-off (a margin under 1e-12 of the data's scale)
    means that no such `w` exists."""
    signed = y[:, None] * features
    n, k = signed.shape
    E = np.vstack([signed.T, np.ones((1, n))])
    target = np.zeros(k + 1)
    target[-1] = 1.0
    u, distance = scipy.optimize.nnls(E, target, maxiter=50 * (n + k))
    scale = 1.0 - u.sum()
    if distance <= 1e-12 or scale <= 0:
        raise SolverError("l2 max-margin: no w separates the data (the least-distance program is infeasible)")
    w = signed.T @ u / scale
    return MarginSolution(w, u / scale, {"solver": "scipy NNLS (least-distance program)", "status": "optimal",
                                         "objective": float(w @ w / 2)})


def conjugate_pairing(S: np.ndarray) -> np.ndarray:
    """The permutation P with conj(S) = S[P] (rows of S closed under conjugation, as for the DFT: j <-> -j).

    Real parameters reach exactly the rho with rho[P] = conj(rho), so complex max-margin problems are posed on
    that subspace: for L > 2 the unconstrained complex problem would concentrate a conjugate pair on one member.
    """
    conj = np.conj(S)
    distances = np.abs(conj[:, None, :] - S[None, :, :]).max(axis=2)
    pairing = distances.argmin(axis=1)
    scale = np.abs(S).max()
    if np.any(distances[np.arange(len(S)), pairing] > 1e-10 * scale) or len(set(pairing)) != len(S):
        raise ValueError("net: classification predictions for a complex odeco network need the rows of S to be "
                         "closed under conjugation (as for the DFT); this S is not")
    return pairing


def weighted_l1_max_margin(Z: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None,
                           pairing: np.ndarray | None = None) -> MarginSolution:
    """`argmin sum_j w_j |rho_j| s.t. y_i Re(z_i^T rho) >= 1`: HiGHS LP for real Z; for complex Z a Clarabel SOCP
    over conjugate-symmetric rho (`rho[pairing] = conj(rho)`, see `conjugate_pairing`)."""
    n, m = Z.shape
    weights = np.ones(m) if weights is None else np.asarray(weights, dtype=float)
    if np.iscomplexobj(Z):
        if pairing is None:
            raise ValueError("pairing: complex Z needs the conjugate pairing of its coordinates")
        import cvxpy as cp

        rho = cp.Variable(m, complex=True)
        margins = cp.multiply(y, cp.real(Z @ rho)) >= 1
        problem = cp.Problem(cp.Minimize(weights @ cp.abs(rho)), [margins, rho[pairing] == cp.conj(rho)])
        solver = _solve_cvxpy(problem, "weighted l1 max-margin SOCP")
        return MarginSolution(np.asarray(rho.value), np.maximum(np.asarray(margins.dual_value), 0.0),
                              {"solver": f"cvxpy/{solver} SOCP", "status": problem.status,
                               "iterations": problem.solver_stats.num_iters, "objective": float(problem.value)})
    # rho = positive - negative, both >= 0; at the optimum they have disjoint supports.
    signed = y[:, None] * Z
    result = scipy.optimize.linprog(np.concatenate([weights, weights]), A_ub=-np.hstack([signed, -signed]),
                                    b_ub=-np.ones(n), bounds=(0, None), method="highs")
    if result.status != 0:
        raise SolverError(f"weighted l1 max-margin LP: HiGHS status {result.status}: {result.message}")
    rho = result.x[:m] - result.x[m:]
    return MarginSolution(rho, np.maximum(-result.ineqlin.marginals, 0.0),
                          {"solver": "scipy/HiGHS LP", "status": result.message, "iterations": int(result.nit),
                           "objective": float(result.fun)})


def _margins(Z, y, rho):
    return y * np.real(Z @ rho)


def lp_stationary_point(Z: np.ndarray, y: np.ndarray, depth: int, start: np.ndarray | None = None,
                        pairing: np.ndarray | None = None, *, max_iterations: int = 100, active_tol: float = 1e-6
                        ) -> MarginSolution:
    """A KKT point of `min ||rho||_{2/L} s.t. y_i Re(z_i^T rho) >= 1` (L > 2; non-convex, so a local method).

    Iteratively reweighted l1: `rho <- argmin sum_j (|rho_j| + eps)^(p-1) |rho_j|` over the margin constraints,
    a majorise-minimise step for `sum_j (|rho_j| + eps)^p` (p = 2/L). It keeps the large coordinates of the start
    and drives the small ones to zero; eps falls geometrically so the last steps solve the unsmoothed problem.
    Started from `start` (scaled to margin 1) or, without one, from the l1 max-margin solution.
    """
    p = 2.0 / depth
    history = []
    if start is None:
        rho = weighted_l1_max_margin(Z, y, pairing=pairing).rho
        origin = "l1 max margin"
    else:
        rho = np.asarray(start)
        origin = "start"
    margin = _margins(Z, y, rho).min()
    if not margin > 0:
        raise ValueError(f"start: the starting direction does not separate the data (min margin {margin:.3e})")
    rho = rho / margin
    solution = None
    # HiGHS returns vertices, so the iteration settles exactly; Clarabel's interior points only to ~1e-9.
    stop_change = 1e-8 if np.iscomplexobj(Z) else 1e-13
    for iteration in range(max_iterations):
        scale = np.abs(rho).max()
        eps = scale * max(10.0 ** -(iteration + 3), 1e-14)
        weights = (np.abs(rho) + eps) ** (p - 1)
        solution = weighted_l1_max_margin(Z, y, weights, pairing)
        new = solution.rho
        change = np.linalg.norm(new - rho) / np.linalg.norm(new)
        rho = new
        history.append(change)
        if iteration >= 3 and change <= stop_change:
            break
    certificate = kkt_from_rho(Z, y, rho, p, active_tol=active_tol)
    diagnostics = dict(solution.diagnostics)
    diagnostics.update({"method": "iteratively reweighted l1", "started_from": origin,
                        "reweighting_steps": len(history), "last_relative_change": history[-1],
                        "kkt_residual": certificate.residual, "objective": float(np.sum(np.abs(rho) ** p))})
    return MarginSolution(rho, certificate.multipliers, diagnostics)


def stationary_points(Z: np.ndarray, y: np.ndarray, depth: int, pairing: np.ndarray | None = None, *,
                      random_starts: int = 8, seed: int = 0) -> tuple[MarginSolution, list[float]]:
    """The best KKT point of the l_{2/L} max-margin problem (L > 2) found by `lp_stationary_point` from the l1
    solution (the L = 2 limit) and from `random_starts` random vertices (the weighted-l1 solutions for weights
    drawn log-uniformly over two decades: each is a separating start in a different region). Independent of any
    flow. Returns the point with the smallest objective `sum_j |rho_j|^(2/L)` at margin 1, and the objectives of
    all starts (ascending)."""
    rng = np.random.default_rng(seed)
    starts = [None] + [weighted_l1_max_margin(Z, y, 10.0 ** rng.uniform(-1, 1, Z.shape[1]), pairing).rho
                       for _ in range(random_starts)]
    solutions = [lp_stationary_point(Z, y, depth, start, pairing) for start in starts]
    objectives = [s.diagnostics["objective"] for s in solutions]
    best = solutions[int(np.argmin(objectives))]
    return best, sorted(objectives)


# Vertex enumeration solves a k x k system for every support of size k and every k of the n margin constraints
# (sum_k C(m, k) C(n, k) systems); above this count it is not attempted.
MAX_VERTEX_SYSTEMS = 300_000


def vertex_count(m: int, n: int) -> int:
    """The number of linear systems `global_lp_optimum` solves for m coordinates and n points."""
    return sum(math.comb(m, k) * math.comb(n, k) for k in range(1, min(m, n) + 1))


def global_lp_optimum(Z: np.ndarray, y: np.ndarray, depth: int) -> np.ndarray | None:
    """The global optimum of `min sum_j |rho_j|^(2/L) s.t. y_i z_i^T rho >= 1` (real Z) by vertex enumeration,
    or None when there are more than MAX_VERTEX_SYSTEMS systems to solve.

    On each orthant the objective is concave and the feasible set a polyhedron whose recession directions do
    not decrease it, so its minimum there is at a vertex: `rho_T = A_{I,T}^{-1} 1` for a support T and a set I
    of |T| tight margin constraints (A = y_i z_i^T), zero off T. Every such basic solution that is feasible is
    a candidate; the best is the global optimum.
    """
    if np.iscomplexobj(Z):
        raise ValueError("Z: vertex enumeration is for real transformed inputs (the complex problem's feasible "
                         "set in conjugate-symmetric rho is not polyhedral in the moduli)")
    n, m = Z.shape
    if vertex_count(m, n) > MAX_VERTEX_SYSTEMS:
        return None
    A = y[:, None] * Z
    p = 2.0 / depth
    best, best_value = None, np.inf
    for k in range(1, min(m, n) + 1):
        supports = np.array(list(itertools.combinations(range(m), k)))
        tight = np.array(list(itertools.combinations(range(n), k)))
        systems = A[tight[:, None, :, None], supports[None, :, None, :]].reshape(-1, k, k)
        keep = np.abs(np.linalg.det(systems)) > 1e-12 * np.abs(systems).max(axis=(1, 2)) ** k
        solutions = np.linalg.solve(systems[keep], np.ones((int(keep.sum()), k, 1)))[..., 0]
        pairs = np.argwhere(keep.reshape(len(tight), len(supports)))
        rho = np.zeros((len(solutions), m))
        rho[np.arange(len(solutions))[:, None], supports[pairs[:, 1]]] = solutions
        feasible = np.all(rho @ A.T >= 1 - 1e-9, axis=1)
        if not feasible.any():
            continue
        values = np.sum(np.abs(rho[feasible]) ** p, axis=1)
        if values.min() < best_value:
            best_value, best = values.min(), rho[feasible][np.argmin(values)]
    return best
