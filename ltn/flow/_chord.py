"""Kvaerno's ESDIRK methods with chord stage solves on a Jacobian kept across stages and steps.

Every implicit stage of an ESDIRK method solves `k = f(z + h gamma k)` with the same `h gamma`, so one
factorisation of `I - h gamma J` serves all stages of a step, and, while the path's curvature changes slowly, many
steps (the reuse that makes BDF codes such as LSODA cheap per step). Here `J` is formed (a batch of
Jacobian-vector products through JAX: for the flow, Hessian-vector products) and factorised only where the chord
iteration asks for it: at the start, after a step whose iterations converged slowly, and once more within a step
whose iterations failed on an old `J`; `I - h gamma J` is factorised again where `h` has moved more than
`REFACTOR_RATIO` from the step size of the factorisation. The stages are one loop (not unrolled), so the program
is small. The tableaus, the dense output and the step-size controller are diffrax's (docs/theory.md §9).

Under `jax.vmap` with `axis_name`, a refresh runs where any run of the batch needs it (each run keeps its own
`J`, and takes the new one only where it asked): a batched `lax.cond` would form `J` at every step of every run.
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import lu_factor, lu_solve
from jaxtyping import Array, Bool, Float, Int

from ._batching import any_run

# The stage solve has converged where the estimated error left in the stage value, `rate / (1 - rate) |dz|`, is
# at most CHORD_KAPPA of the step-size controller's tolerance (Hairer & Wanner's test for simplified Newton).
CHORD_KAPPA = 0.05
CHORD_MAX_ITERATIONS = 7
# A contraction rate at or above this is no progress. With a `J` formed at the step's start, an update that has
# stopped shrinking while within FLOOR_RTOL (|k| + FLOOR_ATOL) of the stage value is round-off (a far
# classification path carries a relative round-off of ~ -log L eps in its field): the stage is accepted there,
# as by `StageNewton`'s test; otherwise the iteration fails.
STAGNATION_RATE, FLOOR_RTOL, FLOOR_ATOL = 0.9, 1e-3, 1e-3
# After a step whose iterations contracted more slowly than this, `J` is formed again for the next step.
SLOW_RATE = 0.3
REFACTOR_RATIO = 0.2
_TABLEAUS = {"kvaerno5": diffrax.Kvaerno5, "kvaerno3": diffrax.Kvaerno3}


class ChordState(eqx.Module):
    """What a step hands the next: the field at its end (FSAL), `J` and the inverse of `I - h_lu gamma J`,
    whether `J` was formed at the current point (`fresh`) or should be formed again before the next step
    (`stale`), and the work of the step that made it, in gradient evaluations (one per field evaluation, one per
    Jacobian column)."""

    f0: Float[Array, " n"]
    jacobian: Float[Array, "n n"]
    inverse: Float[Array, "n n"]
    h_lu: Float[Array, ""]
    fresh: Bool[Array, ""]
    stale: Bool[Array, ""]
    evaluations: Int[Array, ""]


def _lower(rows, size: int) -> np.ndarray:
    """The strictly lower-triangular stage matrix of a tableau's rows (row i holds stage i's coefficients)."""
    matrix = np.zeros((size, size))
    for i, row in enumerate(rows):
        matrix[i + 1, : len(row)] = row
    return matrix


class ChordESDIRK(diffrax.AbstractAdaptiveSolver):
    """Kvaerno's ESDIRK method `name` ("kvaerno5" or "kvaerno3") with chord stage solves on a dense, reused
    Jacobian. `rtol`, `atol`: the step-size controller's tolerances, which scale the stage solves' test.
    `axis_name`: the `jax.vmap` axis of a batch of runs, where refreshes are shared (None: unbatched)."""

    name: str = eqx.field(static=True)
    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    axis_name: str | None = eqx.field(static=True, default=None)

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def _method(self):
        return _TABLEAUS[self.name]

    def order(self, terms):
        return self._method()().order(terms)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def _inverse(self, jacobian, h):
        """`(I - h gamma J)^-1`, from an LU factorisation: the chord iteration needs only an approximate solve
        (its residual is exact), and a product with the inverse costs a fraction of two triangular solves."""
        gamma = float(self._method().tableau.a_diagonal[-1])
        eye = jnp.eye(jacobian.shape[0], dtype=jacobian.dtype)
        return lu_solve(lu_factor(eye - h * gamma * jacobian), eye)

    def init(self, terms, t0, t1, y0, args) -> ChordState:
        """The field at the start; `J` is formed by the first step (`stale`), so one copy of that code serves."""
        flat, unravel = ravel_pytree(y0)
        zeros = jnp.zeros((flat.size, flat.size), flat.dtype)
        return ChordState(f0=ravel_pytree(terms.vf(t0, y0, args))[0], jacobian=zeros, inverse=zeros,
                          h_lu=jnp.asarray(t1 - t0, flat.dtype), fresh=jnp.asarray(False), stale=jnp.asarray(True),
                          evaluations=jnp.asarray(1))

    def step(self, terms, t0, t1, y0, args, solver_state: ChordState, made_jump):
        del made_jump
        tableau = self._method().tableau
        stages = len(tableau.a_diagonal)
        gamma = float(tableau.a_diagonal[-1])
        A = jnp.asarray(_lower(tableau.a_lower, stages))
        P = jnp.asarray(_lower(tableau.a_predictor, stages))
        c = jnp.asarray(np.concatenate([[0.0], tableau.c]))
        b_sol, b_error = jnp.asarray(tableau.b_sol), jnp.asarray(tableau.b_error)

        flat0, unravel = ravel_pytree(y0)
        n = flat0.size
        h = t1 - t0
        scale = self.atol + self.rtol * jnp.abs(flat0)

        def field(t, v):
            return ravel_pytree(terms.vf(t, unravel(v), args))[0]

        def stage_solve(i, K, inverse, fresh, ok):
            """Stage i: `k = f(z + h gamma k)` by chord iterations from the tableau's predictor (none where an
            earlier stage failed, `~ok`). Returns the stage, whether it converged, its largest contraction rate and
            its field evaluations."""
            z = flat0 + h * (A[i] @ K)
            ti = t0 + c[i] * h

            def not_done(carry):
                m, _, _, _, done, failed = carry
                return ~done & ~failed

            def iterate(carry):
                m, k, size_prev, rate_max, _, _ = carry
                g = k - field(ti, z + h * gamma * k)
                dk = inverse @ g
                k_new = k - dk
                size = jnp.max(jnp.abs(h * gamma * dk) / scale)
                rate = jnp.where(m >= 1, size / size_prev, 0.0)
                converged = jnp.where(m >= 1, (rate < 1) & (rate / (1 - rate) * size <= CHORD_KAPPA),
                                      size <= CHORD_KAPPA)
                stagnant = (m >= 1) & (rate >= STAGNATION_RATE)
                at_floor = jnp.all(jnp.abs(dk) <= FLOOR_RTOL * (jnp.abs(k_new) + FLOOR_ATOL))
                converged = converged | (stagnant & fresh & at_floor)
                failed = ~converged & (stagnant | (m + 1 >= CHORD_MAX_ITERATIONS) | ~jnp.all(jnp.isfinite(k_new)))
                return m + 1, k_new, size, jnp.maximum(rate_max, rate), converged, failed

            start = (jnp.zeros((), int), P[i] @ K, jnp.asarray(jnp.inf, flat0.dtype), jnp.zeros((), flat0.dtype),
                     jnp.asarray(False), ~ok)
            m, k, _, rate_max, converged, _ = jax.lax.while_loop(not_done, iterate, start)
            return k, converged, rate_max, m

        def attempt(inverse, fresh):
            """All stages on one factorisation: the stages, whether every stage converged, the largest rate, and
            the field evaluations."""

            def body(i, carry):
                K, ok, rate_max, evaluations = carry
                k, converged, rate, m = stage_solve(i, K, inverse, fresh, ok)
                keep = ok & converged
                return K.at[i].set(jnp.where(keep, k, K[i])), keep, jnp.maximum(rate_max, rate), evaluations + m

            K = jnp.zeros((stages, n), flat0.dtype).at[0].set(solver_state.f0)
            return jax.lax.fori_loop(1, stages, body, (K, jnp.asarray(True), jnp.zeros((), flat0.dtype),
                                                       jnp.zeros((), int)))

        def refresh(state: ChordState, form_jacobian, refactor):
            """`state` with `J` formed at `(t0, y0)` where `form_jacobian`, and `I - h gamma J` factorised again
            where `refactor` (or a new `J`); each run of a batch takes only what it asked for."""
            jacobian = jax.lax.cond(
                any_run(form_jacobian, self.axis_name),
                lambda: jnp.where(form_jacobian, jax.jacfwd(lambda v: field(t0, v))(flat0), state.jacobian),
                lambda: state.jacobian)
            refactor = refactor | form_jacobian

            inverse = jax.lax.cond(any_run(refactor, self.axis_name),
                                   lambda: jnp.where(refactor, self._inverse(jacobian, h), state.inverse),
                                   lambda: state.inverse)
            return ChordState(f0=state.f0, jacobian=jacobian, inverse=inverse,
                              h_lu=jnp.where(refactor, h, state.h_lu), fresh=state.fresh | form_jacobian,
                              stale=state.stale & ~form_jacobian,
                              evaluations=state.evaluations + jnp.where(form_jacobian, n, 0))

        def again(carry):
            trip, state, _, ok, _, _ = carry
            return (trip == 0) | ((trip == 1) & ~ok & ~state.fresh)

        def trip(carry):
            """First trip: `J` formed where stale, factorised again where `h` moved. Second (where the first
            failed on an old `J`): both, here."""
            index, state, _, _, _, evaluations = carry
            first = index == 0
            moved = jnp.abs(h / state.h_lu - 1) > REFACTOR_RATIO
            state = refresh(state, jnp.where(first, state.stale, True), jnp.where(first, moved, True))
            K, ok, rate, stage_evaluations = attempt(state.inverse, state.fresh)
            return index + 1, state, K, ok, rate, evaluations + stage_evaluations

        start = eqx.tree_at(lambda s: s.evaluations, solver_state, jnp.zeros((), int))
        K0 = jnp.zeros((stages, n), flat0.dtype)
        _, state, K, ok, rate, evaluations = jax.lax.while_loop(
            again, trip, (jnp.zeros((), int), start, K0, jnp.asarray(False), jnp.zeros((), flat0.dtype),
                          jnp.zeros((), int)))

        y1 = flat0 + h * (b_sol @ K)
        y_error = jnp.where(ok, h * (b_error @ K), jnp.inf)
        # Stiffly accurate: the last stage is the field at y1.
        new_state = ChordState(f0=K[-1], jacobian=state.jacobian, inverse=state.inverse,
                               h_lu=state.h_lu, fresh=jnp.asarray(False), stale=rate > SLOW_RATE,
                               evaluations=state.evaluations + evaluations)
        ks = jax.vmap(unravel)(h * K)
        dense_info = dict(y0=y0, y1=unravel(y1), k=ks)
        result = diffrax.RESULTS.where(ok, diffrax.RESULTS.successful, diffrax.RESULTS.nonlinear_divergence)
        return unravel(y1), unravel(y_error), dense_info, new_state, result

