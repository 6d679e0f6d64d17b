"""The lockstep integrator against closed forms and against diffrax's own `diffeqsolve` (same pair, same
controller), and the independence of runs in a batch (including the gathered tail phase of a large batch)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import ltn  # noqa: F401  (float64)
from ltn.flow._lockstep import (FINISHED, NONFINITE_FIELD, STEP_BUDGET, TAIL_LANES, TIME_BUDGET,
                                lockstep_solve)

RTOL, ATOL = 1e-10, 1e-12
# A linear system with rates spread over two decades: y(t) = expm(-A t) y0.
A = jnp.asarray(np.diag([0.05, 0.3, 1.0, 4.0]) + 0.1 * np.triu(np.ones((4, 4)), 1))


def linear_field(Y):
    return -Y @ A.T


def never(Y, F):
    return jnp.zeros(Y.shape[0], bool)


def solve(Y0, t_max, save_ts, finished=never, max_steps=10_000, solver=diffrax.Tsit5(), field=linear_field,
          settled=None, settle_every=1, hint=None, t0=None, active=None):
    return jax.jit(lambda Y0, t_max, save_ts, t0, active: lockstep_solve(
        field, finished, lambda t, y: y, Y0, solver=solver, rtol=RTOL, atol=ATOL, t_max=t_max, save_ts=save_ts,
        max_steps=max_steps, settled=settled, settle_every=settle_every, hint=hint, t0=t0, active=active))(
        Y0, t_max, save_ts, t0, active)


def exact(y0, t):
    return scipy.linalg.expm(-np.asarray(A) * t) @ np.asarray(y0)


@pytest.mark.parametrize("solver", [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Dopri8()])
def test_matches_closed_form_and_diffeqsolve(solver):
    y0 = jnp.asarray([[1.0, -2.0, 0.5, 3.0]])
    save_ts = jnp.asarray([[0.0, 0.01, 0.7, 3.3, 10.0, 20.0]])
    end = solve(y0, jnp.asarray([20.0]), save_ts, solver=solver)
    assert int(end.stop[0]) == TIME_BUDGET and float(end.t[0]) == 20.0
    scale = np.linalg.norm(exact(y0[0], 0.0))
    for t, saved in zip(save_ts[0], end.records[0]):
        # Dense output between steps: measured <= 3e-11 relative to ||y0|| (Tsit5), 4e-12 (Dopri8).
        assert np.linalg.norm(saved - exact(y0[0], float(t))) <= 1e-9 * scale
    reference = diffrax.diffeqsolve(diffrax.ODETerm(lambda t, y, args: -A @ y), solver, t0=0.0, t1=20.0,
                                    dt0=None, y0=y0[0], stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL))
    # Same tableau, controller and initial step rule: nearly the same steps (measured 340 vs 333 for Tsit5,
    # 356 vs 348 for Dopri5, equal for Dopri8; diffrax differs in details such as the last step onto t1).
    assert abs(int(end.steps[0]) - int(reference.stats["num_steps"])) <= 0.05 * int(reference.stats["num_steps"])
    np.testing.assert_allclose(end.y[0], reference.ys[0], rtol=1e-10, atol=1e-14)


def test_runs_are_independent_of_their_batch():
    """Each run keeps its own steps: in a batch (with its gathered tail phase) as when alone."""
    batch = 4 * TAIL_LANES  # large enough for the two-phase loop
    # State (value, rate): dy/dt = -rate y. The rate travels with the run when the tail is gathered.
    field = lambda Y: jnp.stack([-Y[:, 1] * Y[:, 0], jnp.zeros_like(Y[:, 1])], axis=1)
    y0 = jnp.stack([jnp.ones(batch), jnp.geomspace(1.0, 200.0, batch)], axis=1)
    save_ts = jnp.broadcast_to(jnp.asarray([0.0, 0.1, 1.0]), (batch, 3))
    end = solve(y0, jnp.full(batch, 1.0), save_ts, field=field)
    assert np.all(np.asarray(end.stop) == TIME_BUDGET)
    steps = np.asarray(end.steps)
    assert steps.max() > 10 * steps.min()  # measured 24 .. 269 steps; the last TAIL_LANES runs are gathered
    for i in [0, batch // 2, batch - 1]:
        one = solve(y0[i:i + 1], jnp.ones(1), save_ts[i:i + 1], field=field)
        assert int(one.steps[0]) == steps[i]
        np.testing.assert_allclose(end.y[i], one.y[0], rtol=1e-13, atol=0)
        np.testing.assert_allclose(end.records[i], one.records[0], rtol=1e-13, atol=0)
        np.testing.assert_allclose(end.y[i, 0], np.exp(-float(y0[i, 1])), rtol=1e-8, atol=1e-11)  # atol-controlled


def test_stops_budgets_and_failures():
    y0 = jnp.asarray([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [jnp.inf, 1.0, 1.0, 1.0]])
    save_ts = jnp.broadcast_to(jnp.asarray([0.0, 1.0, 1e3]), (3, 3))

    def small(Y, F):  # run 0 stops once |y| < 1e-3
        return (jnp.arange(Y.shape[0]) == 0) & (jnp.linalg.norm(Y, axis=1) < 1e-3)

    end = solve(y0, jnp.asarray([1e3, 1e3, 1e3]), save_ts, finished=small, max_steps=1000)
    assert list(np.asarray(end.stop)) == [FINISHED, STEP_BUDGET, NONFINITE_FIELD]
    assert float(jnp.linalg.norm(end.y[0])) < 1e-3 and float(end.t[0]) < 1e3  # measured: t = 126, 463 steps
    assert list(np.asarray(end.steps))[1:] == [1000, 0]
    timed = solve(y0[1:2], jnp.asarray([1e3]), save_ts[1:2], max_steps=100_000)
    assert int(timed.stop[0]) == TIME_BUDGET and float(timed.t[0]) == 1e3  # lands exactly on t_max
    assert np.all(np.isinf(np.asarray(end.records[0, 2])))  # stopped before t = 1e3: that record stays inf
    np.testing.assert_allclose(end.records[0, 1], exact(y0[0], 1.0), rtol=1e-9)


def test_costly_stop_is_tried_every_few_iterations():
    """`settled` stops a run like `finished` does, but only on the iterations it is tried (every 7th here)."""
    y0 = jnp.ones((2, 4))
    save_ts = jnp.broadcast_to(jnp.asarray([0.0, 1e3]), (2, 2))
    small = lambda Y, *_: jnp.linalg.norm(Y, axis=1) < 1e-3
    cheap = solve(y0, jnp.full(2, 1e3), save_ts, finished=small)
    costly = solve(y0, jnp.full(2, 1e3), save_ts, settled=small, settle_every=7)
    assert np.all(np.asarray(costly.stop) == FINISHED)
    first, tried = int(cheap.steps[0]), int(costly.steps[0])  # measured 463 and 463
    assert first <= tried < first + 7 and tried % 7 == 1  # iterations 0, 7, 14, ... end steps 1, 8, 15, ...


def test_costly_stop_is_tried_at_once_where_hinted_and_at_the_start():
    """A `hint` (cheap, every step) makes `settled` be tried at that very step; a run `settled` at the start takes
    no step; `end.f` is the field at the end point."""
    y0 = jnp.ones((2, 4))
    save_ts = jnp.broadcast_to(jnp.asarray([0.0, 1e3]), (2, 2))
    small = lambda Y, *_: jnp.linalg.norm(Y, axis=1) < 1e-3
    cheap = solve(y0, jnp.full(2, 1e3), save_ts, finished=small)
    hinted = solve(y0, jnp.full(2, 1e3), save_ts, settled=small, settle_every=1000, hint=small)
    unhinted = solve(y0, jnp.full(2, 1e3), save_ts, settled=small, settle_every=1000)
    assert np.all(np.asarray(hinted.stop) == FINISHED) and int(hinted.steps[0]) == int(cheap.steps[0])  # 463
    assert int(unhinted.steps[0]) == 1001  # tried at iterations 0 and 1000 only: the first try after 463
    np.testing.assert_allclose(hinted.f, linear_field(hinted.y), rtol=1e-14)
    at_start = solve(y0 * 1e-4, jnp.full(2, 1e3), save_ts, settled=small, settle_every=1000)
    assert list(np.asarray(at_start.steps)) == [0, 0] and np.all(np.asarray(at_start.stop) == FINISHED)


def test_a_run_continued_from_a_later_time_and_inactive_runs():
    """A run started at t0 > 0 from the exact state there ends at the exact state at t_max and records only the
    times after t0; an inactive run does not move and records nothing."""
    y0 = jnp.asarray([1.0, -2.0, 0.5, 3.0])
    t0, t_max = 2.0, 6.0
    Y0 = jnp.stack([jnp.asarray(exact(y0, t0)), y0])
    save_ts = jnp.tile(jnp.asarray([0.0, 1.0, 3.0, 6.0]), (2, 1))
    end = solve(Y0, jnp.full(2, t_max), save_ts, t0=jnp.asarray([t0, 0.0]), active=jnp.asarray([True, False]))
    np.testing.assert_allclose(end.y[0], exact(y0, t_max), rtol=1e-8, atol=1e-10)
    assert float(end.t[0]) == t_max and np.all(np.isinf(np.asarray(end.records[0, :2])))
    np.testing.assert_allclose(end.records[0, 2], exact(y0, 3.0), rtol=1e-8, atol=1e-10)
    assert (int(end.stop[1]), int(end.steps[1]), float(end.t[1])) == (FINISHED, 0, 0.0)
    np.testing.assert_array_equal(end.y[1], y0)
    assert np.all(np.isinf(np.asarray(end.records[1])))
