"""Regression predictions: the exact limit for real odeco networks, the lazy and small-scale limits.

The exact limit (docs/theory.md §7) solves the n-dimensional dual
`min_lambda D(lambda) = sum_j Phi*_j(tau_j) - y^T lambda` with `tau = Z^T lambda`, `Z = X S^T`, by damped Newton in
JAX: the gradient `Z rho(tau) - y` is the interpolation residual, the Hessian `Z diag(phi'(tau)) Z^T` is n x n. The
primal point `rho = phi(tau)` is the flow's limit. Everything is a pure function of arrays, so a batch of scales or
seeds runs under `jax.vmap`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from .._compile import jit
from ..networks import Network
from ._common import layer_coordinates, odeco_or_raise, transformed_inputs
from ._curves import CurveValues, build_curve, resolve_curve_kind

# Armijo constant and the most step halvings per Newton step (2^-60 ~ 1e-18: a step that small is a stall).
ARMIJO = 1e-4
MAX_HALVINGS = 60
# Convergence is declared at rtol or at this multiple of the gradient's estimated rounding noise, if larger.
NOISE_FACTOR = 8.0
# The lazy limit inverts J J^T: above this condition number it is rounding, not a prediction.
LAZY_MAX_CONDITION = 1e13
# Status codes of RegressionSolution.status.
CONVERGED, MAX_STEPS, STALLED = 0, 1, 2
STATUS_MESSAGES = {CONVERGED: "converged", MAX_STEPS: "reached max_steps before the tolerance",
                   STALLED: "line search found no acceptable step (stalled) before the tolerance"}


@dataclasses.dataclass(frozen=True)
class RegressionSolution:
    """The exact regression limit of an odeco network and how the dual Newton solve got there."""

    beta: Float[Array, " d"]  # S^T rho: the end-to-end predictor at the flow's limit
    rho: Float[Array, " m"]  # the diagonal network's product in transformed coordinates
    dual: Float[Array, " n"]  # lambda, with tau = S X^T lambda the coordinates' curve parameters
    residual: Float[Array, ""]  # ||X beta - y|| / ||y|| at the returned point
    steps: Int[Array, ""]  # Newton steps taken
    status: Int[Array, ""]  # CONVERGED, MAX_STEPS or STALLED

    @property
    def converged(self):
        return self.status == CONVERGED


jax.tree_util.register_dataclass(
    RegressionSolution, data_fields=["beta", "rho", "dual", "residual", "steps", "status"], meta_fields=[])


def _dual_value(curve, Z, y, lam):
    """D(lambda), +inf outside the dual domain; with the gradient Z rho - y and the curve values."""
    values = curve.values(lam @ Z)
    inside = jnp.all(values.inside)
    value = jnp.where(inside, jnp.sum(values.phistar) - y @ lam, jnp.inf)
    gradient = Z @ values.rho - y
    return value, gradient, values


def _values_at_init(etas0: Float[Array, "L m"]) -> CurveValues:
    """The curve values at tau = 0 (the initialisation), straight from the layer values."""
    squares = etas0**2
    dphi = sum(jnp.prod(jnp.delete(squares, l, axis=0), axis=0) for l in range(etas0.shape[0]))
    rho = jnp.prod(etas0, axis=0)
    return CurveValues(rho, dphi, jnp.zeros_like(rho), jnp.ones(rho.shape, bool))


@jit(static_argnames=("curve_kind", "max_steps"), brief=True)
def _solve_dual(Z: Float[Array, "n m"], y: Float[Array, " n"], etas0: Float[Array, "L m"], curve_kind: str,
                rtol: float, max_steps: int):
    return _dual_newton(Z, y, etas0, curve_kind, rtol, max_steps)


@jit(static_argnames=("curve_kind", "max_steps"), brief=True)
def _solve_dual_batch(Z: Float[Array, "n m"], y: Float[Array, " n"], etas0: Float[Array, "batch L m"],
                      curve_kind: str, rtol: float, max_steps: int):
    return jax.vmap(lambda e: _dual_newton(Z, y, e, curve_kind, rtol, max_steps))(etas0)


def _dual_newton(Z, y, etas0, curve_kind: str, rtol, max_steps: int):
    # The curve is evaluated in one place only (the line search), which keeps the compiled program small.
    curve = build_curve(etas0, curve_kind)
    n = Z.shape[0]
    y_norm = jnp.linalg.norm(y)
    abs_Z = jnp.abs(Z)
    eps = jnp.finfo(Z.dtype).eps

    def tolerance(lam, values):
        # The gradient Z rho(Z^T lambda) - y cannot be computed more accurately than the rounding of tau
        # (eps |lambda|^T |Z|, amplified by phi') and of rho itself; near the edge of a bounded dual domain
        # (small scales, L >= 3) that floor lies above rtol, and Newton can only reach it.
        tau_noise = eps * (jnp.abs(lam) @ abs_Z)
        rho_noise = eps * jnp.abs(values.rho) + values.dphi * tau_noise
        floor = NOISE_FACTOR * jnp.linalg.norm(abs_Z @ rho_noise + eps * jnp.abs(y))
        return jnp.maximum(rtol * y_norm, floor)

    def not_done(state):
        return (state[-1] < 0) & (state[-2] < max_steps)

    def newton_step(state):
        lam, value, gradient, values, step, _ = state
        hessian = (Z * values.dphi) @ Z.T
        # A relative jitter of 1e-14 keeps the Cholesky factorisation alive when phi' underflows on many
        # coordinates; an inexact Newton direction still converges, and convergence is judged on the gradient.
        hessian = hessian + 1e-14 * jnp.trace(hessian) / n * jnp.eye(n)
        direction = -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(hessian), gradient)
        slope = gradient @ direction
        g_norm = jnp.linalg.norm(gradient)

        def trial(search):
            t, _, _, _, halvings = search
            t = jnp.where(halvings == 0, t, t / 2)  # the first trial is the full step
            return t, *_dual_value(curve, Z, y, lam + t * direction), halvings + 1

        def rejected(search):
            t, new_value, new_gradient, _, halvings = search
            # Accept on Armijo decrease, or (near the optimum, where D's decrease drowns in rounding) on a
            # decrease of the gradient norm; reject anything outside the domain.
            armijo = new_value <= value + ARMIJO * t * slope
            residual_drop = jnp.linalg.norm(new_gradient) <= (1 - ARMIJO * t) * g_norm
            ok = jnp.isfinite(new_value) & (armijo | residual_drop)
            return (halvings == 0) | (~ok & (halvings <= MAX_HALVINGS))

        search = (jnp.asarray(1.0, Z.dtype), value, gradient, values, jnp.asarray(0))
        t, new_value, new_gradient, new_values, halvings = jax.lax.while_loop(rejected, trial, search)
        stalled = (halvings > MAX_HALVINGS) | ~jnp.all(jnp.isfinite(direction))
        keep = lambda old, new: jax.tree_util.tree_map(lambda a, b: jnp.where(stalled, a, b), old, new)
        lam, value, gradient, values = keep((lam, value, gradient, values),
                                            (lam + t * direction, new_value, new_gradient, new_values))
        converged = jnp.linalg.norm(gradient) <= tolerance(lam, values)
        status = jnp.where(converged, CONVERGED, jnp.where(stalled, STALLED, -1))
        return lam, value, gradient, values, step + 1, status

    lam0 = jnp.zeros(n, Z.dtype)
    values0 = _values_at_init(etas0)
    gradient0 = Z @ values0.rho - y
    status0 = jnp.where(jnp.linalg.norm(gradient0) <= tolerance(lam0, values0), CONVERGED, -1)
    state = (lam0, jnp.asarray(0.0, Z.dtype), gradient0, values0, jnp.asarray(0), status0)
    lam, _, gradient, values, steps, status = jax.lax.while_loop(not_done, newton_step, state)
    status = jnp.where(status < 0, MAX_STEPS, status)
    return values.rho, lam, jnp.linalg.norm(gradient) / y_norm, steps, status


def _real_odeco(net: Network) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    S, Us = odeco_or_raise(net, "the exact regression limit")
    if np.iscomplexobj(S) or any(np.iscomplexobj(U) for U in Us):
        raise ValueError(f"net: the exact regression limit is implemented for real odeco decompositions; {net!r} "
                         "has a complex one (its flow couples conjugate coordinates)")
    if net.depth < 2:
        raise ValueError("net: the coordinate reduction needs depth >= 2; depth 1 is linear_model_limit")
    return S, Us


def odeco_regression_limit(net: Network, X: Float[Array, "n d"], y: Float[Array, " n"], init,
                           *, curve: str = "auto", rtol: float = 1e-12, max_steps: int = 200
                           ) -> RegressionSolution:
    """Where gradient flow on the squared loss ends for a real odeco network from `init` (any initialisation).

    Exact, not a limit in the scale (docs/theory.md §7). Pure in (X, y, init): `jax.vmap` over scales or seeds works
    (with `net` fixed; `odeco_regression_limits` does it for a batch). `curve` picks the coordinate
    parametrisation ('auto': closed form for depth 2 and for theorem-type inits of depth 3 and 4, quadrature
    otherwise). The returned `status` must be checked (`solution.converged`); `predict` does that and raises on
    failure.
    """
    S, Us = _real_odeco(net)
    params = net.check_params(init)
    Z = transformed_inputs(S, X)
    etas0 = layer_coordinates(Us, params)
    kind = resolve_curve_kind(etas0, curve)  # outside jit, where a concrete init can be inspected
    rho, lam, residual, steps, status = _solve_dual(Z, jnp.asarray(y, Z.dtype), etas0, kind, rtol, max_steps)
    beta = jnp.asarray(S).T @ rho
    return RegressionSolution(beta, rho, lam, residual, steps, status)


_batched_layer_coordinates = jit(jax.vmap(layer_coordinates, in_axes=(None, 0)), brief=True)


def odeco_regression_limits(net: Network, X: Float[Array, "n d"], y: Float[Array, " n"], inits,
                            *, curve: str = "auto", rtol: float = 1e-12, max_steps: int = 200
                            ) -> RegressionSolution:
    """`odeco_regression_limit` for a batch of initialisations (every layer with a leading batch axis): one
    compiled, vmapped solve per curve kind (run by run, the calls cost more than the solves). Every field of
    the result has the batch axis."""
    S, Us = _real_odeco(net)
    inits = net.check_batch(inits, "inits")
    Z = transformed_inputs(S, X)
    etas0 = np.asarray(_batched_layer_coordinates(tuple(Us), inits))
    y = np.asarray(y, dtype=etas0.dtype)
    kinds = np.asarray([resolve_curve_kind(e, curve) for e in etas0])
    if np.all(kinds == kinds[0]):  # the common case: no split
        parts, order = [_solve_dual_batch(Z, y, etas0, kinds[0], rtol, max_steps)], [np.arange(len(kinds))]
    else:
        order = [np.flatnonzero(kinds == kind) for kind in dict.fromkeys(kinds)]
        parts = [_solve_dual_batch(Z, y, etas0[members], kind, rtol, max_steps)
                 for kind, members in zip(dict.fromkeys(kinds), order)]
    inverse = np.argsort(np.concatenate(order))
    rho, lam, residual, steps, status = (np.concatenate(leaves)[inverse] for leaves in zip(*parts))
    return RegressionSolution(rho @ np.asarray(S), rho, lam, residual, steps, status)


@functools.lru_cache(maxsize=64)
def _compiled_lazy_limits(net: Network):
    """Per run of a batch: the lazy limit's beta and the Gram matrix `J J^T` it inverts, compiled once per
    network (eager, the Jacobian alone took 26 ms a call, most of a sweep's theory checks)."""

    def lazy(params, X, y):
        flat, unravel = ravel_pytree(params)
        pullback = jax.vjp(lambda v: net.apply(unravel(v), X), flat)[1]
        # Rows of J one at a time: jacrev's vmap on top of the batch's hits an XLA CPU layout bug in FFTs.
        jac = jax.lax.map(lambda e: pullback(e)[0], jnp.eye(X.shape[0], dtype=flat.dtype))
        gram = jac @ jac.T
        step = unravel(jac.T @ jnp.linalg.solve(gram, y - net.apply(params, X)))
        beta0, beta_step = jax.jvp(net.beta, (params,), (step,))
        return beta0 + beta_step, gram

    return jit(jax.vmap(lazy, in_axes=(0, None, None)), brief=True)


def lazy_limits(net: Network, X: Float[Array, "n d"], y: Float[Array, " n"], inits
                ) -> tuple[np.ndarray, np.ndarray]:
    """`lazy_limit` for a batch of initialisations (leading batch axis), in one compiled call: the betas and,
    per run, the condition number of `J J^T` (the limit is meaningless where it is not finite or above 1e13;
    `lazy_limit` raises there)."""
    inits = net.check_batch(inits, "inits")
    dtype = jnp.result_type(float)
    betas, grams = _compiled_lazy_limits(net)(inits, np.asarray(X, dtype), np.asarray(y, dtype))
    grams = np.asarray(grams)
    finite = np.all(np.isfinite(grams), axis=(1, 2))
    conditions = np.full(len(grams), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero J J^T: cond is inf or NaN, both refused
        conditions[finite] = np.linalg.cond(grams[finite])
    return np.asarray(betas), conditions


def lazy_limit(net: Network, X: Float[Array, "n d"], y: Float[Array, " n"], init) -> Float[Array, " d"]:
    """Beta of the linearised flow's limit `theta_0 + J^T (J J^T)^{-1} (y - f(theta_0))` (docs/theory.md §8).

    The linearised model is `f(theta_0) + J (theta - theta_0)`, linear in x with predictor
    `beta(theta_0) + D beta(theta_0)[theta - theta_0]`; that predictor is returned (it interpolates exactly).
    For a depth-1 network f is linear in theta, so this is the flow's exact limit.
    """
    params = net.check_params(init)
    betas, conditions = lazy_limits(net, X, y, tuple(jnp.asarray(p)[None] for p in params))
    error = lazy_condition_error(conditions[0])
    if error is not None:
        raise error
    return jnp.asarray(betas[0])


def lazy_condition_error(condition: float) -> ValueError | None:
    """The error of a lazy limit whose `J J^T` has this condition number (None when it is a prediction)."""
    if condition <= LAZY_MAX_CONDITION:
        return None
    return ValueError("init: the lazy prediction needs J J^T invertible at the initialisation (J = df(X)/dtheta); "
                      f"its condition number is {condition:.1e} here")


def min_norm_interpolant(X: Float[Array, "n d"], y: Float[Array, " n"]) -> Float[Array, " d"]:
    """`X^T (X X^T)^{-1} y`: deep fully-connected nets' limit as the initial scale goes to 0 (docs/theory.md §8)."""
    X = jnp.asarray(X)
    return X.T @ jnp.linalg.solve(X @ X.T, jnp.asarray(y))
