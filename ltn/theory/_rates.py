"""Rates of directional convergence in classification (docs/theory.md §12): the exponent the theory gives for the
distance of a flow's direction to its limit, `||beta/||beta|| - beta*|| ~ C gamma^(-e)` with `gamma = -log L`,
and a fit of that law to a recorded path, extrapolated to the loss at which the distance would be within a
tolerance.

A flow is always stopped at a finite loss, and its direction can approach the limit with a small exponent; a
run that is not yet within tolerance is then "slow", not "wrong", exactly when its distance falls at the
theory's rate. The exponents:

- odeco, L = 2: `e = 1 - max_{j off the support} |g_j|`, `g = sum_i nu_i y_i conj(z_i)` with `nu` the dual
  solution of the l1 max-margin problem (the slowest off-support coordinate);
- fully connected (and any depth-1 network, a linear model in its parameters): `e = 1/L`, the part of the
  first layer off the span of the data never moves;
- odeco, L > 2: `e = 1`, off-support coordinates stay bounded while the margin grows like gamma; it is reached
  from below, the local exponent being `x/(1 + x)` with `x = (gamma/gamma_c)^((L-2)/L)` and `gamma_c` set by
  the data and the initialisation, so a fit is within the tolerance only from `gamma ~ 3^(L/(L-2)) gamma_c`.
Elsewhere (partial convolutions, general tensor networks) the theory gives no rate here: NaN.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..networks import FullyConnected, Network

# The fit uses the path's points in the last RATE_DECADES decades of gamma (the late phase, where the slowest
# term dominates), and needs at least RATE_MIN_POINTS of them spanning at least RATE_MIN_SPAN (a factor in gamma).
RATE_DECADES = 1.0
RATE_MIN_POINTS = 5
RATE_MIN_SPAN = 10**0.5
# A fitted exponent agrees with the theory's when it is within RATE_TOLERANCE of it, relative (docs/theory.md §12
# lists the measured agreement).
RATE_TOLERANCE = 0.25
# A coordinate is off the l1 support when |rho_j| <= SUPPORT_ZERO max|rho| (the LP's vertex has exact zeros; an
# interior-point SOCP leaves ~1e-10).
SUPPORT_ZERO = 1e-7


@dataclasses.dataclass(frozen=True)
class RateFit:
    """`log ||u - p|| = log C - e log gamma`, fitted by least squares on the late checkpoints of one path.

    `exponent`: the fitted e (NaN when there was no fit: see `note`). `log_scale`: log C. `points`: the number
    of checkpoints in the fit. `gamma_range`: their smallest and largest gamma. `pass_at_log_loss`: the log-loss
    (`-gamma`) at which the fitted distance reaches the tolerance (NaN without a fit or with e <= 0; -inf where
    that gamma overflows).
    """

    exponent: float
    log_scale: float
    points: int
    gamma_range: tuple[float, float]
    pass_at_log_loss: float
    note: str = ""


def fit_rate(log_loss, distance, tolerance: float, *, decades: float = RATE_DECADES,
             min_points: int = RATE_MIN_POINTS, min_span: float = RATE_MIN_SPAN) -> RateFit:
    """Fit `distance ~ C gamma^(-e)` on the late part of a path and extrapolate it to `distance = tolerance`.

    Arguments:
        log_loss: log L at each point of the path, shape (K,) (non-finite entries, checkpoints a run never
            reached, are skipped).
        distance: the distance of the direction to the prediction at each point, shape (K,).
        tolerance: the distance at which the check passes (for a cosine tolerance c, `sqrt(2 (1 - c))`).
        decades: the late phase is `gamma >= max(gamma) / 10^decades` (and gamma > 1).
        min_points, min_span: the fewest points, and the smallest ratio of their largest to smallest gamma,
            that a fit needs.
    Returns:
        A `RateFit`; with too few late points its exponent is NaN and `note` says why.
    """
    log_loss, distance = np.asarray(log_loss, dtype=float), np.asarray(distance, dtype=float)
    gamma = -log_loss
    usable = np.isfinite(gamma) & np.isfinite(distance) & (gamma > 1) & (distance > 0)
    if not usable.any():
        return RateFit(np.nan, np.nan, 0, (np.nan, np.nan), np.nan, "no checkpoint with -log L > 1")
    late = usable & (gamma >= gamma[usable].max() / 10**decades)
    points, span = int(late.sum()), (float(gamma[late].min()), float(gamma[late].max()))
    if points < min_points or span[1] / span[0] < min_span:
        return RateFit(np.nan, np.nan, points, span, np.nan,
                       f"{points} checkpoint(s) with -log L in [{span[0]:.3g}, {span[1]:.3g}] (the last {decades:g} "
                       f"decade(s)); a rate fit needs {min_points} spanning a factor {min_span:.3g}")
    slope, log_scale = np.polyfit(np.log(gamma[late]), np.log(distance[late]), 1)
    exponent = float(-slope)
    pass_at = np.nan
    if exponent > 0:
        with np.errstate(over="ignore"):
            pass_at = -float(np.exp((log_scale - np.log(tolerance)) / exponent))
    return RateFit(exponent, float(log_scale), points, span, pass_at)


def theory_rate_exponent(net: Network, X, y, prediction) -> tuple[float, str]:
    """The exponent e of `||u - beta*|| ~ C gamma^(-e)` that the theory gives for gradient flow on `net`
    (module docstring), with a note saying where it comes from (or why there is none: NaN).

    Arguments:
        net: the network of the flow.
        X, y: the data.
        prediction: the theory's own `Prediction` for `net` (the rate is the flow's, whatever a run is judged
            against): its diagnostics carry the max-margin point `rho`, the features' `S` and, for L = 2 odeco
            networks, the LP's dual `multipliers`.
    """
    depth = net.depth
    diagnostics = prediction.diagnostics
    if depth == 1 or isinstance(net, FullyConnected):
        features = np.asarray(X) @ np.asarray(diagnostics["S"]).T
        if np.linalg.matrix_rank(features) >= features.shape[1]:
            return np.nan, "the data span every direction: no part off their span, whose decay gives the rate"
        return 1.0 / depth, "1/L: the part off the span of the data"
    if net.odeco is None or "rho" not in diagnostics:
        return np.nan, "no closed prediction: no rate"
    if depth > 2:
        return 1.0, "1: off-support coordinates stay bounded (L > 2), reached from below"
    rho = np.asarray(diagnostics["rho"])
    Z = np.asarray(X) @ np.asarray(diagnostics["S"]).T
    g = np.abs((np.asarray(y)[:, None] * np.conj(Z)).T @ np.asarray(diagnostics["multipliers"]))
    off = np.abs(rho) <= SUPPORT_ZERO * np.abs(rho).max()
    if not off.any():
        return np.nan, "the l1 solution has full support: no off-support coordinate, whose decay gives the rate"
    g = g / g[~off].max()  # |g_j| = 1 on the support (complementary slackness); the dual's scale is the solver's
    exponent = float(1.0 - g[off].max())
    if not exponent > 0:
        return np.nan, f"degenerate dual (max |g_j| off the support = {g[off].max():.6f}): no rate"
    return exponent, "1 - max |g_j| off the support (l1 dual)"
