"""One run's adaptive solve, stepped by ltn's own loop around a stepper: a method with its step-size control,
which attempts a step, says whether to keep it and proposes the next. `ControlledStep` is one made of diffrax's
pieces: the method's step and dense output (`solver.step`, `solver.interpolation_cls`) and the step-size controller
(`PIDController.init`, `adapt_step_size`), as in `diffeqsolve`'s own loop; the BDF method (`_bdf`) is another, with
its own control of step size and order.

Why not `diffeqsolve`: a classification path is recorded at levels of `-log L` (a tenth of a decade apart), which
no `SaveAt` expresses; the step budget counts every attempted step of a run that continues another; and the
program calls no host callback (diffrax 0.7.2 checks `SaveAt(ts=...)` at run time through one, and JAX never
writes a program that calls back into Python to its persistent compilation cache).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._lockstep import FINISHED, RUNNING, STEP_BUDGET, STEP_UNDERFLOW, TIME_BUDGET
from ._objective import tree_nonfinite

BISECTIONS = 60  # halvings of a step to locate a crossing: below the spacing of float64 times


class Stepped(NamedTuple):
    """End of one run: its time and state, the controller's next step (`h`), why it stopped, its step counts, its
    work (the sum of `step_work` over the method's start and every attempted step), and the records at the
    requested times and at the requested levels (`inf` where not reached)."""

    t: Float[Array, ""]
    y: object
    h: Float[Array, ""]
    stop: Int[Array, ""]
    steps: Int[Array, ""]
    accepted: Int[Array, ""]
    work: Int[Array, ""]
    records: object
    level_records: object


class Attempt(NamedTuple):
    """One attempted step from `t`: whether it is kept, its end time and point, the next end time the method
    proposes, the state for the next attempt (whether this one is kept or not), the dense output on `[t, t1]` (an
    object with `evaluate(t)`), and the attempt's work in gradient evaluations."""

    keep: Bool[Array, ""]
    t1: Float[Array, ""]
    y: object
    t_next: Float[Array, ""]
    state: object
    interpolation: object
    work: Int[Array, ""]


def initial_step(field: Callable, t0, t_max, y0, rtol, atol, error_order) -> Float[Array, ""]:
    """Hairer's first step for a method whose local error is of order `error_order` (diffrax's
    `PIDController.init`, one extra field evaluation); returns its end time."""
    term = diffrax.ODETerm(lambda t, y, args: field(t, y))
    t_next, _ = diffrax.PIDController(rtol=rtol, atol=atol).init(
        term, t0, t_max, y0, None, None, lambda terms, t, y, args: terms.vf(t, y, args), error_order)
    return t_next


class ControlledStep(eqx.Module):
    """A diffrax method with diffrax's PID step-size controller as a stepper. `step_work(solver_state)`: the
    gradient evaluations of the attempt (or start) that returned `solver_state`."""

    method: diffrax.AbstractAdaptiveSolver
    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    step_work: Callable = eqx.field(static=True)

    def _parts(self, field):
        term = diffrax.ODETerm(lambda t, y, args: field(t, y))
        return term, diffrax.PIDController(rtol=self.rtol, atol=self.atol), self.method.error_order(term)

    def start(self, field, t0, t_max, y0):
        """The first step's end, the state, and the work of the start."""
        term, controller, error_order = self._parts(field)
        t_next, controller_state = controller.init(term, t0, t_max, y0, None, None, self.method.func, error_order)
        solver_state = self.method.init(term, t0, t_next, y0, None)
        return t_next, (solver_state, controller_state), self.step_work(solver_state)

    def attempt(self, field, t, t_next, y, state) -> Attempt:
        term, controller, error_order = self._parts(field)
        solver_state, controller_state = state
        y1, y_error, dense, new_solver_state, _ = self.method.step(term, t, t_next, y, None, solver_state, False)
        y_error = jax.tree_util.tree_map(lambda e: jnp.where(jnp.isnan(e), jnp.inf, e), y_error)
        keep, _, proposed, _, controller_state, _ = controller.adapt_step_size(
            t, t_next, y, y1, None, y_error, error_order, controller_state)
        keep = keep & ~tree_nonfinite(y1)
        interpolation = self.method.interpolation_cls(t0=t, t1=t_next, **dense)
        return Attempt(keep=keep, t1=t_next, y=y1, t_next=proposed,
                       state=(_where(keep, new_solver_state, solver_state), controller_state),
                       interpolation=interpolation, work=self.step_work(new_solver_state))


class _Loop(NamedTuple):
    t: Float[Array, ""]
    t_next: Float[Array, ""]
    y: object
    stepper_state: object
    stop: Int[Array, ""]
    steps: Int[Array, ""]
    accepted: Int[Array, ""]
    work: Int[Array, ""]
    next_save: Int[Array, ""]
    next_level: Int[Array, ""]
    records: object
    level_records: object


def _where(condition, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(condition, x, y), a, b)


def _first_at_or_below(value: Callable, t0, t1, level, needed=True):
    """The time in `(t0, t1]` where `value(t)` first reaches `level`, by bisection (`value(t0) > level >=
    value(t1)`; the returned time has `value <= level`). Where not `needed`, `t1` without a single evaluation:
    a loop whose trip count depends on `needed`, so that a batch of runs none of which crossed (almost every
    step) pays nothing (a batched `lax.cond` would evaluate both branches)."""

    def halve(state):
        i, lo, hi = state
        mid = 0.5 * (lo + hi)
        below = value(mid) <= level
        return i + 1, jnp.where(below, lo, mid), jnp.where(below, mid, hi)

    return jax.lax.while_loop(lambda state: needed & (state[0] < BISECTIONS), halve, (0, t0, t1))[2]


def stepped_solve(
    field: Callable,
    y0,
    t0: Float[Array, ""],
    *,
    stepper,
    t_max: Float[Array, ""],
    max_steps: Int[Array, ""],
    record: Callable,
    save_ts: Float[Array, " k"],
    levels: Float[Array, " m"],
    level_of: Callable,
    crossings: Callable,
    settled: Callable,
    active: Bool[Array, ""],
    first_record,
    settled_at_start: Bool[Array, ""],
) -> Stepped:
    """Integrate `dy/dt = field(t, y)` from `(t0, y0)` with `stepper` (`ControlledStep` or `BDF`: `start(field,
    t0, t_max, y0) -> (t_next, state, work)` and `attempt(field, t, t_next, y, state) -> Attempt`) until one of
    `crossings(y)` (a vector) reaches 0 from above (the crossing located on the dense output, and the run ended
    exactly there), `settled(t, y, wanted)` holds at the end of a kept step (`wanted`: whether the answer counts,
    so that a costly test can be skipped where it does not), `t_max`, `max_steps` attempted steps, or a step size
    that no longer moves time.

    `record(t, y)` is saved at each of `save_ts` (increasing, `save_ts[0] == 0`; those up to `t0` are left `inf`
    except the first on a run from 0) and where `level_of(y)` (decreasing along the path) first reaches each of
    `levels` (decreasing; those reached at the start are left `inf`). `first_record` is `record(t0, y0)` and
    `settled_at_start` the `settled` test there, both given by the caller, who has them from the previous leg or
    from one program shared by every leg (a copy of each in every leg's program costs compile time). A run not
    `active`, or one that starts settled or crossed, ends at its start with 0 steps.
    """
    t_next, stepper_state, start_work = stepper.start(field, t0, t_max, y0)
    t_next = jnp.minimum(t_next, t_max)  # for every stepper: the first step never passes the budget

    done = ~active | settled_at_start | jnp.any(crossings(y0) <= 0)
    stop = jnp.where(done, FINISHED, RUNNING)
    slots, level_slots = save_ts.shape[0], levels.shape[0]

    def empty(size, keep_first):
        return jax.tree_util.tree_map(
            lambda leaf: jnp.full((size + 1, *leaf.shape), jnp.inf, leaf.dtype).at[0].set(
                jnp.where(keep_first, leaf, jnp.inf)), first_record)

    # One spare slot at the end takes the writes of nothing to save (a scatter needs an index).
    records = empty(slots, active & (t0 == 0))
    level_records = empty(level_slots, False)
    next_save = jnp.maximum(1, jnp.sum(save_ts <= t0))
    next_level = jnp.sum(level_of(y0) <= levels)

    # A rejected attempt saves nothing (`keep` in the loop's test): the records need no selection after it.
    def save_records(s: _Loop, keep, t_end, y_end, at):
        """Save each requested time and each level passed in `(s.t, t_end]`, one per iteration: one copy of
        `record` in the program serves both (each copy costs compile time)."""
        level_end = level_of(y_end) if level_slots else None

        def time_due(index):
            return keep & (index < slots) & (save_ts[jnp.minimum(index, slots - 1)] <= t_end)

        def level_due(index):
            if not level_slots:
                return jnp.asarray(False)
            return keep & (index < level_slots) & (level_end <= levels[jnp.minimum(index, level_slots - 1)])

        def save(c):
            index, records, level_index, level_records = c
            by_time = time_due(index)
            ts = save_ts[jnp.minimum(index, slots - 1)]
            if level_slots:
                # Located only where a level is what this iteration saves (for a batch: where any run's is).
                t_level = _first_at_or_below(lambda t: level_of(at(t)), s.t, t_end,
                                             levels[jnp.minimum(level_index, level_slots - 1)],
                                             ~by_time & level_due(level_index))
                ts = jnp.where(by_time, ts, t_level)
            new = record(ts, at(ts))

            def written(tree, slot):
                return jax.tree_util.tree_map(lambda old, value: old.at[slot].set(value), tree, new)

            return (index + by_time, written(records, jnp.where(by_time, index, slots)), level_index + ~by_time,
                    written(level_records, jnp.where(by_time, level_slots, level_index)))

        return jax.lax.while_loop(lambda c: time_due(c[0]) | level_due(c[2]), save,
                                  (s.next_save, s.records, s.next_level, s.level_records))

    def step(s: _Loop) -> _Loop:
        attempt = stepper.attempt(field, s.t, s.t_next, s.y, s.stepper_state)
        keep, t1, y1 = attempt.keep, attempt.t1, attempt.y

        def at(t):
            return _where(t == t1, y1, attempt.interpolation.evaluate(t))

        crossed = keep & jnp.any(crossings(y1) <= 0)
        t_cross = _first_at_or_below(lambda t: jnp.min(crossings(at(t))), s.t, t1, 0.0, crossed)
        t_end = jnp.where(crossed, t_cross, t1)
        y_end = _where(crossed, at(t_cross), y1)
        next_save, records, next_level, level_records = save_records(s, keep, t_end, y_end, at)

        steps = s.steps + 1
        t = jnp.where(keep, t_end, s.t)
        stop = jnp.where(keep & (crossed | settled(t_end, y_end, keep & (s.stop == RUNNING))), FINISHED, RUNNING)
        stop = jnp.where((stop == RUNNING) & (t >= t_max), TIME_BUDGET, stop)
        stop = jnp.where((stop == RUNNING) & ~keep & (attempt.t_next <= s.t), STEP_UNDERFLOW, stop)
        stop = jnp.where((stop == RUNNING) & (steps >= max_steps), STEP_BUDGET, stop)
        return _Loop(
            t=t, t_next=jnp.minimum(attempt.t_next, t_max), y=_where(keep, y_end, s.y),
            stepper_state=attempt.state,
            stop=stop, steps=steps, accepted=s.accepted + keep, work=s.work + attempt.work,
            next_save=next_save, records=records, next_level=next_level, level_records=level_records)

    zero = jnp.zeros((), int)
    state = _Loop(t=t0, t_next=t_next, y=y0, stepper_state=stepper_state,
                  stop=stop, steps=zero, accepted=zero, work=jnp.asarray(start_work), next_save=next_save,
                  next_level=next_level,
                  records=records, level_records=level_records)
    state = jax.lax.while_loop(lambda s: s.stop == RUNNING, step, state)
    trim = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf[:-1], tree)  # noqa: E731
    return Stepped(t=state.t, y=state.y, h=state.t_next - state.t, stop=state.stop, steps=state.steps,
                   accepted=state.accepted, work=state.work, records=trim(state.records),
                   level_records=trim(state.level_records))
