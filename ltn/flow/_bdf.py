"""A variable-order BDF method (orders 1 to 5, NDF coefficients) with its own step-size and order control: scipy's
`BDF` algorithm (Shampine & Reichelt, "The MATLAB ODE Suite", 1997), written for JAX.

Why a multistep method for the far classification path: there the Jacobian's spread grows like `-log L` while the
path itself moves smoothly, so an implicit one-step method spends most steps on stage equations that fail from a
poor start. BDF's single implicit equation per step starts from a predictor that extrapolates the last `order + 1`
points, and converges in one or two chord iterations on a Jacobian kept for many steps (formed again only where the
iterations fail on an old one); the step's `I - c J` is factorised again only where `c = h / alpha_order` moved.

The history is kept as backward differences `D` in units of the current step `h` (rows 0..order+2, fixed shape
MAX_ORDER + 3 so the order is a run-time value). A new step size rescales `D` (`_rescaled`), and is applied at the
start of the next attempt: the stepping loop's next time is the method's proposal clipped to the time budget, and
either is served the same way. Under `jax.vmap` with `axis_name`, a Jacobian or a factorisation is formed where any
run of the batch needs it, each run taking it only where it asked (`ChordESDIRK` does the same).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.lax.linalg import lu, triangular_solve
from jaxtyping import Array, Bool, Float, Int

from ._batching import any_run
from ._stepping import Attempt, initial_step

MAX_ORDER = 5
NEWTON_MAXITER = 4
MIN_FACTOR, MAX_FACTOR = 0.2, 10.0
# The NDF coefficients kappa of Shampine & Reichelt (order 1..5), and the constants of the method that follow.
_KAPPA = np.array([0.0, -0.1850, -1 / 9, -0.0823, -0.0415, 0.0])
_GAMMA = np.concatenate([[0.0], np.cumsum(1 / np.arange(1, MAX_ORDER + 1))])
_ALPHA = (1 - _KAPPA) * _GAMMA
_ERROR_CONST = _KAPPA * _GAMMA + 1 / np.arange(1, MAX_ORDER + 2)
_ROWS = MAX_ORDER + 3


def _rms(x):
    return jnp.sqrt(jnp.mean(x**2))


def _change_matrix(order, factor):
    """Shampine & Reichelt's matrix `R` that re-expresses `order` backward differences for a step scaled by
    `factor`, padded with the identity to MAX_ORDER + 1 rows (rows past `order` are left alone)."""
    i = jnp.arange(1, MAX_ORDER + 1)[:, None]
    j = jnp.arange(1, MAX_ORDER + 1)[None, :]
    m = jnp.zeros((MAX_ORDER + 1, MAX_ORDER + 1)).at[0].set(1.0).at[1:, 1:].set((i - 1 - factor * j) / i)
    index = jnp.arange(MAX_ORDER + 1)
    inside = (index[:, None] <= order) & (index[None, :] <= order)
    return jnp.where(inside, jnp.cumprod(m, axis=0), jnp.eye(MAX_ORDER + 1))


def _rescaled(D, order, factor):
    """The differences `D` of a step `h` re-expressed for the step `factor h` (exact for the interpolating
    polynomial of degree `order`)."""
    ru = _change_matrix(order, factor) @ _change_matrix(order, 1.0)
    head = ru.T @ D[: MAX_ORDER + 1]
    return jnp.where(factor == 1, D, D.at[: MAX_ORDER + 1].set(head))


def _lu_solve(factors, permutation, b):
    """`A^-1 b` from `P A = L U` (`jax.lax.linalg.lu`: `factors` holds L below the diagonal and U on and above it).
    With the permutation kept from the factorisation: `jax.scipy.linalg.lu_solve` turns the pivots into it at every
    solve, more than the two triangular solves themselves cost on a small system."""
    x = b[permutation][:, None]
    x = triangular_solve(factors, x, left_side=True, lower=True, unit_diagonal=True)
    return triangular_solve(factors, x, left_side=True, lower=False)[:, 0]


class BDFState(eqx.Module):
    """The method's state between attempts: the differences `D` in units of the step `h`, the order, the number of
    steps taken at this `h` and order, `J` and the factorisation of `I - c_lu J`, whether `J` was formed for the
    present step (`fresh`; it is formed again only where the iterations fail on an old one), and the work of the
    last attempt in gradient evaluations (one per field evaluation, one per Jacobian column)."""

    D: Float[Array, "rows n"]
    h: Float[Array, ""]
    order: Int[Array, ""]
    equal_steps: Int[Array, ""]
    jacobian: Float[Array, "n n"]
    lu: Float[Array, "n n"]
    permutation: Int[Array, " n"]
    c_lu: Float[Array, ""]
    fresh: Bool[Array, ""]
    evaluations: Int[Array, ""]


class BDFInterpolation(eqx.Module):
    """The step's dense output: the Newton backward-difference polynomial of degree `order` through the new point
    and the `order` before it, `h` apart."""

    t1: Float[Array, ""]
    h: Float[Array, ""]
    order: Int[Array, ""]
    D: Float[Array, "rows n"]
    unravel: object = eqx.field(static=True)

    def evaluate(self, t):
        k = jnp.arange(MAX_ORDER)
        x = (t - (self.t1 - self.h * k)) / (self.h * (1 + k))
        p = jnp.where(k < self.order, jnp.cumprod(x), 0.0)
        return self.unravel(self.D[0] + p @ self.D[1 : MAX_ORDER + 1])


class BDF(eqx.Module):
    """The variable-order BDF method. `rtol`, `atol`: the error test, componentwise in the RMS norm as scipy's.
    `axis_name`: the `jax.vmap` axis of a batch of runs (None: unbatched). `linear_solver`: None for a dense
    Jacobian (Jacobian-vector products through JAX: for the flow, Hessian-vector products) kept across steps and
    an LU factorisation; or a lineax solver (GMRES) for the systems `(I - c J) x = r` on Jacobian-vector products,
    with no matrix formed, at any parameter count (the attempt's work then counts field evaluations only, not the
    Jacobian-vector products of GMRES)."""

    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    axis_name: str | None = eqx.field(static=True, default=None)
    linear_solver: lx.AbstractLinearSolver | None = None

    def start(self, field, t0, t_max, y0):
        """Order 1 from `y0`, with Hairer's first step for an order-1 method (`D[1] = h0 f(t0, y0)`); `J` is formed
        by the first attempt. Returns the first step's end, the state and the work of the start."""
        h0 = initial_step(field, t0, t_max, y0, self.rtol, self.atol, error_order=2) - t0
        flat, _ = ravel_pytree(y0)
        n = flat.size
        f0 = ravel_pytree(field(t0, y0))[0]
        D = jnp.zeros((_ROWS, n), flat.dtype).at[0].set(flat).at[1].set(h0 * f0)
        m = n if self.linear_solver is None else 0  # no matrix kept where matrix-free
        zeros = jnp.zeros((m, m), flat.dtype)
        state = BDFState(D=D, h=jnp.asarray(h0, flat.dtype), order=jnp.asarray(1), equal_steps=jnp.asarray(0),
                         jacobian=zeros, lu=zeros, permutation=jnp.zeros(m, jnp.int32),
                         c_lu=jnp.asarray(jnp.nan, flat.dtype), fresh=jnp.asarray(False), evaluations=jnp.asarray(0))
        return t0 + h0, state, 2

    def attempt(self, field, t, t_next, y, state: BDFState) -> Attempt:
        flat_y, unravel = ravel_pytree(y)
        n = flat_y.size
        alpha, gamma, error_const = (jnp.asarray(a) for a in (_ALPHA, _GAMMA, _ERROR_CONST))
        newton_tol = jnp.maximum(10 * jnp.finfo(flat_y.dtype).eps / self.rtol, jnp.minimum(0.03, self.rtol**0.5))

        def flat_field(s, v):
            return ravel_pytree(field(s, unravel(v)))[0]

        # A step the loop asked for differs from the method's own only by the rounding of `t + h`, unless it was
        # cut short (the time budget) or the method changed it (then `D` is rescaled).
        h = t_next - t
        same = jnp.abs(h - state.h) <= 4 * jnp.finfo(flat_y.dtype).eps * (jnp.abs(t) + jnp.abs(h))
        h = jnp.where(same, state.h, h)
        order = state.order
        D = _rescaled(state.D, order, h / state.h)
        equal_steps = jnp.where(same, state.equal_steps, 0)
        t_new = t_next
        rows = jnp.arange(_ROWS)
        y_predict = jnp.sum(jnp.where((rows <= order)[:, None], D, 0.0), axis=0)
        scale = self.atol + self.rtol * jnp.abs(y_predict)
        weights = jnp.where(jnp.arange(1, MAX_ORDER + 1) <= order, gamma[1:], 0.0)
        psi = weights @ D[1 : MAX_ORDER + 1] / alpha[order]
        c = h / alpha[order]

        def newton(solve):
            """scipy's `solve_bdf_system`: chord iterations for `d`, the correction to the predictor, with
            `solve(r)` for `(I - c J)^-1 r`, stopped on a contraction rate that will not reach `newton_tol` within
            NEWTON_MAXITER iterations."""

            def going(carry):
                k, _, _, _, converged, failed = carry
                return ~converged & ~failed & (k < NEWTON_MAXITER)

            def iterate(carry):
                k, v, d, size_old, _, _ = carry
                f = flat_field(t_new, v)
                dv = solve(c * f - psi - d)
                size = _rms(dv / scale)
                rate = size / size_old
                slow = (k >= 1) & ((rate >= 1) | (rate ** (NEWTON_MAXITER - k) / (1 - rate) * size > newton_tol))
                bad = ~jnp.all(jnp.isfinite(f)) | ~jnp.isfinite(size) | slow
                v, d = jnp.where(bad, v, v + dv), jnp.where(bad, d, d + dv)
                converged = ~bad & ((size == 0) | ((k >= 1) & (rate / (1 - rate) * size < newton_tol)))
                return k + 1, v, d, size, converged, bad

            start = (jnp.asarray(0), y_predict, jnp.zeros(n, flat_y.dtype), jnp.asarray(jnp.inf, flat_y.dtype),
                     jnp.asarray(False), jnp.asarray(False))
            k, v, d, _, converged, _ = jax.lax.while_loop(going, iterate, start)
            return v, d, converged, k

        def refreshed(s: BDFState, form_jacobian):
            """`s` with `J` formed at `(t_new, y_predict)` where `form_jacobian`, and `I - c J` factorised again
            where `c` moved (or `J` is new)."""
            jacobian = jax.lax.cond(
                any_run(form_jacobian, self.axis_name),
                lambda: jnp.where(form_jacobian, jax.jacfwd(lambda v: flat_field(t_new, v))(y_predict), s.jacobian),
                lambda: s.jacobian)
            refactor = form_jacobian | (c != s.c_lu)

            def factorised():
                factors, _, permutation = lu(jnp.eye(n, dtype=flat_y.dtype) - c * jacobian)
                return jnp.where(refactor, factors, s.lu), jnp.where(refactor, permutation, s.permutation)

            factors, permutation = jax.lax.cond(any_run(refactor, self.axis_name), factorised,
                                                 lambda: (s.lu, s.permutation))
            return BDFState(D=s.D, h=s.h, order=s.order, equal_steps=s.equal_steps, jacobian=jacobian, lu=factors,
                            permutation=permutation, c_lu=jnp.where(refactor, c, s.c_lu), fresh=s.fresh | form_jacobian,
                            evaluations=s.evaluations + jnp.where(form_jacobian, n, 0))

        def again(carry):
            trip, s, _, _, converged, _, _ = carry
            return (trip == 0) | ((trip == 1) & ~converged & ~s.fresh)

        def trip(carry):
            """First trip on the kept `J` (formed here if there is none yet); a second, on a `J` formed here, where
            the first failed on an old one."""
            index, s, _, _, _, _, evaluations = carry
            s = refreshed(s, jnp.where(index == 0, jnp.isnan(s.c_lu), True))
            v, d, converged, k = newton(lambda r: _lu_solve(s.lu, s.permutation, r))
            return index + 1, s, v, d, converged, k, evaluations + k

        if self.linear_solver is None:
            start = eqx.tree_at(lambda s: s.evaluations, state, jnp.asarray(0))
            zero = jnp.asarray(0)
            _, s, y_new, d, converged, iterations, evaluations = jax.lax.while_loop(
                again, trip, (zero, start, y_predict, jnp.zeros(n, flat_y.dtype), jnp.asarray(False), zero, zero))
        else:
            # Matrix-free: `J v` is a Jacobian-vector product linearised at this step's predictor (as cheap as
            # keeping an older point), so there is no `J` to keep or to form again.
            _, tangent = jax.linearize(lambda v: flat_field(t_new, v), y_predict)
            operator = lx.FunctionLinearOperator(lambda x: x - c * tangent(x),
                                                 jax.ShapeDtypeStruct((n,), flat_y.dtype))
            y_new, d, converged, iterations = newton(
                lambda r: lx.linear_solve(operator, r, self.linear_solver, throw=False).value)
            s, evaluations = eqx.tree_at(lambda s: s.evaluations, state, jnp.asarray(0)), iterations

        safety = 0.9 * (2 * NEWTON_MAXITER + 1) / (2 * NEWTON_MAXITER + iterations)
        scale = self.atol + self.rtol * jnp.abs(y_new)
        error_norm = _rms(error_const[order] * d / scale)
        # A step too small to move time is not kept: the loop then stops on the step size.
        keep = converged & (error_norm <= 1) & (h > 0)

        # Rejected: half the step where the iterations failed, else the step the error estimate asks for.
        shrink = jnp.maximum(MIN_FACTOR, safety * error_norm ** (-1.0 / (order + 1)))
        reject_factor = jnp.where(converged & ~jnp.isnan(shrink), shrink, 0.5)

        # Kept: the differences of the new point, then (after order + 1 steps at this step and order) the order
        # among order - 1, order, order + 1 whose error estimate allows the longest next step.
        updated = D.at[order + 2].set(d - D[order + 1]).at[order + 1].set(d)
        suffix = (rows[None, :] >= rows[:, None]) & (rows[None, :] <= order + 1) & (rows[:, None] <= order)
        updated = jnp.where(suffix, 1.0, 0.0) @ updated + jnp.where((rows > order)[:, None], updated, 0.0)
        equal_steps = equal_steps + 1
        error_m = jnp.where(order > 1, _rms(error_const[order - 1] * updated[order] / scale), jnp.inf)
        above = jnp.minimum(order + 1, MAX_ORDER)  # (unused at MAX_ORDER)
        error_p = jnp.where(order < MAX_ORDER, _rms(error_const[above] * updated[order + 2] / scale), jnp.inf)
        factors = jnp.stack([error_m, error_norm, error_p]) ** (-1.0 / (order + jnp.arange(3)))
        select = equal_steps >= order + 1
        new_order = jnp.where(select, order + jnp.argmax(factors) - 1, order)
        accept_factor = jnp.where(select, jnp.minimum(MAX_FACTOR, safety * jnp.max(factors)), 1.0)

        next_state = BDFState(
            D=jnp.where(keep, updated, D), h=h, order=jnp.where(keep, new_order, order),
            equal_steps=jnp.where(keep, jnp.where(select, 0, equal_steps), 0), jacobian=s.jacobian, lu=s.lu,
            permutation=s.permutation, c_lu=s.c_lu, fresh=s.fresh & ~keep,
            evaluations=s.evaluations + evaluations)
        t_proposed = jnp.where(keep, t_new + h * accept_factor, t + h * reject_factor)
        interpolation = BDFInterpolation(t1=t_new, h=h, order=order, D=updated, unravel=unravel)
        return Attempt(keep=keep, t1=t_new, y=unravel(y_new), t_next=t_proposed, state=next_state,
                       interpolation=interpolation, work=next_state.evaluations)
