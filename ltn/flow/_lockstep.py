"""A batch of independent autonomous ODEs integrated in lockstep by an explicit Runge-Kutta pair from diffrax.

Every run keeps its own time, step size and step-size controller, so a run in a batch takes exactly the steps it
takes alone: no run pays for the stiffest member (a stacked ODE with one shared step does, measured 2.3x the steps
of an average run on 64 Gaussian initialisations). One loop iteration attempts one step of every unfinished run;
the work of a step is a handful of fused array operations over the whole batch, which is what makes a batch cheap
on a CPU. The method is diffrax's (Butcher tableau and dense-output interpolation of `Tsit5`, `Dopri5`,
`Dopri8`); the controller is diffrax's default integral controller (`PIDController` with `icoeff=1`) and its
initial step is Hairer's rule as in diffrax.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

SAFETY, FACTOR_MIN, FACTOR_MAX = 0.9, 0.2, 10.0
TAIL_LANES = 8  # the narrowest last phase of a large batch (see the end of `lockstep_solve`)

# Why a run stopped (`Lockstep.stop`): still running, its `finished` test, its time budget, the step budget,
# a non-finite vector field at its current point, or a step size that no longer moves its time.
RUNNING, FINISHED, TIME_BUDGET, STEP_BUDGET, NONFINITE_FIELD, STEP_UNDERFLOW = range(6)
PADDING = -1  # an empty lane of a phase (never written back)


class Lockstep(NamedTuple):
    """End state of a batch: per run, its time, state and vector field there, why it stopped, step counts, and the
    records saved at its requested times (`inf` where a run stopped before a time)."""

    t: Float[Array, " batch"]
    y: Float[Array, "batch p"]
    f: Float[Array, "batch p"]
    h: Float[Array, " batch"]
    stop: Int[Array, " batch"]
    steps: Int[Array, " batch"]
    accepted: Int[Array, " batch"]
    records: object


class _Loop(NamedTuple):
    t: Float[Array, " lanes"]
    h: Float[Array, " lanes"]
    y: Float[Array, "lanes p"]
    f: Float[Array, "lanes p"]
    stop: Int[Array, " lanes"]
    steps: Int[Array, " lanes"]
    accepted: Int[Array, " lanes"]
    next_save: Int[Array, " lanes"]
    records: object
    t_max: Float[Array, " lanes"]
    save_ts: Float[Array, "lanes k"]


def lockstep_solve(
    field: Callable,
    finished: Callable,
    record: Callable,
    y0: Float[Array, "batch p"],
    *,
    solver: diffrax.AbstractERK,
    rtol,
    atol,
    t_max: Float[Array, " batch"],
    save_ts: Float[Array, "batch k"],
    max_steps,
    settled: Callable | None = None,
    settle_every: int = 1,
    hint: Callable | None = None,
    t0: Float[Array, " batch"] | None = None,
    active: Array | None = None,
    start_records=None,
    settled_at_start: Array | None = None,
) -> Lockstep:
    """Integrate `dy/dt = field(y)` (batched: `field` maps `(batch, p) -> (batch, p)`) for every run until
    `finished(y, f)` (per run, at accepted points, `f = field(y)`), `t_max`, `max_steps` or a failure.
    `record(t, y)` (per run) is saved at `save_ts` (increasing per run, `save_ts[:, 0] == 0`) from the dense
    output of the step that crosses each time. Error control per run: RMS of the error scaled by
    `atol + rtol * max(|y0|, |y1|)`, as diffrax's `PIDController`. `settled(y, f, wanted)` is a second, costlier
    stopping test (per run, batched like `field`; `wanted` marks the runs whose answer counts), tried at the start
    and at accepted points every `settle_every` loop iterations, and at once where the cheap `hint(y, f)` holds.
    A run may start later than 0 (`t0`, continuing a run from where another method left it: the records of
    `save_ts <= t0` are left `inf` for the caller to fill) or not at all (`active` False: stopped as FINISHED,
    nothing recorded). `start_records` (`record` at the start) and `settled_at_start` (`settled` there), where the
    caller has them already, spare the program a copy of either (each costs compile time). `Lockstep.h` is the
    controller's next step, which says whether stability holds it back."""
    tableau = solver.tableau
    assert tableau.fsal, "lockstep_solve needs a first-same-as-last pair"
    error_order = solver.order(None) + 1
    batch, slots = save_ts.shape
    interpolate = jax.vmap(lambda t0, t1, y0, y1, k, t: solver.interpolation_cls(
        t0=t0, t1=t1, y0=y0, y1=y1, k=k).evaluate(t))

    def rms(x):
        return jnp.sqrt(jnp.mean(x**2, axis=1))

    f0 = field(y0)
    # Hairer's initial step (diffrax's `_select_initial_step`): one extra evaluation.
    scale = atol + rtol * jnp.abs(y0)
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.where(d1 > 0, d1, 1.0))
    h0 = jnp.where(jnp.isfinite(h0), h0, 1e-6)
    d2 = rms((field(y0 + h0[:, None] * f0) - f0) / scale) / h0
    d12 = jnp.maximum(d1, d2)
    h1 = jnp.where(d12 <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / jnp.where(d12 > 0, d12, 1.0)) ** (
        1 / error_order))
    h = jnp.minimum(100 * h0, h1)
    h = jnp.where(jnp.isfinite(h) & (h > 0), h, 1e-6)

    t0 = jnp.zeros(batch, y0.dtype) if t0 is None else t0
    finite_start = jnp.all(jnp.isfinite(f0), axis=1) & jnp.all(jnp.isfinite(y0), axis=1)
    stop = jnp.where(finite_start, RUNNING, NONFINITE_FIELD)
    if active is not None:
        stop = jnp.where(active, stop, FINISHED)
    done = finished(y0, f0)
    if settled_at_start is not None:
        done = done | settled_at_start
    elif settled is not None:
        done = done | settled(y0, f0, stop == RUNNING)
    stop = jnp.where((stop == RUNNING) & done, FINISHED, stop)
    first_records = jax.vmap(record)(t0, y0) if start_records is None else start_records
    from_start = t0 == 0
    if active is not None:
        from_start = from_start & active
    # One spare slot at the end takes the writes of runs with nothing to save (a scatter needs an index).
    records = jax.tree_util.tree_map(
        lambda leaf: jnp.full((batch, slots + 1, *leaf.shape[1:]), jnp.inf, leaf.dtype).at[:, 0].set(
            jnp.where(from_start.reshape(-1, *[1] * (leaf.ndim - 1)), leaf, jnp.inf)), first_records)

    def save_crossed(s: _Loop, t1, y1, k, moved):
        """Save every requested time in (s.t, t1] of the runs that `moved`, from the step's dense output."""
        rows = jnp.arange(s.t.shape[0])

        def due(next_save):
            return moved & (next_save < slots) & (s.save_ts[rows, jnp.minimum(next_save, slots - 1)] <= t1)

        def save_one(carry):
            next_save, records = carry
            now = due(next_save)
            ts = s.save_ts[rows, jnp.minimum(next_save, slots - 1)]
            y_at = interpolate(s.t, t1, s.y, y1, k, ts)
            y_at = jnp.where((ts == t1)[:, None], y1, y_at)
            new = jax.vmap(record)(ts, y_at)
            slot = jnp.where(now, next_save, slots)
            records = jax.tree_util.tree_map(lambda old, value: old.at[rows, slot].set(value), records, new)
            return next_save + now, records

        return jax.lax.while_loop(lambda c: jnp.any(due(c[0])), save_one, (s.next_save, s.records))

    def step(carry):
        s, iteration = carry
        active = s.stop == RUNNING
        h = jnp.minimum(s.h, s.t_max - s.t)
        hh = h[:, None]
        ks = [s.f]
        for a_row in tableau.a_lower:
            ks.append(field(s.y + hh * sum(float(a) * k for a, k in zip(a_row, ks) if a != 0)))
        y1 = s.y + hh * sum(float(b) * k for b, k in zip(tableau.b_sol, ks) if b != 0)
        error = hh * sum(float(b) * k for b, k in zip(tableau.b_error, ks) if b != 0)
        f1 = ks[-1]
        error_norm = rms(error / (atol + rtol * jnp.maximum(jnp.abs(s.y), jnp.abs(y1))))
        ok = jnp.isfinite(error_norm) & jnp.all(jnp.isfinite(f1), axis=1)
        accept = active & ok & (error_norm <= 1.0)
        factor = SAFETY * jnp.where(error_norm > 0, error_norm, 1e-300) ** (-1 / error_order)
        factor = jnp.clip(factor, FACTOR_MIN, jnp.where(accept, FACTOR_MAX, SAFETY))
        factor = jnp.where(ok, factor, FACTOR_MIN)
        t1 = jnp.where(h == s.t_max - s.t, s.t_max, s.t + h)  # land exactly on the budget
        k = hh[:, None] * jnp.stack(ks, axis=1)  # diffrax's dense output takes the stage increments
        next_save, records = save_crossed(s, t1, y1, k, accept)
        t = jnp.where(accept, t1, s.t)
        steps = s.steps + active
        done = finished(y1, f1)
        if settled is not None:
            tried = (iteration % settle_every == 0) & jnp.any(accept)
            if hint is not None:
                tried = tried | jnp.any(accept & hint(y1, f1))
            done = done | jax.lax.cond(tried, settled, lambda y, f, wanted: jnp.zeros(y.shape[0], bool), y1, f1,
                                       accept)
        stop = jnp.where(accept & done, FINISHED, s.stop)
        stop = jnp.where((stop == RUNNING) & active & (t >= s.t_max), TIME_BUDGET, stop)
        stop = jnp.where((stop == RUNNING) & active & ~accept & (s.t + h * factor == s.t), STEP_UNDERFLOW, stop)
        stop = jnp.where((stop == RUNNING) & (steps >= max_steps), STEP_BUDGET, stop)
        return s._replace(t=t, h=jnp.where(active, h * factor, s.h), y=jnp.where(accept[:, None], y1, s.y),
                          f=jnp.where(accept[:, None], f1, s.f), stop=stop, steps=steps,
                          accepted=s.accepted + accept, next_save=next_save, records=records), iteration + 1

    def running(s: _Loop):
        return jnp.sum(s.stop == RUNNING)

    def run_until(state, iteration, left: int):
        """Step until at most `left` runs are still running."""
        return jax.lax.while_loop(lambda c: running(c[0]) > left, step, (state, iteration))

    zeros = jnp.zeros(batch, dtype=int)
    next_save = jnp.maximum(1, jnp.sum(save_ts <= t0[:, None], axis=1))
    state = _Loop(t=t0, h=h, y=y0, f=f0, stop=stop, steps=zeros, accepted=zeros,
                  next_save=next_save, records=records, t_max=t_max, save_ts=save_ts)
    # Runs finish at different times; a long tail of a few slow runs (a stiff run can take 100x the steps of the
    # others) would keep paying for the whole batch. So a large batch runs in two phases: once at most an eighth
    # of it (at least TAIL_LANES runs) is left, those runs are gathered into a batch of that size (one more loop
    # to compile, ~3 s, hence only for large batches). An eighth, not fewer: the second phase then starts
    # earlier (256 Gaussian runs: 5% fewer lane-steps than gathering 8) at a small cost per step.
    iteration = jnp.zeros((), int)
    lanes = max(TAIL_LANES, batch // 8)
    if batch < 4 * TAIL_LANES:
        state, _ = run_until(state, iteration, 0)
    else:
        state, iteration = run_until(state, iteration, lanes)
        index = jnp.nonzero(state.stop == RUNNING, size=lanes, fill_value=batch)[0]
        lane = jax.tree_util.tree_map(lambda leaf: leaf[jnp.minimum(index, batch - 1)], state)
        lane = lane._replace(stop=jnp.where(index < batch, lane.stop, PADDING))
        lane, _ = run_until(lane, iteration, 0)
        state = jax.tree_util.tree_map(lambda full, part: full.at[index].set(part, mode="drop"), state, lane)
    return Lockstep(t=state.t, y=state.y, f=state.f, h=state.h, stop=state.stop, steps=state.steps,
                    accepted=state.accepted,
                    records=jax.tree_util.tree_map(lambda leaf: leaf[:, :slots], state.records))
