"""Classification predictions: max-margin problems solved with well-kept convex solvers (docs/theory.md §5-6).

- l2 max margin (hard-margin SVM through the origin): a QP, cvxpy + Clarabel.
- l1 max margin in transformed space `z = S x`: an LP (SciPy's HiGHS) for real S; an SOCP (cvxpy + Clarabel)
  for complex S, with the constraint on `Re(z^T rho)` (the optimum can be taken conjugate-symmetric, so
  `beta = Re(S^T rho)` loses nothing).
- l_{2/L} max margin, L > 2: a KKT point by iteratively reweighted l1 (each step one LP/SOCP), from a start.
A solver that does not report an optimum raises `SolverError` with the solver's own message.
"""

from __future__ import annotations

import dataclasses

import cvxpy as cp
import numpy as np
import scipy.optimize

from ._certificates import kkt_from_rho


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


def _solve_cvxpy(problem: cp.Problem, what: str) -> None:
    try:
        problem.solve(solver=cp.CLARABEL, **CLARABEL_OPTIONS)
    except cp.error.SolverError as error:
        raise SolverError(f"{what}: Clarabel failed: {error}") from error
    if problem.status != cp.OPTIMAL:
        raise SolverError(f"{what}: Clarabel returned status {problem.status!r}, not 'optimal'")


def l2_max_margin(features: np.ndarray, y: np.ndarray) -> MarginSolution:
    """`argmin ||w||_2 s.t. y_i f_i^T w >= 1` (hard-margin SVM without bias) as a QP."""
    n, k = features.shape
    w = cp.Variable(k)
    margins = cp.multiply(y, features @ w) >= 1
    problem = cp.Problem(cp.Minimize(cp.sum_squares(w) / 2), [margins])
    _solve_cvxpy(problem, "l2 max-margin QP")
    stats = problem.solver_stats
    return MarginSolution(np.asarray(w.value), np.maximum(np.asarray(margins.dual_value), 0.0),
                          {"solver": "cvxpy/Clarabel QP", "status": problem.status,
                           "iterations": stats.num_iters, "objective": float(problem.value)})


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
        rho = cp.Variable(m, complex=True)
        margins = cp.multiply(y, cp.real(Z @ rho)) >= 1
        problem = cp.Problem(cp.Minimize(weights @ cp.abs(rho)), [margins, rho[pairing] == cp.conj(rho)])
        _solve_cvxpy(problem, "weighted l1 max-margin SOCP")
        return MarginSolution(np.asarray(rho.value), np.maximum(np.asarray(margins.dual_value), 0.0),
                              {"solver": "cvxpy/Clarabel SOCP", "status": problem.status,
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
                        pairing: np.ndarray | None = None, *, max_iterations: int = 100, active_tol: float = 1e-6, support_tol: float = 1e-9
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
    certificate = kkt_from_rho(Z, y, rho, p, active_tol=active_tol, support_tol=support_tol)
    diagnostics = dict(solution.diagnostics)
    diagnostics.update({"method": "iteratively reweighted l1", "started_from": origin,
                        "reweighting_steps": len(history), "last_relative_change": history[-1],
                        "kkt_residual": certificate.residual, "objective": float(np.sum(np.abs(rho) ** p))})
    return MarginSolution(rho, certificate.multipliers, diagnostics)
