"""Certificates for classification end points (docs/theory.md §5-6, §12).

- `kkt_residual` (odeco networks): the KKT residual of the l_{2/L} max-margin problem in transformed space, on a
  *detected* support (`detect_support`: a gap in the sorted magnitudes, or coordinates whose relative size falls
  along the path), with dual feasibility off the support for L = 2.
- `kkt_distance` (Theorem 1, any network): the distance from the flow's unit point to the KKT point of the
  parameter-space max-margin problem that Newton's method finds on the detected active set, next to the
  alignment `1 - cos(Theta, -grad log L)`.
- `margin_ratio`: the normalised margin of a point divided by that of a predicted optimum (-> 1).
- `singular_vector_residual`: the least-squares fit residual of Theorem 1's condition; a diagnostic only (a
  small fit residual is not a small distance to a KKT point).

All are scale-free (invariant to rescaling the point and the data), so they can be reported along a flow whose
norm grows without bound. Multipliers nu >= 0 are fitted by non-negative least squares (SciPy's NNLS).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from .._compile import jit
from ..losses import log_risk
from ..networks import Network
from ._common import check_data, check_network, odeco_or_raise, rho_from_point, transformed_inputs

# A point is active when its margin is within ACTIVE_TOL (relative) of the smallest. Flow end points approach
# their limit slowly, so this is looser than a solver optimum needs.
ACTIVE_TOL = 1e-3
# Support detection: the support ends at the largest ratio between consecutive sorted magnitudes when that ratio
# is at least SUPPORT_GAP; along a path, a coordinate whose size relative to the largest fell by SUPPORT_FALL or
# more is off the support (off-support coordinates decay like a power of -log L, support coordinates settle).
SUPPORT_GAP = 10.0
SUPPORT_FALL = 2.0


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


def detect_support(rho: np.ndarray, path: np.ndarray | None = None, *, gap: float = SUPPORT_GAP,
                   fall: float = SUPPORT_FALL) -> np.ndarray:
    """The indices of the coordinates of `rho` that a limit keeps (its support), detected from the point itself.

    A thresholded support (|rho_j| >= c max|rho|) keeps the off-support coordinates that decay slowly along a
    flow, and for L > 2 their stationarity targets `p |rho_j|^(p-1)` blow up. Instead: sort the magnitudes; the
    support ends at the largest ratio between consecutive non-zero ones when that ratio is at least `gap` (exact
    zeros are always off); without such a gap every non-zero coordinate is kept. With `path` (earlier points of
    the same flow, shape (K, m), oldest first), a coordinate whose size relative to the largest fell by `fall`
    or more from `path[0]` to `rho` is also off the support.

    Arguments:
        rho: the point's coordinates (real or complex), shape (m,).
        path: earlier coordinates along the same flow, shape (K, m), or None.
    Returns:
        The support's indices, sorted.
    """
    magnitude = np.abs(np.asarray(rho))
    if not magnitude.max() > 0:
        raise ValueError("rho: the support of a zero point is undefined")
    nonzero = np.flatnonzero(magnitude > 0)  # exact zeros are never in the support
    ordered = np.sort(magnitude[nonzero])[::-1]
    ratios = ordered[:-1] / ordered[1:]
    keep = magnitude > 0
    if ratios.size and ratios.max() >= gap:
        keep &= magnitude >= ordered[int(np.argmax(ratios))]
    if path is not None:
        earlier = np.abs(np.asarray(path))[0]
        if earlier.shape != magnitude.shape:
            raise ValueError(f"path: points of shape {magnitude.shape} expected, got {earlier.shape}")
        with np.errstate(divide="ignore", invalid="ignore"):
            change = (magnitude / magnitude.max()) / (earlier / earlier.max())
        keep &= ~(change <= 1.0 / fall)
    return np.flatnonzero(keep)


def kkt_from_rho(Z: np.ndarray, y: np.ndarray, rho: np.ndarray, p: float, *, active_tol: float = ACTIVE_TOL,
                 support: np.ndarray | None = None, path: np.ndarray | None = None) -> Certificate:
    """KKT residual of `min ||rho||_p s.t. y_i Re(z_i^T rho) >= 1` at `rho` (any positive scale).

    After scaling to minimum margin 1, stationarity on the support S reads
    `p |rho_j|^(p-1) rho_j / |rho_j| = [sum_{i active} nu_i y_i conj(z_i)]_j` (j in S); the residual is
    `||B nu - t|| / ||t||` with nu >= 0 from NNLS. The support is `support` when given, else `detect_support`
    (with `path`); p = 2 uses every coordinate (its condition holds at rho_j = 0 too). For p = 1,
    `dual_violation` is the off-support condition `max_j |[sum_i nu_i y_i conj(z_i)]_j| - 1` (clipped at 0);
    for p < 1 there is none (the subdifferential of |t|^p at 0 is the whole line).
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
    if support is None:
        support = np.arange(len(rho)) if p == 2 else detect_support(rho, path)
    support = np.asarray(support, int)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = p * magnitude[support] ** (p - 1) * np.where(magnitude[support] > 0,
                                                              rho[support] / magnitude[support], 0.0)
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


def kkt_residual(net: Network, X, y, point, *, active_tol: float = ACTIVE_TOL, support=None, path=None
                 ) -> Certificate:
    """KKT residual of the l_{2/L} max-margin problem in transformed space (odeco networks, docs/theory.md §6).

    Arguments:
        point: parameters (a tuple, e.g. a flow's end point) or an end-to-end beta of shape (d,) (then S must
            be square). Scale-free: the point is rescaled to minimum margin 1.
        support: the indices of rho's support; default: detected (`detect_support`).
        path: earlier points of the same flow for the detection: betas, shape (K, d) (S square), oldest first.
    Returns:
        A `Certificate`. A point that does not separate the data gets residual inf (with a note), not an
        exception, so a sweep can record it.
    """
    check_network(net)
    X, y = check_data(net, X, y, "classification")
    S, _ = odeco_or_raise(net, "kkt_residual")
    rho = rho_from_point(net, point, "kkt_residual")
    Z = np.asarray(transformed_inputs(S, X))
    rho_path = None if path is None else np.stack([rho_from_point(net, b, "kkt_residual") for b in np.asarray(path)])
    return kkt_from_rho(Z, y, rho, 2.0 / net.depth, active_tol=active_tol, support=support, path=rho_path)


def quasi_norm(vector: np.ndarray, q: float) -> float:
    """`(sum_j |v_j|^q)^(1/q)`: the l_q norm (a quasi-norm for q < 1)."""
    return float(np.sum(np.abs(vector) ** q) ** (1.0 / q))


def normalized_margin(features: np.ndarray, y: np.ndarray, point: np.ndarray, q: float) -> float:
    """`min_i y_i Re(f_i^T point) / ||point||_q`: the margin that l_q max margin maximises (scale-free)."""
    return float(np.min(y * np.real(np.asarray(features) @ point)) / quasi_norm(point, q))


def margin_ratio(features: np.ndarray, y: np.ndarray, point: np.ndarray, optimum: np.ndarray, q: float) -> float:
    """The l_q-normalised margin of `point` divided by that of `optimum` (a predicted max-margin point): 1 at
    the optimum, below 1 at any other point when the optimum is global, above 1 at a point with a larger margin
    than a predicted stationary point. Scale-free and meaningful where the optimum is flat and a cosine is not."""
    return normalized_margin(features, y, point, q) / normalized_margin(features, y, optimum, q)


@jit(static_argnums=0, brief=True)
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


@dataclasses.dataclass(frozen=True)
class KKTDistance:
    """Theorem 1 at a point: the KKT point of `min ||theta||^2 s.t. y_i f(x_i; theta) >= 1` that Newton's method
    reaches from it on the detected active set, and how far the point is from it.

    `distance`: `||beta(theta) / ||beta(theta)|| - beta(theta*) / ||beta(theta*)|| ||` (0 at a KKT point; inf when
    Newton found none or the point does not separate). `alignment`: `1 - cos(theta, -grad log L(theta))` at the point
    as given (its scale matters: it tends to 0 along a flow that converges in direction). `kkt_point`: theta*
    (margin 1). `multipliers`: nu >= 0 of theta*, zero off `active`. `newton_residual`: relative residual of the KKT
    system at theta*. `note`: why the distance is inf, or why it is only an upper bound, if either.
    """

    distance: float
    alignment: float
    kkt_point: tuple | None
    multipliers: np.ndarray
    active: np.ndarray
    newton_residual: float
    newton_steps: int
    note: str = ""


# Newton on the KKT system stops when its relative residual is below NEWTON_TOL; a point whose residual stays above
# NEWTON_ACCEPT is no KKT point (the active set was wrong, or Newton diverged).
NEWTON_TOL = 1e-13
NEWTON_ACCEPT = 1e-9
NEWTON_MAX_STEPS = 50
ACTIVE_SPREAD = 25.0
# Where the add/drop rule cycles, every subset of at most this many candidate active points is solved (2^8 - 1
# Newton solves of a few steps each).
MAX_ENUMERATED_CANDIDATES = 8


def _unit(vector) -> np.ndarray:
    vector = np.asarray(vector)
    return vector / np.linalg.norm(vector)


@jit(static_argnums=0, brief=True)
def _kkt_system(net: Network, z, template, mask, X, y):
    """The KKT system of the parameter-space max-margin problem as `F(z)` and its Jacobian, `z = (theta, nu)`:
    `theta - sum_i mask_i nu_i y_i grad f(x_i; theta) = 0`, `y_i f(x_i; theta) = 1` on the active set
    (`mask_i = 1`) and `nu_i = 0` off it. One compiled program per network and data shape, whatever the set."""
    flat, unravel = ravel_pytree(template)
    size = flat.shape[0]

    def system(z):
        params, nu = unravel(z[:size]), z[size:]
        gradients = jax.jacrev(lambda p: net.apply(p, X))(params)
        weights = mask * nu * y
        stationarity = tuple(v - jnp.tensordot(weights, g, axes=1) for v, g in zip(params, gradients))
        feasibility = mask * (y * net.apply(params, X) - 1.0) + (1.0 - mask) * nu
        return jnp.concatenate([ravel_pytree(stationarity)[0], feasibility])

    return system(z), jax.jacfwd(system)(z)


@jit(static_argnums=(0, 4), brief=True)
def _log_loss_gradient(net: Network, params, X, y, loss: str):
    return jax.grad(lambda p: log_risk(net.apply(p, X), y, loss))(params)


def _newton(net: Network, params, nu, mask, X, y) -> tuple[np.ndarray, float, int]:
    """Gauss-Newton with least-squares steps (the KKT points of a network with continuous symmetries form a
    manifold, so the Jacobian is singular; the minimum-norm step moves across it, not along)."""
    z = np.concatenate([np.asarray(ravel_pytree(params)[0]), nu])
    scale = np.linalg.norm(z)
    residual, steps = np.inf, 0
    for steps in range(NEWTON_MAX_STEPS + 1):
        value, jacobian = (np.asarray(a) for a in _kkt_system(net, jnp.asarray(z), params, mask, X, y))
        residual = np.linalg.norm(value) / scale
        if residual <= NEWTON_TOL or not np.isfinite(residual) or steps == NEWTON_MAX_STEPS:
            break
        z = z - np.linalg.lstsq(jacobian, value, rcond=None)[0]
    return z, float(residual), steps


def kkt_distance(net: Network, params, X, y, loss: str = "exponential", *, active_tol: float = ACTIVE_TOL,
                 refinements: int = 5) -> KKTDistance:
    """Theorem 1 of docs/theory.md §5 as a distance: from the unit point of `params`, Newton's method on the KKT
    system of `min ||theta||^2 s.t. y_i f(x_i; theta) >= 1` restricted to the active points (margin within
    `active_tol`, relative, of the smallest) finds a KKT point theta*; the result is the distance between the unit
    end-to-end predictors, next to the alignment `1 - cos(theta, -grad log L)`.

    The start is the point scaled to minimum margin 1 with multipliers by NNLS. Where the KKT point Newton finds
    has a negative multiplier the point with the most negative one leaves the active set; where it violates a
    margin the most violated point joins; then Newton runs again (at most `refinements` times). Where that finds
    no KKT point (the rule can cycle), Newton runs on every subset of the candidate active points and the KKT
    point nearest in beta is kept (`_nearest_on_subsets`); where none is one, the refinement starts from the local
    minimum SLSQP reaches from the point (`_refine_from_local_minimum`), and the note says that the distance is
    then an upper bound and how far the nearest solution of the equations is (a point with a negative multiplier,
    which a flow can approach while its alignment falls). A point that does not separate, or for which no KKT
    point is found, gets distance inf (with a note).

    Arguments:
        net, params: the network and a point (a flow's end point).
        X, y: the data (labels +-1).
        loss: the classification loss of the flow, for the alignment.
    Returns:
        A `KKTDistance`.
    """
    check_network(net)
    X, y = check_data(net, X, y, "classification")
    params = tuple(jnp.asarray(v) for v in net.check_params(params))
    X_, y_ = jnp.asarray(X), jnp.asarray(y)
    total, unit, margins, directions = _unit_margins_directions(net, params, X_, y_)
    if not float(total) > 0:
        raise ValueError("params: the KKT distance needs non-zero parameters")
    gradient = np.asarray(ravel_pytree(_log_loss_gradient(net, params, X_, y_, loss))[0])
    flat = np.asarray(ravel_pytree(params)[0])
    alignment = float(1.0 + flat @ gradient / (np.linalg.norm(flat) * np.linalg.norm(gradient)))
    margins = np.asarray(margins)
    n = len(y)
    if not margins.min() > 0:
        return KKTDistance(np.inf, alignment, None, np.zeros(n), np.array([], int), np.inf, 0,
                           "the point does not separate the data (min margin <= 0)")
    start = tuple(v / margins.min() ** (1.0 / net.depth) for v in unit)
    # The active set: first the points whose margin is within ACTIVE_SPREAD (absolute, at the point's own scale:
    # the loss weights e^-(q_i - q_min) of the active points differ by O(1) there; capped at a relative 0.1)
    # of the smallest, keeping those NNLS gives a positive multiplier; then, if Newton finds no KKT point from
    # that set, the points within `active_tol` (relative).
    raw = margins * float(total) ** net.depth
    target = np.asarray(ravel_pytree(start)[0])
    # grad f is (L-1)-homogeneous: the rows at `start` are those at the unit point times the same factor.
    rows = np.asarray(directions) * margins.min() ** (-(net.depth - 1.0) / net.depth)
    spread = max(active_tol, min(ACTIVE_SPREAD / raw.min(), 0.1))
    found, note = None, ""
    for tolerance in (spread, active_tol):
        candidates = margins <= margins.min() * (1 + tolerance)
        nu = np.zeros(n)
        nu[candidates] = _nnls(rows[candidates].T, target)
        found = _refine(net, start, nu, nu > 0, X_, y_, refinements)
        if found[0] is not None:
            break
    if found[0] is None:
        # The add/drop rule cycled: solve on every subset of the candidates instead and keep the nearest KKT
        # point; where none is a KKT point, the nearest solution of the equations says why (its multipliers).
        found, nearest = _nearest_on_subsets(net, params, start, rows, target, margins <= margins.min() * (1 + spread),
                                             X_, y_)
        if found is None:
            found = _refine_from_local_minimum(net, start, X_, y_, refinements)
            if nearest is not None:
                note = (f"no KKT point near the point: the nearest solution of the KKT equations on a subset of its "
                        f"active points (beta distance {nearest[0]:.2g}) has multiplier {nearest[1]:.2g} < 0; the "
                        f"distance is to the KKT point of the local minimum, an upper bound")
    point, nu, active, residual, steps = found
    if point is None:
        return KKTDistance(np.inf, alignment, None, np.zeros(n), np.flatnonzero(active), residual, steps,
                           f"Newton found no KKT point on the detected active set (relative residual {residual:.1e})")
    # In beta: the KKT points of a network with symmetries (hidden-unit rotations, sign flips of layer pairs)
    # form a manifold, and Newton may land anywhere on it; beta is invariant to them.
    distance = float(np.linalg.norm(_unit(net.beta(params)) - _unit(net.beta(point))))
    return KKTDistance(distance, alignment, tuple(np.asarray(v) for v in point), nu, np.flatnonzero(active),
                       residual, steps, note)


def _nearest_on_subsets(net: Network, params, start, rows, target, candidates, X, y):
    """Newton on the KKT equations of every non-empty subset of the `candidates` (the largest
    MAX_ENUMERATED_CANDIDATES by smallest margin), each from `start` with least-squares multipliers: a complete
    local search over active sets, where the add/drop rule can cycle. Returns (the `_refine` tuple of the KKT
    point (multipliers >= 0, every margin >= 1) whose beta is nearest to that of `params`, or None;
    (beta distance, most negative multiplier) of the nearest solution of the equations that is no KKT point, or
    None)."""
    order = np.flatnonzero(candidates)
    order = order[np.argsort(rows[order] @ target)][:MAX_ENUMERATED_CANDIDATES]  # margins at `start`, smallest first
    size, unravel = target.size, ravel_pytree(start)[1]
    y_ = np.asarray(y)
    direction = _unit(net.beta(params))
    best, nearest = None, None
    for count in range(len(order), 0, -1):
        for subset in itertools.combinations(order, count):
            active = np.zeros(len(y_), bool)
            active[list(subset)] = True
            nu = np.zeros(len(y_))
            nu[active] = np.linalg.lstsq(rows[active].T, target, rcond=None)[0]
            z, residual, steps = _newton(net, start, nu, jnp.asarray(active, float), X, y)
            if not residual <= NEWTON_ACCEPT:
                continue
            point, nu = unravel(jnp.asarray(z[:size])), np.where(active, z[size:], 0.0)
            distance = float(np.linalg.norm(direction - _unit(net.beta(point))))
            tolerance = NEWTON_ACCEPT * max(nu.max(), 1.0)
            if nu.min() >= -tolerance and (y_ * np.asarray(net.apply(point, X))).min() >= 1 - NEWTON_ACCEPT:
                if best is None or distance < best[0]:
                    best = (distance, (point, np.maximum(nu, 0.0), active, residual, steps))
            elif nu.min() < -tolerance and (nearest is None or distance < nearest[0]):
                nearest = (distance, float(nu.min()))
    return (None if best is None else best[1]), nearest


@jit(static_argnums=0, brief=True)
def _margin_constraints(net: Network, flat, template, X, y):
    """`y_i f(x_i; theta) - 1` and its Jacobian in the flat parameters, one compiled program per network and data
    shape (SLSQP calls it at every iterate)."""
    unravel = ravel_pytree(template)[1]
    margins = lambda v: y * net.apply(unravel(v), X) - 1.0  # noqa: E731
    return margins(flat), jax.jacfwd(margins)(flat)


def _refine_from_local_minimum(net: Network, start, X, y, refinements: int):
    """`_refine` from the local minimum of `min ||theta||^2 s.t. y_i f(x_i; theta) >= 1` that SLSQP reaches from
    `start`, on its active set (margins within 1e-6 of 1) with multipliers by NNLS. Where no active set near the
    flow's point gives a KKT point, the constrained minimiser settles one; the KKT point is then certified by
    Newton as before (SLSQP's own convergence flag is not relied on: it often stops at the limit of its line
    search)."""
    flat, unravel = ravel_pytree(start)

    def constraints(v):
        value, jacobian = _margin_constraints(net, jnp.asarray(v), start, X, y)
        return np.asarray(value), np.asarray(jacobian)

    minimum = scipy.optimize.minimize(
        lambda v: 0.5 * float(v @ v), np.asarray(flat), jac=lambda v: v, method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda v: constraints(v)[0], "jac": lambda v: constraints(v)[1]}],
        options={"ftol": 1e-15, "maxiter": 1000})
    value, rows = constraints(minimum.x)
    active = value <= 1e-6
    nu = np.zeros(active.size)
    nu[active] = _nnls(rows[active].T, minimum.x)
    return _refine(net, unravel(jnp.asarray(minimum.x)), nu, nu > 0, X, y, refinements)


def _refine(net: Network, start, nu, active, X, y, refinements: int):
    """Newton on the KKT system from (start, nu) on `active`, then active-set corrections: a point with a
    negative multiplier leaves, the most violated margin joins. Returns (point or None, nu, active, residual,
    steps)."""
    size = np.asarray(ravel_pytree(start)[0]).size
    y_ = np.asarray(y)
    residual, steps = np.inf, 0
    for _ in range(refinements + 1):
        z, residual, steps = _newton(net, start, nu, jnp.asarray(active, float), X, y)
        nu = np.where(active, z[size:], 0.0)
        point = ravel_pytree(start)[1](jnp.asarray(z[:size]))
        point_margins = y_ * np.asarray(net.apply(point, X))
        negative, violated = np.argmin(nu), np.argmin(np.where(active, np.inf, point_margins))
        if residual > NEWTON_ACCEPT:
            break
        if nu[negative] < -NEWTON_ACCEPT * max(nu.max(), 1.0):
            active = active.copy()
            active[negative] = False
        elif not active.all() and point_margins[violated] < 1 - NEWTON_ACCEPT:
            active = active.copy()
            active[violated] = True
        else:
            return point, nu, active, residual, steps
        nu = np.where(active, np.maximum(nu, 0.0), 0.0)
    return None, nu, active, residual, steps
