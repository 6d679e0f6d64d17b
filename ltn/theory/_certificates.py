"""Certificates for classification end points: KKT residual (odeco, docs/theory.md §6) and the singular-vector residual
of Theorem 1 (any linear tensor network, docs/theory.md §5).

Both are relative and scale-free (invariant to rescaling the point and the data), so they can be reported along
a flow whose norm grows without bound. The multipliers nu >= 0 are fitted by non-negative least squares on the
active set (SciPy's NNLS): a small residual says that some admissible nu satisfies the optimality condition.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jaxtyping import Array, Float

from ..networks import Network
from ._common import check_data, check_network, odeco_or_raise, rho_from_point, transformed_inputs

# Default tolerances. A point is active when its margin is within ACTIVE_TOL (relative) of the smallest; a
# coordinate is in the support when |rho_j| >= SUPPORT_TOL * max |rho|. Flow end points approach the limit
# slowly, so these are looser than a solver optimum needs; a larger active set only lowers the residual.
ACTIVE_TOL = 1e-3
SUPPORT_TOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Certificate:
    """How far a point is from satisfying an optimality condition, and the multipliers that come closest.

    `residual` is relative (0 at an exact KKT / singular-vector point; inf when the point does not separate the
    data). `dual_violation` (l1 problem only) is `max(|[sum_i nu_i y_i conj(z_i)]_j| - 1, 0)` off the support.
    """

    residual: float
    multipliers: np.ndarray  # nu >= 0, shape (n,), zero off the active set
    active: np.ndarray  # indices of the active points
    min_margin: float  # smallest margin of the point as given (before any rescaling)
    support: np.ndarray | None = None  # indices of rho's support (KKT only)
    dual_violation: float | None = None
    note: str = ""


def _nnls(matrix: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`argmin_{nu >= 0} ||matrix nu - target||` for complex or real arrays (complex: stacked real/imag)."""
    if np.iscomplexobj(matrix) or np.iscomplexobj(target):
        matrix = np.vstack([matrix.real, matrix.imag])
        target = np.concatenate([np.real(target), np.imag(target)])
    nu, _ = scipy.optimize.nnls(matrix, target, maxiter=50 * max(matrix.shape[1], 1))
    return nu


def _infeasible(min_margin: float, n: int) -> Certificate:
    return Certificate(np.inf, np.zeros(n), np.array([], int), float(min_margin),
                       note="the point does not separate the data (min margin <= 0): no KKT certificate")


def kkt_from_rho(Z: np.ndarray, y: np.ndarray, rho: np.ndarray, p: float, *, active_tol: float = ACTIVE_TOL,
                 support_tol: float = SUPPORT_TOL) -> Certificate:
    """KKT residual of `min ||rho||_p s.t. y_i Re(z_i^T rho) >= 1` at `rho` (any positive scale).

    After scaling to minimum margin 1, stationarity on the support S reads
    `p |rho_j|^(p-1) rho_j / |rho_j| = [sum_{i active} nu_i y_i conj(z_i)]_j` (j in S); the residual is
    `||B nu - t|| / ||t||` with nu >= 0 from NNLS. For p = 1, `dual_violation` checks the off-support condition.
    """
    Z, y, rho = np.asarray(Z), np.asarray(y, float), np.asarray(rho)
    n = Z.shape[0]
    margins = y * np.real(Z @ rho)
    min_margin = margins.min()
    if not min_margin > 0:
        return _infeasible(min_margin, n)
    rho = rho / min_margin
    margins = margins / min_margin
    active = np.flatnonzero(margins <= 1 + active_tol)
    magnitude = np.abs(rho)
    support = np.flatnonzero(magnitude >= support_tol * magnitude.max())
    target = p * magnitude[support] ** (p - 1) * (rho[support] / magnitude[support])
    directions = (y[:, None] * np.conj(Z)).T  # column i: y_i conj(z_i)
    nu_active = _nnls(directions[np.ix_(support, active)], target)
    residual = np.linalg.norm(directions[np.ix_(support, active)] @ nu_active - target) / np.linalg.norm(target)
    nu = np.zeros(n)
    nu[active] = nu_active
    dual_violation = None
    if p == 1:
        off_support = np.setdiff1d(np.arange(Z.shape[1]), support)
        correlation = np.abs(directions[off_support] @ nu)
        dual_violation = float(max(correlation.max() - 1, 0.0)) if off_support.size else 0.0
    return Certificate(float(residual), nu, active, float(min_margin), support, dual_violation)


def kkt_residual(net: Network, X, y, point, *, active_tol: float = ACTIVE_TOL,
                 support_tol: float = SUPPORT_TOL) -> Certificate:
    """KKT residual of the l_{2/L} max-margin problem in transformed space (odeco networks, docs/theory.md §6).

    `point` is parameters (a tuple, e.g. a flow's end point) or an end-to-end beta of shape (d,) (then S must
    be square). Scale-free: the point is rescaled to minimum margin 1. A point that does not separate the data
    gets residual inf (with a note), not an exception, so a sweep can record it.
    """
    check_network(net)
    X, y = check_data(net, X, y, "classification")
    S, _ = odeco_or_raise(net, "kkt_residual")
    rho = rho_from_point(net, point, "kkt_residual")
    Z = np.asarray(transformed_inputs(S, X))
    return kkt_from_rho(Z, y, rho, 2.0 / net.depth, active_tol=active_tol, support_tol=support_tol)


@functools.partial(jax.jit, static_argnums=0)
def _unit_margins_directions(net: Network, params, X: Float[Array, "n d"], y: Float[Array, " n"]):
    """`||params||`, the unit point `u`, the margins `y_i f(x_i; u)` and the rows `y_i grad_theta f(x_i; u)` of
    every point, in one compiled call per network and data shape (eager, these were some thirty small programs
    to compile; gradients of every point, not just the active ones, keep the program independent of the run)."""
    total = jnp.sqrt(sum(jnp.sum(v**2) for v in params))
    unit = tuple(v / total for v in params)
    jacobian = jax.jacrev(lambda p: net.apply(p, X))(unit)
    gradients = jnp.concatenate([j.reshape(X.shape[0], -1) for j in jacobian], axis=1)
    return total, unit, y * net.apply(unit, X), y[:, None] * gradients


def singular_vector_residual(net: Network, params, X, y, *, active_tol: float = ACTIVE_TOL) -> Certificate:
    """Theorem 1 of docs/theory.md §5 at `params`: how far `u = params / ||params||` is from a singular-vector tuple of
    `M(sum_i nu_i y_i x_i)` with nu >= 0 on the points of minimal margin.

    The condition `grad_{v_l} sum_i nu_i y_i f(x_i; u) = sigma u_l` for all l is one linear system in nu (sigma
    is fixed to 1, which only rescales nu); the gradients come from autodiff, so no data tensor is built. The
    residual is `||sum_i nu_i y_i grad f(x_i; u) - u|| / ||u||` with nu >= 0 by NNLS over the active points
    (margin within `active_tol`, relative, of the smallest). Invariant to rescaling params and X.
    """
    check_network(net)
    X, y = check_data(net, X, y, "classification")
    params = tuple(jnp.asarray(v) for v in net.check_params(params))
    total, unit, margins, directions = _unit_margins_directions(net, params, jnp.asarray(X), jnp.asarray(y))
    if not float(total) > 0:
        raise ValueError("params: the singular-vector residual needs non-zero parameters")
    margins = np.asarray(margins)
    min_margin = margins.min()
    if not min_margin > 0:
        return _infeasible(min_margin, len(y))
    active = np.flatnonzero(margins <= min_margin * (1 + active_tol))
    directions = np.asarray(directions)[active].T  # column i: y_i grad_theta f(x_i; u)
    target = np.concatenate([np.asarray(v).ravel() for v in unit])
    nu_active = _nnls(directions, target)
    residual = np.linalg.norm(directions @ nu_active - target) / np.linalg.norm(target)
    nu = np.zeros(len(y))
    nu[active] = nu_active
    return Certificate(float(residual), nu, active, float(min_margin))
