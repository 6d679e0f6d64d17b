"""The data-free ODE that every coordinate of an odeco network follows (docs/theory.md §7, regression).

Coordinate j of a real odeco network moves along `d eta_l / d tau = prod_{k != l} eta_k` from its initial
`eta_{., j}(0)`, with `tau_j = [S X^T lambda]_j`. Everything the dual Newton solve needs at a given tau is a
function of the layer values there: `rho = prod_l eta_l`, `phi' = d rho / d tau = sum_l prod_{k != l} eta_k^2`,
and `Phi*(tau) = int_0^tau rho = (eta_l(tau)^2 - eta_l(0)^2) / 2` for any l (since `d(eta_l^2/2)/d tau = rho`).

Three parametrisations of the curve, chosen statically:
- `Depth2Curve` (L = 2, any init): `eta_1 +- eta_2 = (a +- b) e^{+-tau}`, an infinite domain.
- `TheoremCurve` (L = 3, 4, one layer zero and the others equal in absolute value, e.g. the theorem init): the
  closed forms `h_3(z) = tan z sec^2 z`, `h_4(z) = z / (1 - z^2)^2` with `z = c^{L-2} tau`; a bounded domain.
- `QuadratureCurve` (any L >= 3, any init): the conserved `eta_l^2 - eta_k^2` leave one degree of freedom,
  `eta_p = sqrt(mu) sinh w` for the layer p of smallest |eta_p(0)|; `tau(w)` is an integral of a function that
  is analytic in the strip |Im w| < pi/2, computed by composite Gauss-Legendre and inverted by safeguarded
  Newton. The domain is bounded (for L >= 3 the curve blows up at a finite tau).
Each curve is a pytree (so a batch of initialisations vmaps) and `values(tau)` returns `CurveValues`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

# Two layers whose |eta(0)| agree to within this relative amount are separated by it (a perturbation of the init
# far below float64 resolution of the outcome); it keeps the sinh parametrisation finite for exact ties.
TIE_FLOOR = 1e-28
# Beyond the last scale transition, tau(w) is flat to double precision after TAIL / (L - 2) units of w
# (the integrand decays like e^{-(L-2)|w|}); the tail gives rho room to grow by e^{TAIL L/(L-2)} or more.
TAIL = 40.0
MIN_TAIL = 12.0
# Gauss-Legendre nodes per panel and the longest panel: the integrand's nearest singularity is pi/2 off the real
# axis, so 16 nodes on panels of length <= 1.8 integrate to ~1e-16 relative (Bernstein-ellipse bound).
NODES = 16
MAX_PANEL = 1.8
INVERSION_STEPS = 32  # Newton converges in ~5; bisection fallbacks (rare) need more
_GL_X, _GL_W = np.polynomial.legendre.leggauss(NODES)


@dataclasses.dataclass(frozen=True)
class CurveValues:
    rho: Float[Array, " m"]
    dphi: Float[Array, " m"]  # d rho / d tau >= 0
    phistar: Float[Array, " m"]  # int_0^tau rho
    inside: Bool[Array, " m"]  # tau lies in the curve's domain


jax.tree_util.register_dataclass(CurveValues, data_fields=["rho", "dphi", "phistar", "inside"], meta_fields=[])


def _symmetric_values(rho, dphi, phistar, inside) -> CurveValues:
    finite = jnp.isfinite(rho) & jnp.isfinite(dphi) & jnp.isfinite(phistar)
    inside = inside & finite
    zero = jnp.zeros_like(rho)
    return CurveValues(jnp.where(inside, rho, zero), jnp.where(inside, dphi, zero),
                       jnp.where(inside, phistar, zero), inside)


@dataclasses.dataclass(frozen=True)
class Depth2Curve:
    """L = 2, any init: `eta_1 + eta_2 = (a + b) e^tau`, `eta_1 - eta_2 = (a - b) e^-tau`."""

    a: Float[Array, " m"]
    b: Float[Array, " m"]

    @classmethod
    def from_etas(cls, etas0: Float[Array, "2 m"]) -> "Depth2Curve":
        return cls(etas0[0], etas0[1])

    def values(self, tau: Float[Array, " m"]) -> CurveValues:
        # eta_1 eta_2 = ((a+b)^2 e^{2tau} - (a-b)^2 e^{-2tau}) / 4, rewritten in cosh/sinh so that small tau
        # (large scales) do not lose digits to the difference of two nearly equal exponentials.
        a, b = self.a, self.b
        sum_sq, product = a**2 + b**2, a * b
        cosh2, sinh2 = jnp.cosh(2 * tau), jnp.sinh(2 * tau)
        rho = product * cosh2 + sum_sq * sinh2 / 2
        dphi = sum_sq * cosh2 + 2 * product * sinh2
        phistar = (sum_sq * jnp.sinh(tau) ** 2 + product * sinh2) / 2
        return _symmetric_values(rho, dphi, phistar, jnp.ones(tau.shape, bool))


jax.tree_util.register_dataclass(Depth2Curve, data_fields=["a", "b"], meta_fields=[])


@dataclasses.dataclass(frozen=True)
class TheoremCurve:
    """L = 3 or 4, one layer zero and the others of absolute value c: `rho = c^L h_L(c^{L-2} tau)`.

    The other layers have `|eta| = A(z)` and the zero layer `|eta| = B(z)`: L = 3: `A = c sec z, B = c tan z`
    (|z| < pi/2); L = 4: `A = c / sqrt(1 - z^2), B = c z / sqrt(1 - z^2)` (|z| < 1)."""

    c: Float[Array, " m"]
    depth: int

    def values(self, tau: Float[Array, " m"]) -> CurveValues:
        L, c = self.depth, self.c
        z = c ** (L - 2) * tau
        if L == 3:
            inside = jnp.abs(z) < jnp.pi / 2
            z = jnp.where(inside, z, 0.0)
            A, B = c / jnp.cos(z), c * jnp.tan(z)
        elif L == 4:
            inside = jnp.abs(z) < 1
            z = jnp.where(inside, z, 0.0)
            root = jnp.sqrt((1 - z) * (1 + z))
            A, B = c / root, c * z / root
        else:
            raise ValueError(f"TheoremCurve has closed forms for depth 3 and 4 only, got {L}")
        rho = B * A ** (L - 1)
        dphi = A ** (2 * L - 2) + (L - 1) * B**2 * A ** (2 * L - 4)
        return _symmetric_values(rho, dphi, B**2 / 2, inside)


jax.tree_util.register_dataclass(TheoremCurve, data_fields=["c"], meta_fields=["depth"])


def _panels_per_side(depth: int) -> int:
    # |w0| and every transition asinh(sqrt(m_k / mu)) are at most asinh(TIE_FLOOR^-1/2), so each side of w0
    # spans at most 2 asinh(TIE_FLOOR^-1/2) + tail.
    reach = 2 * math.asinh(TIE_FLOOR**-0.5) + max(TAIL / (depth - 2), MIN_TAIL)
    return math.ceil(reach / MAX_PANEL)


@dataclasses.dataclass(frozen=True)
class QuadratureCurve:
    """Any init, L >= 3. With p the layer of smallest |eta_p(0)|, `m_k = eta_k(0)^2 - eta_p(0)^2` and
    `mu = min_{k != p} m_k`: `eta_p = sqrt(mu) sinh w`, `eta_k = s_k sqrt(mu sinh^2 w + m_k)`, and
    `d tau / d w = sigma sqrt(mu) cosh w / prod_{k != p} sqrt(mu sinh^2 w + m_k)` with `sigma = prod s_k`.

    `grid` has w0 (the initial point) as a node; `cumulative[i]` is the integral of |d tau / d w| from w0 to
    `grid[i]` (negative left of w0). Integrals inside a panel start from its end nearer to w0, so small tau are
    resolved to full relative precision instead of being differences of large cumulative values."""

    mu: Float[Array, " m"]
    m_others: Float[Array, "L-1 m"]
    sigma: Float[Array, " m"]
    w0: Float[Array, " m"]
    grid: Float[Array, "P+1 m"]
    cumulative: Float[Array, "P+1 m"]

    @staticmethod
    def _speed(w, mu, m_others):
        """|d tau / d w|: positive, analytic for |Im w| < pi/2."""
        s2 = jnp.sinh(w) ** 2
        return jnp.sqrt(mu) * jnp.cosh(w) / jnp.prod(jnp.sqrt(mu * s2 + m_others), axis=0)

    @staticmethod
    def _integral(a, b, mu, m_others):
        """Gauss-Legendre integral of the speed from a to b (arrays of shape (m,); b < a gives a negative value)."""
        half, mid = (b - a) / 2, (b + a) / 2
        nodes = mid + half * jnp.asarray(_GL_X)[:, None]
        speeds = QuadratureCurve._speed(nodes, mu, m_others[:, None, :])
        return half * jnp.tensordot(jnp.asarray(_GL_W), speeds, axes=1)

    @classmethod
    def from_etas(cls, etas0: Float[Array, "L m"]) -> "QuadratureCurve":
        L, m = etas0.shape
        q = etas0**2
        order = jnp.argsort(q, axis=0)  # per coordinate, smallest |eta(0)| first
        eta_p = jnp.take_along_axis(etas0, order[:1], axis=0)[0]
        eta_others = jnp.take_along_axis(etas0, order[1:], axis=0)
        floor = jnp.maximum(TIE_FLOOR * jnp.max(q, axis=0), jnp.finfo(etas0.dtype).tiny)
        m_others = jnp.maximum(eta_others**2 - eta_p**2, floor)
        mu = jnp.min(m_others, axis=0)
        sigma = jnp.prod(jnp.where(eta_others < 0, -1.0, 1.0), axis=0)
        w0 = jnp.arcsinh(eta_p / jnp.sqrt(mu))
        transition = jnp.max(jnp.arcsinh(jnp.sqrt(m_others / mu)), axis=0)
        tail = max(TAIL / (L - 2), MIN_TAIL)
        lo = jnp.minimum(w0, -transition) - tail
        hi = jnp.maximum(w0, transition) + tail
        side = _panels_per_side(L)
        fractions = jnp.linspace(0.0, 1.0, side + 1)[:, None]
        grid = jnp.concatenate([lo + (w0 - lo) * fractions, (w0 + (hi - w0) * fractions)[1:]])
        pieces = jax.vmap(lambda a, b: cls._integral(a, b, mu, m_others))(grid[:-1], grid[1:])
        left = -jnp.cumsum(pieces[:side][::-1], axis=0)[::-1]  # integral from w0 back to each left node
        right = jnp.cumsum(pieces[side:], axis=0)
        cumulative = jnp.concatenate([left, jnp.zeros((1, m)), right])
        return cls(mu, m_others, sigma, w0, grid, cumulative)

    def _w_of_tau(self, tau):
        """Invert tau(w) per coordinate: find the panel, then safeguarded Newton inside it."""
        target = self.sigma * tau
        inside = (target > self.cumulative[0]) & (target < self.cumulative[-1])
        target = jnp.where(inside, target, 0.0)
        # Panel index by counting nodes below the target (cumulative is increasing): cheaper to compile than a
        # vmapped searchsorted, and P is small.
        panel = jnp.sum(self.cumulative <= target, axis=0) - 1
        panel = jnp.clip(panel, 0, self.grid.shape[0] - 2)
        lo = jnp.take_along_axis(self.grid, panel[None], axis=0)[0]
        hi = jnp.take_along_axis(self.grid, panel[None] + 1, axis=0)[0]
        c_lo = jnp.take_along_axis(self.cumulative, panel[None], axis=0)[0]
        c_hi = jnp.take_along_axis(self.cumulative, panel[None] + 1, axis=0)[0]
        left_of_w0 = c_hi <= 0
        anchor = jnp.where(left_of_w0, hi, lo)
        remaining = target - jnp.where(left_of_w0, c_hi, c_lo)
        w = lo + (hi - lo) * jnp.clip((target - c_lo) / jnp.maximum(c_hi - c_lo, 1e-300), 0.0, 1.0)
        tolerance = 8 * jnp.finfo(tau.dtype).eps * jnp.maximum(jnp.abs(remaining), 1e-300)

        def step(_, state):
            w, lo, hi = state
            error = self._integral(anchor, w, self.mu, self.m_others) - remaining
            lo = jnp.where(error < 0, w, lo)
            hi = jnp.where(error > 0, w, hi)
            newton = w - error / self._speed(w, self.mu, self.m_others)
            ok = (newton >= lo) & (newton <= hi)
            # Once the error is at rounding level, rounding can put a (null) Newton step just outside the bracket;
            # bisecting then would throw the converged w back into the bracket's middle.
            settled = jnp.abs(error) <= tolerance
            return jnp.where(settled, w, jnp.where(ok, newton, (lo + hi) / 2)), lo, hi

        w, _, _ = jax.lax.fori_loop(0, INVERSION_STEPS, step, (w, lo, hi))
        return w, inside

    def values(self, tau: Float[Array, " m"]) -> CurveValues:
        w, inside = self._w_of_tau(tau)
        s2 = jnp.sinh(w) ** 2
        eta_p = jnp.sqrt(self.mu) * jnp.sinh(w)
        others = jnp.sqrt(self.mu * s2 + self.m_others)  # |eta_k|, k != p
        rho = self.sigma * eta_p * jnp.prod(others, axis=0)
        squares = jnp.concatenate([eta_p[None], others]) ** 2
        dphi = jnp.zeros_like(rho)
        for l in range(squares.shape[0]):
            dphi = dphi + jnp.prod(jnp.delete(squares, l, axis=0), axis=0)
        # Phi* = (eta_p^2 - eta_p(0)^2) / 2, written as a product so it keeps relative precision near w0.
        phistar = self.mu * jnp.sinh(w - self.w0) * jnp.sinh(w + self.w0) / 2
        return _symmetric_values(rho, dphi, phistar, inside)


jax.tree_util.register_dataclass(
    QuadratureCurve, data_fields=["mu", "m_others", "sigma", "w0", "grid", "cumulative"], meta_fields=[])


CURVE_KINDS = ("auto", "depth2", "theorem", "quadrature")


def theorem_structure(etas0: np.ndarray, rtol: float = 1e-12) -> np.ndarray | None:
    """c (per coordinate) when one layer is zero everywhere and the others agree in absolute value; else None."""
    etas0 = np.abs(np.asarray(etas0))
    zero_layers = [l for l in range(etas0.shape[0]) if not np.any(etas0[l])]
    if len(zero_layers) != 1:
        return None
    rest = np.delete(etas0, zero_layers[0], axis=0)
    c = rest[0]
    if np.all(np.abs(rest - c) <= rtol * np.maximum(c, 1e-300)):
        return c
    return None


def resolve_curve_kind(etas0: Float[Array, "L m"], kind: str = "auto") -> str:
    """'auto' -> the closed form when one applies: depth 2 always; depth 3 and 4 when `etas0` is concrete (not
    traced by jit/vmap) and has the theorem structure; else quadrature. Other kinds are returned unchanged."""
    if kind not in CURVE_KINDS:
        raise ValueError(f"curve must be one of {CURVE_KINDS}, got {kind!r}")
    if kind != "auto":
        return kind
    L = etas0.shape[0]
    if L == 2:
        return "depth2"
    if L in (3, 4) and not isinstance(etas0, jax.core.Tracer) and theorem_structure(etas0) is not None:
        return "theorem"
    return "quadrature"


def build_curve(etas0: Float[Array, "L m"], kind: str = "auto"):
    """The curve parametrisation for initial layer coordinates `etas0` (shape (L, m), L >= 2)."""
    L = etas0.shape[0]
    if L < 2:
        raise ValueError(f"the coordinate curves are for depth >= 2, got depth {L}")
    kind = resolve_curve_kind(etas0, kind)
    if kind == "depth2":
        if L != 2:
            raise ValueError(f"curve='depth2' needs depth 2, got depth {L}")
        return Depth2Curve.from_etas(etas0)
    if kind == "theorem":
        if L not in (3, 4):
            raise ValueError(f"curve='theorem' has closed forms for depth 3 and 4, got depth {L}")
        # c = the common |eta| of the non-zero layers: the largest |eta_l(0)| per coordinate.
        return TheoremCurve(jnp.max(jnp.abs(etas0), axis=0), L)
    if L < 3:
        raise ValueError(f"curve='quadrature' is for depth >= 3, got depth {L}")
    return QuadratureCurve.from_etas(etas0)
