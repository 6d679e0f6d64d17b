"""Gradient flow `d theta / dt = -grad L(theta)` solved with diffrax, with error control.

Regression integrates real time and stops at a steady state. Classification integrates
`d theta / ds = -||theta||^(2-L) grad log L(theta)`: a positive rescaling of the vector field (so the same path),
chosen because `log L` never underflows and because along the late phase `log ||theta||` then grows linearly in s
while the direction moves at an O(1) rate, for every depth. Original time is recovered from
`dt/ds = ||theta||^(2-L) / L` by quadrature between checkpoints (relative error ~1e-4 with 128 checkpoints):
integrating it as an extra state would make the ODE stiff, since t grows like 1/L.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree

from ..losses import task_of
from ..networks import Network
from ._batching import as_batch, check_problem_arrays, first_run
from ._certificate import (BATCH_AXIS, GTOL, RESIDUAL_TOL, UNDECIDED, XTOL, gradient_small, interpolates,
                           output_jacobian, regression_verdict, tries_every)
from ._lockstep import NONFINITE_FIELD, STEP_UNDERFLOW, evaluations_per_step, lockstep_solve
from ._objective import Checkpoint, Objective, tree_norm
from ._result import BUDGET_EXHAUSTED, CONVERGED, SOLVER_NAMES, FlowResult, Stats, Trajectory, final_status, nonfinite

EXPLICIT_SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}
IMPLICIT_SOLVERS = {"kvaerno5": diffrax.Kvaerno5, "kvaerno3": diffrax.Kvaerno3}
SOLVERS = ("auto", *EXPLICIT_SOLVERS, *IMPLICIT_SOLVERS)
# `solver="auto"` picks the implicit Kvaerno5 for regression when the linearised flow at the start is stiff:
# cond(J J^T) above this (J the Jacobian of the outputs); such runs are lazy, and their rates span cond(J J^T).
STIFF_CONDITION = 1e4
# ... but only for networks with at most this many parameters: Kvaerno5 factorises the dense Jacobian of the
# parameters (a 2700-parameter fully connected net took minutes per run), where Tsit5 takes milliseconds a step.
IMPLICIT_MAX_PARAMS = 1000
# Gauss-Legendre nodes for the reconstruction of original time between checkpoints (classification).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)


@dataclasses.dataclass(frozen=True)
class FlowOptions:
    """Static options of a flow solve (hashable: one compiled solver per distinct options)."""

    solver: str = "auto"
    rtol: float = 1e-11
    atol: float = 1e-13
    max_steps: int = 100_000
    t_max: float | None = None
    gtol: float = GTOL
    xtol: float = XTOL
    residual_tol: float = RESIDUAL_TOL
    target_log_loss: float | None = None
    target_norm: float | None = None
    checkpoints: int = 128
    reparametrize: bool = True

    def __post_init__(self):
        if self.rtol is None:  # the compile-cache key, whose tolerances and targets are runtime values
            return
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        for name in ("rtol", "atol", "gtol", "xtol", "residual_tol"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps!r}")
        if not (isinstance(self.checkpoints, int) and self.checkpoints >= 2):
            raise ValueError(f"checkpoints must be an integer >= 2, got {self.checkpoints!r}")
        if self.t_max is not None and not self.t_max > 0:
            raise ValueError(f"t_max must be positive, got {self.t_max}")
        if self.target_norm is not None and not self.target_norm > 0:
            raise ValueError(f"target_norm must be positive, got {self.target_norm}")


class Tolerances(NamedTuple):
    """The run-time values of a solve: arrays, so that new values do not recompile. `t_max` is NaN for the
    default budget, the targets are -inf / inf when not set; `data_scale` (`||X||_2 ||y||`, for the scale-free
    gradient test) is filled in once per solve (an SVD per step would dominate the cost)."""

    rtol: jax.Array
    atol: jax.Array
    gtol: jax.Array
    xtol: jax.Array
    residual_tol: jax.Array
    t_max: jax.Array
    target_log_loss: jax.Array
    target_norm: jax.Array
    data_scale: jax.Array


def gradient_flow(net: Network, params0, X, y, loss: str = "squared", **options) -> FlowResult:
    """Follow the gradient flow of `sum_i loss(f(x_i; theta), y_i)` from `params0` with an adaptive ODE solver.

    `params0` is one initialisation or a batch (every layer with the same leading axis); a batch is solved under
    one compile. Regression with an explicit pair runs the batch in lockstep (one loop; every run keeps its own
    step sizes and error control, so it takes the steps it would take alone); classification and implicit
    solvers vmap `diffeqsolve` (each run stops at its own target). Options (see `FlowOptions`): `solver`
    ("auto", "tsit5", "dopri5", "dopri8", "kvaerno5", "kvaerno3"; "auto" decides per run, see `_solve_auto`),
    `rtol`/`atol` of the step-size controller, `max_steps` and `t_max` budgets (a status, never an
    exception), `residual_tol` and `xtol` (regression is `converged` where
    `||X beta - y|| <= residual_tol || |X| |beta| + |y| ||` and the Gauss-Newton estimate of the change of beta
    still to come, `||dbeta[J^+ r]||`, is at most `xtol * ||beta||`; `stalled` where the gradient is exactly zero
    short of that; see `_certificate` and docs/theory.md §11), `gtol`
    (where `||grad L|| <= gtol * ||X||_2 ||y|| ||theta||^(L-1)` that test is tried at once, not only every few
    steps; a small gradient alone never stops a run), `target_log_loss` / `target_norm` (classification stops,
    located exactly by root finding; a target met at the start ends the run there, with 0 steps), `checkpoints`
    (number of geometrically spaced records), `reparametrize` (classification: integrate the rescaled,
    well-conditioned path; False integrates plain time, for checks on short horizons).
    """
    task = task_of(loss)
    X, y = check_problem_arrays(net, X, y, task)
    params0, batched = as_batch(net, params0, X)
    opts = FlowOptions(**options)
    if task == "classification" and opts.target_log_loss is None and opts.target_norm is None:
        opts = dataclasses.replace(opts, target_log_loss=-100.0)
    result = _solve_auto(net, loss, opts, params0, X, y) if opts.solver == "auto" else _solve(
        net, loss, opts, params0, X, y)
    return result if batched else first_run(result)


def _solve_auto(net: Network, loss: str, opts: FlowOptions, params0, X, y) -> FlowResult:
    """`solver="auto"`, decided per run: Tsit5, or Kvaerno5 for regression runs that are stiff at the start or
    that use up `max_steps` with Tsit5 held back by stiffness (networks of at most IMPLICIT_MAX_PARAMS
    parameters)."""
    tsit5, kvaerno5 = (dataclasses.replace(opts, solver=name) for name in ("tsit5", "kvaerno5"))
    if task_of(loss) != "regression" or net.num_params > IMPLICIT_MAX_PARAMS:
        return _solve(net, loss, tsit5, params0, X, y)
    stiff = np.asarray(_stiff_runs(net)(params0, X))
    if stiff.all():
        return _solve(net, loss, kvaerno5, params0, X, y)
    explicit = np.flatnonzero(~stiff)
    result = _solve(net, loss, tsit5, params0 if explicit.size == stiff.size else _take(params0, explicit), X, y)
    # An explicit solver that used up max_steps on a regression run may have been held back by stiffness: near
    # its limit (it interpolates, and the step stays at the stability bound) or where the rates spread (the test
    # at the start, where Tsit5 stopped). Those runs are solved again, from the start, with the L-stable Kvaerno5,
    # whose result replaces the first one where it converged; stats say which solver ran. A run that is neither
    # sits on a saddle plateau, slow but not stiff: Kvaerno5 would crawl along it too, at the price of a dense
    # Jacobian a step (measured: 3000 steps of a 1000-parameter plateau run, 10 s with Tsit5, 530 s more).
    out_of_steps = np.flatnonzero((np.asarray(result.status) == BUDGET_EXHAUSTED)
                                  & (np.asarray(result.stats.steps) >= opts.max_steps))
    if out_of_steps.size:
        ended = _take(result.params, out_of_steps)
        held_back = _stiff_runs(net)(ended, X) | _interpolating(net)(ended, X, y, opts.residual_tol)
        out_of_steps = out_of_steps[np.asarray(held_back)]
    if out_of_steps.size:
        again = _solve(net, loss, kvaerno5, _take(params0, explicit[out_of_steps]), X, y)
        converged = np.asarray(again.status) == CONVERGED
        result = _put(result, out_of_steps[converged], _take(again, np.flatnonzero(converged)))
    if explicit.size == stiff.size:
        return result
    implicit = np.flatnonzero(stiff)
    both = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), result,
                                  _solve(net, loss, kvaerno5, _take(params0, implicit), X, y))
    return _take(both, np.argsort(np.concatenate([explicit, implicit])))


def _take(tree, index):
    return jax.tree_util.tree_map(lambda leaf: leaf[index], tree)


def _put(tree, index, part):
    return jax.tree_util.tree_map(lambda full, new: full.at[index].set(new), tree, part)


def _solve(net: Network, loss: str, opts: FlowOptions, params0, X, y) -> FlowResult:
    static = dataclasses.replace(opts, rtol=None, atol=None, gtol=None, xtol=None, residual_tol=None, t_max=None,
                                 target_log_loss=None, target_norm=None)
    tolerances = Tolerances(*(jnp.asarray(value, dtype=float) for value in (
        opts.rtol, opts.atol, opts.gtol, opts.xtol, opts.residual_tol, jnp.nan if opts.t_max is None else opts.t_max,
        -jnp.inf if opts.target_log_loss is None else opts.target_log_loss,
        jnp.inf if opts.target_norm is None else opts.target_norm, jnp.nan)))
    return _compiled_flow(net, loss, static)(params0, X, y, tolerances)


@functools.lru_cache(maxsize=64)
def _stiff_runs(net: Network):
    """Compiled per-run test: is cond(J J^T) > STIFF_CONDITION at these params (J: Jacobian of the outputs)?"""

    def stiff(params, X):
        J = output_jacobian(net, params, X)[1]
        eigenvalues = jnp.linalg.eigvalsh(J @ J.T)
        return (eigenvalues[0] > 0) & (eigenvalues[-1] > STIFF_CONDITION * eigenvalues[0])

    return jax.jit(jax.vmap(stiff, in_axes=(0, None)))


@functools.lru_cache(maxsize=64)
def _interpolating(net: Network):
    """Compiled per-run residual test of the certificate."""
    return jax.jit(jax.vmap(functools.partial(interpolates, net), in_axes=(0, None, None, None)))


def _make_solver(name: str):
    return {**EXPLICIT_SOLVERS, **IMPLICIT_SOLVERS}[name]()


TRACE_COUNT = {"flow": 0}  # incremented at trace time; tests use it to prove one compile per batch


@functools.lru_cache(maxsize=64)
def _compiled_flow(net: Network, loss: str, opts: FlowOptions):
    objective = Objective(net, loss)
    regression = objective.task == "regression"
    depth = net.depth
    reparam = (not regression) and opts.reparametrize
    solver = _make_solver(opts.solver)
    solver_code = SOLVER_NAMES.index(opts.solver)

    def velocity_scale(params, value):
        """Positive factor on `-grad value` (value is L for regression, log L for classification): 1 for
        regression, ||theta||^(2-L) on the rescaled classification path, L = exp(log L) in plain time."""
        if regression:
            return 1.0
        if reparam:
            return tree_norm(params) ** (2 - depth)
        return jnp.exp(value)

    def vector_field(t, params, args):
        X, y = args[:2]
        value, grad = objective.value_and_grad(params, X, y)
        scale = velocity_scale(params, value)
        return jax.tree_util.tree_map(lambda g: -scale * g, grad)

    def checkpoint(t, params, args):
        X, y = args[:2]
        value_and_grad = objective.value_and_grad(params, X, y)
        return objective.checkpoint(t, params, X, y, velocity_scale(params, value_and_grad[0]), value_and_grad)

    def broken(params, velocity):
        return nonfinite(jax.tree_util.tree_leaves((params, velocity)))

    def verdict(params, velocity, X, y, tol: Tolerances, **gating):
        return regression_verdict(net, params, velocity, X, y, tol.residual_tol, tol.xtol, **gating)

    def target_reached(log_loss, param_norm, tol: Tolerances):
        """Classification: judged on the point itself, not on the solver's code (at |log L| ~ 1e5 the root finder
        may report non-convergence after locating the stop to ~1e-12 relative)."""
        slack = 1e-9 * jnp.abs(tol.target_log_loss)
        return (log_loss <= tol.target_log_loss + slack) | (param_norm >= tol.target_norm * (1 - 1e-9))

    def with_data_scale(X, y, tol: Tolerances):
        return tol._replace(data_scale=jnp.linalg.norm(X, 2) * jnp.linalg.norm(y))

    def natural_time(params, velocity):
        """||theta|| / ||d theta/dt|| at the start: the time scale on which the run first moves."""
        time = tree_norm(params) / jnp.maximum(tree_norm(velocity), 1e-300)
        return jnp.where(jnp.isfinite(time) & (time > 0), time, 1.0)

    def time_grid(natural, tol: Tolerances):
        """The time budget and the geometric checkpoint times of one run."""
        t_max = jnp.where(jnp.isnan(tol.t_max), (1e12 if regression else 1e5) * natural, tol.t_max)
        t_first = jnp.minimum(1e-3 * natural, t_max / 10)
        grid = jnp.minimum(jnp.geomspace(t_first, t_max, opts.checkpoints - 1), t_max)  # geomspace may round up
        return t_max, jnp.concatenate([jnp.zeros(1), grid])

    def result(params, records, final, final_log_time, log_time, status, steps, accepted, grad_evals):
        stats = Stats(steps=steps, accepted_steps=accepted, rejected_steps=steps - accepted,
                      grad_evals=jnp.asarray(grad_evals), solver=jnp.broadcast_to(solver_code, jnp.shape(steps)))
        return FlowResult(params=params, beta=net.beta(params), status=status, stats=stats, final=final,
                          final_log_time=final_log_time, trajectory=Trajectory(checkpoints=records, log_time=log_time))

    def solve_lockstep(params0, X, y, tol: Tolerances):
        """Regression with an explicit pair: the whole batch in one loop, each run with its own steps."""
        tol = with_data_scale(X, y, tol)
        args = (X, y, tol)
        _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda leaf: leaf[0], params0))
        flatten = jax.vmap(lambda p: ravel_pytree(p)[0])
        unflatten = jax.vmap(unravel)
        field = jax.vmap(lambda v: ravel_pytree(vector_field(0.0, unravel(v), args))[0])
        # The certificate of a batch: the costly part of the test runs once for all runs that need it.
        verdicts = jax.vmap(lambda v, f, wanted: verdict(unravel(v), f, X, y, tol, try_settled=wanted,
                                                         axis_name=BATCH_AXIS), axis_name=BATCH_AXIS)

        def stationary(Y, F):  # tested at every accepted point for free (FSAL): a zero field never moves again
            return jnp.all(F == 0, axis=1)

        def settled(Y, F, wanted):
            return verdicts(Y, F, wanted) != UNDECIDED

        def hint(Y, F):  # F = -grad L
            return jax.vmap(lambda v, f: gradient_small(v, f, tol.gtol, tol.data_scale, depth))(Y, F)

        Y0 = flatten(params0)
        natural = jax.vmap(natural_time)(Y0, field(Y0))
        t_max, save_ts = jax.vmap(lambda n: time_grid(n, tol))(natural)
        end = lockstep_solve(field, stationary, lambda t, v: checkpoint(t, unravel(v), args), Y0, solver=solver,
                             rtol=tol.rtol, atol=tol.atol, t_max=t_max, save_ts=save_ts, max_steps=opts.max_steps,
                             settled=settled, settle_every=tries_every(X.shape[0]), hint=hint)
        params = unflatten(end.y)
        final = jax.vmap(checkpoint, in_axes=(0, 0, None))(end.t, params, args)
        # log L = -inf is a regression run that interpolates exactly, not a failure.
        is_broken = (end.stop == NONFINITE_FIELD) | ~jnp.all(jnp.isfinite(end.y), axis=1) | jnp.isnan(
            final.log_loss) | (final.log_loss == jnp.inf)
        status = final_status(is_broken, verdicts(end.y, end.f, jnp.ones(end.y.shape[0], bool)),
                              end.stop == STEP_UNDERFLOW)
        # Evaluations: per step, the pair's stages but the first (FSAL); at the start f(y0) and one more for the
        # initial step size. Records (one evaluation per checkpoint) and certificate tests are not counted.
        grad_evals = evaluations_per_step(solver) * end.steps + 2
        records = end.records
        log_time = jnp.where(records.time > 0, jnp.log(records.time), -jnp.inf)
        return jax.vmap(result)(params, records, final, jnp.log(end.t), log_time, status, end.steps, end.accepted,
                                grad_evals)

    # Stopping conditions of one run (diffrax calls them as (t, y, args, **kwargs); y: the params). Classification
    # targets are real-valued: the stop is located by root finding on the dense output.
    def regression_stop(t, y, args, **kwargs):
        X, labels, tol = args
        velocity = vector_field(t, y, args)
        return (verdict(y, velocity, X, labels, tol) != UNDECIDED) | broken(y, velocity)

    def is_broken(t, y, args, **kwargs):
        return broken(y, vector_field(t, y, args))

    def below_target_log_loss(t, y, args, **kwargs):
        X, labels, tol = args
        return objective.log_loss(y, X, labels) - tol.target_log_loss

    def above_target_norm(t, y, args, **kwargs):
        return args[2].target_norm - tree_norm(y)

    if regression:
        event = diffrax.Event(regression_stop)
    else:
        event = diffrax.Event([is_broken, below_target_log_loss, above_target_norm],
                              root_finder=optx.Newton(rtol=1e-10, atol=1e-10))

    def guarded_field(t, params, args):
        v = vector_field(t, params, args)
        # A field that overflowed freezes the run where it is (reported nonfinite) instead of stalling the solver.
        return jax.tree_util.tree_map(lambda leaf: jnp.where(nonfinite(jax.tree_util.tree_leaves(v)), 0.0, leaf), v)

    def decided(params, velocity, X, y, tol: Tolerances):
        """The status the certificate gives `params` (`UNDECIDED` if none): regression's verdict, or
        classification's target."""
        if regression:
            return verdict(params, velocity, X, y, tol)
        reached = target_reached(objective.log_loss(params, X, y), tree_norm(params), tol)
        return jnp.where(reached, CONVERGED, UNDECIDED)

    def solve_one(params0, X, y, tol: Tolerances):
        """One run with `diffeqsolve`: classification (each run stops at its own target, located by root
        finding) and implicit solvers (a Jacobian of one run, not of a batch). A run decided at the start (a
        target already met, a certified or stalled start) ends there: a solve from t = 0 to 0, with 0 steps."""
        tol = with_data_scale(X, y, tol)
        args = (X, y, tol)
        velocity0 = vector_field(0.0, params0, args)
        done_at_start = decided(params0, velocity0, X, y, tol) != UNDECIDED
        t_max, ts = time_grid(natural_time(params0, velocity0), tol)
        t_max, ts = jnp.where(done_at_start, 0.0, t_max), jnp.where(done_at_start, 0.0, ts)
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=checkpoint), diffrax.SubSaveAt(t1=True)])
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(guarded_field), solver, t0=0.0, t1=t_max, dt0=None, y0=params0, args=args,
            saveat=saveat, stepsize_controller=diffrax.PIDController(rtol=tol.rtol, atol=tol.atol),
            max_steps=opts.max_steps, event=event, throw=False,
            adjoint=diffrax.ForwardMode(),  # no reverse-mode through the solve: the plain, cheaper while loop
        )
        records, final_params = sol.ys
        # A run that ended at the start saved every checkpoint at t = 0: only the first one was reached.
        later = done_at_start & (jnp.arange(ts.shape[0]) > 0)
        records = jax.tree_util.tree_map(
            lambda leaf: jnp.where(later.reshape(-1, *[1] * (leaf.ndim - 1)), jnp.inf, leaf), records)
        final_params = jax.tree_util.tree_map(lambda leaf: leaf[0], final_params)
        t_end = sol.ts[1][-1]
        final = checkpoint(t_end, final_params, args)
        final_velocity = vector_field(t_end, final_params, args)
        is_broken = broken(final_params, final_velocity) | jnp.isnan(final.log_loss) | (final.log_loss == jnp.inf)
        ended = ((sol.result == diffrax.RESULTS.successful) | (sol.result == diffrax.RESULTS.max_steps_reached)
                 | (sol.result == diffrax.RESULTS.event_occurred))
        status = final_status(is_broken, decided(final_params, final_velocity, X, y, tol), ~ended)
        steps = sol.stats["num_steps"]
        # Explicit pairs (FSAL): stages-1 evaluations a step, +1 at the start, +2 for the initial step size.
        # Implicit solvers: not counted (-1).
        grad_evals = evaluations_per_step(solver) * steps + 3 if opts.solver in EXPLICIT_SOLVERS else -1
        if reparam:
            log_time, final_log_time = _reconstruct_log_time(records, final, depth)
        else:
            log_time = jnp.where(records.time > 0, jnp.log(records.time), -jnp.inf)
            final_log_time = jnp.log(t_end)
        return result(final_params, records, final, final_log_time, log_time, status, steps,
                      sol.stats["num_accepted_steps"], grad_evals)

    def solve(params0, X, y, tol: Tolerances):
        TRACE_COUNT["flow"] += 1
        if regression and opts.solver in EXPLICIT_SOLVERS:
            return solve_lockstep(params0, X, y, tol)
        return jax.vmap(solve_one, in_axes=(0, None, None, None))(params0, X, y, tol)

    return jax.jit(solve)


def _log_dt_ds(c: Checkpoint, depth: int):
    """`a = log(dt/ds) = -log L + (2-L) log ||theta||` and its derivative in s."""
    a = -c.log_loss + (2 - depth) * jnp.log(c.param_norm)
    rate = -c.log_loss_rate + (2 - depth) * c.param_norm_rate / c.param_norm
    return a, rate


def _log_integral(s0, s1, a0, a1, r0, r1):
    """`log int_{s0}^{s1} exp(a(s)) ds` with `a` the cubic Hermite interpolant of values and slopes: exact at the
    ends, where the integrand is largest in the late phase (a grows like exp(s) there)."""
    h = s1 - s0
    u = (_GL_NODES + 1) / 2
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    a = h00 * a0[..., None] + h10 * (h * r0)[..., None] + h01 * a1[..., None] + h11 * (h * r1)[..., None]
    return jnp.log(h / 2) + jax.nn.logsumexp(a + jnp.log(_GL_WEIGHTS), axis=-1)


def _reconstruct_log_time(records: Checkpoint, final: Checkpoint, depth: int):
    a, rate = _log_dt_ds(records, depth)
    reached = jnp.isfinite(records.time)
    pieces = _log_integral(records.time[:-1], records.time[1:], a[:-1], a[1:], rate[:-1], rate[1:])
    pieces = jnp.where(reached[1:], pieces, -jnp.inf)
    log_time = jnp.concatenate([jnp.full(1, -jnp.inf), jax.lax.associative_scan(jnp.logaddexp, pieces)])
    log_time = jnp.where(reached, log_time, jnp.inf)
    last = jnp.sum(reached) - 1
    a_end, rate_end = _log_dt_ds(final, depth)
    tail = _log_integral(records.time[last], final.time, a[last], a_end, rate[last], rate_end)
    tail = jnp.where(final.time > records.time[last], tail, -jnp.inf)
    return log_time, jnp.logaddexp(log_time[last], tail)
