"""Gradient flow `d theta / dt = -grad L(theta)` solved with diffrax, with error control.

Regression integrates real time and stops at a steady state. Classification integrates
`d theta / ds = -||theta||^(2-L) grad log L(theta)`: a positive rescaling of the vector field (so the same path),
chosen because `log L` never underflows and because along the late phase `log ||theta||` then grows linearly in s
while the direction moves at an O(1) rate, for every depth. Original time is recovered from
`dt/ds = ||theta||^(2-L) / L` by quadrature between checkpoints (relative error ~1e-4 with 128 checkpoints):
integrating it as an extra state would make the ODE stiff, since t grows like 1/L.

A solve is made of legs: one method from a start `(t0, theta)` to a status or a budget. `solver="auto"` runs an
explicit leg first and continues each run that is still going where it stopped, implicitly where its steps are
held at the explicit stability bound (`_stiffness`, docs/theory.md §9).
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int

from .._cache import cached_program
from ..losses import task_of
from ..networks import Network
from ._batching import BATCH_AXIS, as_batch, check_problem_arrays, over_runs, runs_in_turn
from ._certificate import UNDECIDED, gradient_small, regression_verdict, tries_every
from ._lockstep import NONFINITE_FIELD, RUNNING, STEP_BUDGET, STEP_UNDERFLOW, lockstep_solve
from ._objective import Checkpoint, Objective, tree_nonfinite, tree_norm
from ._options import FlowOptions, flow_options
from ._result import CONVERGED, SOLVER_NAMES, FlowResult, Stats, Trajectory, final_status
from ._solvers import FLOW_SOLVERS, make_solver
from ._stepping import stepped_solve
from ._stiffness import (EXPLICIT_PROBE_STEPS, SPARING_STEPS, STIFF_PRODUCT, implicit_for_auto,
                          step_times_curvature)

SOLVERS = FLOW_SOLVERS
# Gauss-Legendre nodes for the reconstruction of original time between checkpoints (classification).
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(16)
# Classification paths are recorded where -log L first reaches 10^(k/10), k = 0..120, as well as on the time grid:
# the late phase, where directions converge at a rate in -log L, is seen at an even density.
LOG_LOSS_LEVELS = -(10.0 ** (np.arange(121) / 10))
TRACE_COUNT = {"flow": 0, "ends": 0}  # incremented at trace time; tests use them to count compiles
# `auto`'s first explicit round is compiled as a brief program (LLVM O0, `ltn._compile.jit`) where its work is
# small: batch x max(samples x parameters, RUN_STEP_FLOOR) (the cost of a step, in proportion: a run's step costs
# a floor of loop overhead however small the problem) at most BRIEF_ROUND_WORK, or a tenth of that for a batch of
# classification runs, stepped per run (vmapped, or in turn on a CPU), whose O0 code runs much slower
# (benchmarks/RESULTS.md, "Brief programs").
# Most runs of a small problem end or turn implicit within it; later rounds are compiled for speed.
BRIEF_ROUND_WORK, RUN_STEP_FLOOR = 200_000, 1000


class Start(eqx.Module):
    """Where a leg starts, per run: the parameters and time, their checkpoint summaries, and the certificate's
    decision there (`UNDECIDED` for a run that goes on)."""

    params: tuple
    t: Float[Array, " batch"]
    record: Checkpoint
    decided: Int[Array, " batch"]


class Ends(eqx.Module):
    """The summaries of a batch of runs at points of their paths: checkpoint, predictor, the certificate's
    decision, the status of a run stopped there with a given stop code, and the time scale on which a run
    starting there first moves (`natural_time`, `||theta|| / ||d theta/dt||`)."""

    final: Checkpoint
    beta: Float[Array, "batch d"]
    decided: Int[Array, " batch"]
    status: Int[Array, " batch"]
    natural_time: Float[Array, " batch"]


class _Stopped(eqx.Module):
    """What a leg's program returns, per run: where it stopped and why (`stop`, the codes of `_lockstep`), its
    records, step counts, gradient evaluations and the controller's next step."""

    params: tuple
    t: Float[Array, " batch"]
    records: Checkpoint
    level_records: Checkpoint
    stop: Int[Array, " batch"]
    steps: Int[Array, " batch"]
    accepted: Int[Array, " batch"]
    grad_evals: Int[Array, " batch"]
    recent_step: Float[Array, " batch"]


class Leg(_Stopped):
    """Where one leg of a batch of runs ended: what its program returned (`records` at the times of the grid and
    `level_records` where -log L first reached each of LOG_LOSS_LEVELS, classification only, `inf` where this leg
    did not pass them), and per run the summaries at the end (`Ends`: predictor, checkpoint, the certificate's
    decision and the status) and the method's code in SOLVER_NAMES."""

    beta: Float[Array, "batch d"]
    final: Checkpoint
    decided: Int[Array, " batch"]
    status: Int[Array, " batch"]
    solver: Int[Array, " batch"]

    @property
    def out_of_steps(self):
        """Whether a run stopped on its step budget, so that another leg may go on."""
        return self.stop == STEP_BUDGET

    def start(self) -> Start:
        """The `Start` of a leg that goes on from here."""
        return Start(params=self.params, t=self.t, record=self.final, decided=self.decided)


def gradient_flow(net: Network, params0, X, y, loss: str = "squared", **options) -> FlowResult:
    """Follow the gradient flow of `sum_i loss(f(x_i; theta), y_i)` from `params0` with an adaptive ODE solver.

    Arguments:
        net: the network.
        params0: one initialisation, or a batch (every layer with the same leading axis) solved under one
            compile; every run keeps its own steps, status and stopping point.
        X, y: data, `(n, d)` and `(n,)` (labels in {-1, +1} for classification).
        loss: "squared" (regression), "exponential" or "logistic" (classification).
        **options: `FlowOptions` fields. `solver`: "auto" (default: explicit Tsit5, continued with an implicit
            method where stiffness holds it back: Kvaerno5 for regression, BDF for classification), "tsit5",
            "dopri5", "dopri8", "kvaerno5", "kvaerno3", "bdf". `rtol`, `atol`: the step-size controller (BDF: its
            error test). `max_steps`, `t_max`: budgets (a status,
            never an exception). `residual_tol`, `xtol`: regression is `converged` where
            `||X beta - y|| <= residual_tol || |X| |beta| + |y| ||` and the Gauss-Newton estimate of the change
            of beta still to come, `||dbeta[J^+ r]||`, is at most `xtol ||beta||`; `stalled` where the gradient is
            exactly zero short of that (docs/theory.md §11). `gtol`: where
            `||grad L|| <= gtol ||X||_2 ||y|| ||theta||^(L-1)` that test is tried at once (a small gradient alone
            never stops a run). `target_log_loss`, `target_norm`: classification stops, located on the step's
            dense output (default `target_log_loss=-100`; a target met at the start ends the run there, with 0
            steps). `checkpoints`: number of records at geometrically spaced times (classification also records
            where -log L first reaches each 10^(k/10), k = 0..120). `reparametrize`: classification integrates
            the rescaled, well-conditioned path (False: plain time, for checks on short horizons).

    Returns:
        A `FlowResult` (with a leading batch axis if `params0` had one).
    """
    task = task_of(loss)
    X, y = check_problem_arrays(net, X, y, task)
    params0, batched = as_batch(net, params0, X)
    opts = flow_options(options).with_default_target(task)
    natural, start = _origin(net, loss, opts, params0, X, y)
    if opts.solver == "auto":
        leg = _solve_auto(net, loss, opts, natural, start, X, y)
    else:
        leg = _leg(net, loss, opts, natural, start, X, y)
    return _assembled(leg, net.depth, task == "classification" and opts.reparametrize, batched)


def _leg(net: Network, loss: str, opts: FlowOptions, natural, start: Start, X, y, active=None,
         brief: bool = False) -> Leg:
    """One leg for the whole batch from `start`, for the `active` runs (the time grid is always that of the solve's
    origin, set by `natural`, so legs fill one trajectory), compiled as a `brief` program or for speed."""
    batch = start.t.shape[0]
    active = np.ones(batch, bool) if active is None else active
    program = _compiled_flow(net, loss, opts.solver, opts.checkpoints, opts.reparametrize, brief)
    # In NumPy from here: each eager JAX operation on the results would be a small program of its own to compile.
    stopped = jax.tree_util.tree_map(np.asarray, program(natural, start, active, X, y, opts))
    ends = _ends(net, loss, opts, stopped.params, stopped.t, stopped.stop, X, y)
    return Leg(**{field.name: getattr(stopped, field.name) for field in dataclasses.fields(stopped)},
               beta=ends.beta, final=ends.final, decided=ends.decided, status=ends.status,
               solver=np.full(batch, SOLVER_NAMES.index(opts.solver)))


def _solve_auto(net: Network, loss: str, opts: FlowOptions, natural, start: Start, X, y) -> Leg:
    """`solver="auto"`: Tsit5 in rounds of EXPLICIT_PROBE_STEPS steps; after each round, a run still going whose
    steps are held at the explicit stability bound (`step_times_curvature`) continues with the implicit solver for
    the rest of `max_steps`, the others with another round: the test follows the path, where stiffness may set in
    late. A classification run within SPARING_STEPS steps of its target goes on explicitly instead, once
    (docs/theory.md §9)."""

    def continued(leg: Leg, solver: str, max_steps: int, members) -> Leg:
        """`leg` with its `members` run on from where they stopped."""
        more = dataclasses.replace(opts, solver=solver, max_steps=max_steps)
        return _joined(leg, _leg(net, loss, more, natural, leg.start(), X, y, active=members), members)

    rounds = min(opts.max_steps, EXPLICIT_PROBE_STEPS)
    leg = _leg(net, loss, dataclasses.replace(opts, solver="tsit5", max_steps=rounds), natural, start, X, y,
               brief=_brief_first_round(net, X, start.t.shape[0], task_of(loss)))
    left = opts.max_steps - rounds
    explicit = np.array(leg.out_of_steps)  # a writable copy: narrowed in place below
    spared = np.zeros_like(explicit)
    while left > 0 and explicit.any():
        # A run that reaches its target within SPARING_STEPS explicit steps at its present pace, even held by
        # stability, costs less that way than compiling the implicit program: it goes on explicitly for one longer
        # round, once (its pace may be falling), without a stiffness test.
        near = explicit & ~spared & _within_steps_of_target(leg, opts.target_log_loss, SPARING_STEPS)
        spared |= near
        held = np.zeros_like(explicit)
        if (explicit & ~near).any():
            product = step_times_curvature(net, loss, opts.reparametrize)(leg.params, leg.recent_step, X, y)
            held = explicit & ~near & (np.asarray(product) >= STIFF_PRODUCT)
        if held.any():
            leg = continued(leg, implicit_for_auto(task_of(loss)), left, held)
            explicit &= ~held
        if explicit.any():
            rounds = min(left, SPARING_STEPS if near.any() else EXPLICIT_PROBE_STEPS)
            leg = continued(leg, "tsit5", rounds, explicit)
            left -= rounds
            explicit &= np.asarray(leg.out_of_steps)
    return leg


def round_work(net: Network, X, batch: int) -> int:
    """The cost of a step of `batch` runs, in proportion (BRIEF_ROUND_WORK)."""
    return batch * max(X.shape[0] * net.num_params, RUN_STEP_FLOOR)


def _brief_first_round(net: Network, X, batch: int, task: str) -> bool:
    """Whether `auto`'s first explicit round is compiled as a brief program (BRIEF_ROUND_WORK)."""
    stepped_per_run = task == "classification" and batch > 1
    return round_work(net, X, batch) <= BRIEF_ROUND_WORK / (10 if stepped_per_run else 1)


def _within_steps_of_target(leg: Leg, target: float, steps: int):
    """Classification: whether a run reaches `target` within `steps` explicit steps. Where its step is held by
    stability, at `~1/|lambda_max|`, `|lambda_max|` grows like `-log L` (measured 4.1e8 at -1e8 on a diagonal
    network) while `log(-log L)` moves evenly in the rescaled time; so the steps left are about
    `(target / log L - 1) / p`, with `p` the present step's advance in `log(-log L)` (an upper estimate where the
    step is not held, and grows)."""
    log_loss, rate = np.asarray(leg.final.log_loss), np.asarray(leg.final.log_loss_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        advance = np.asarray(leg.recent_step) * rate / log_loss
        left = target / log_loss - 1
    return (log_loss < 0) & np.isfinite(left) & (advance > 0) & (left <= steps * advance)


def _joined(first: Leg, second: Leg, continued) -> Leg:
    """`first` where a run did not continue; else `second`'s end with the records of both and the work summed.
    In NumPy: a selection over small arrays, cheaper than a compiled program."""
    first, second = jax.tree_util.tree_map(np.asarray, (first, second))
    continued = np.asarray(continued)

    def pick(a, b):
        return np.where(continued.reshape(-1, *[1] * (a.ndim - 1)), b, a)

    def filled(a: Checkpoint, b: Checkpoint) -> Checkpoint:
        reached = np.isfinite(b.time)
        return jax.tree_util.tree_map(
            lambda x, y: np.where(reached.reshape(*reached.shape, *[1] * (x.ndim - 2)), y, x), a, b)

    uncounted = (first.grad_evals < 0) | (second.grad_evals < 0)
    merged = dataclasses.replace(
        second, records=filled(first.records, second.records),
        level_records=filled(first.level_records, second.level_records), steps=first.steps + second.steps,
        accepted=first.accepted + second.accepted,
        grad_evals=np.where(uncounted, -1, first.grad_evals + second.grad_evals))
    return jax.tree_util.tree_map(pick, first, merged)


@dataclasses.dataclass(frozen=True)
class _Path:
    """The path a (network, loss) pair follows and what is judged along it, shared by the legs' programs and the
    summaries at their ends: the vector field (regression: `-grad L`; classification: the rescaled field where
    `reparametrize`), the checkpoint summaries and the certificate's decision at a point."""

    net: Network
    loss: str
    reparametrize: bool

    @property
    def objective(self) -> Objective:
        return Objective(self.net, self.loss)

    @property
    def regression(self) -> bool:
        return self.objective.task == "regression"

    @property
    def rescaled(self) -> bool:
        return self.reparametrize and not self.regression

    def velocity(self, params, X, y):
        return self.objective.velocity(params, X, y, self.rescaled)

    def checkpoint(self, t, params, X, y) -> Checkpoint:
        value_and_grad = self.objective.value_and_grad(params, X, y)
        scale = self.objective.velocity_scale(params, value_and_grad[0], self.rescaled)
        return self.objective.checkpoint(t, params, X, y, scale, value_and_grad)

    def verdict(self, params, velocity, X, y, opts: FlowOptions, **gating):
        return regression_verdict(self.net, params, velocity, X, y, opts.residual_tol, opts.xtol, **gating)

    def decided(self, params, velocity, X, y, opts: FlowOptions, axis_name: str | None = None):
        """The status the certificate gives `params` (`UNDECIDED` if none): regression's verdict (`axis_name`:
        `regression_verdict`'s), or classification's target, judged on the point itself (the crossing is located
        to the spacing of float64 times, where log L itself carries a round-off of ~|log L| eps)."""
        if self.regression:
            return self.verdict(params, velocity, X, y, opts, axis_name=axis_name)
        slack = 1e-9 * jnp.abs(opts.target_log_loss)
        reached = ((self.objective.log_loss(params, X, y) <= opts.target_log_loss + slack)
                   | (tree_norm(params) >= opts.target_norm * (1 - 1e-9)))
        return jnp.where(reached, CONVERGED, UNDECIDED)


@functools.lru_cache(maxsize=64)
def _compiled_ends(net: Network, loss: str, reparametrize: bool):
    """The summaries at given points of a batch (`Ends`), as one brief program per (network, loss) that every leg
    and method shares: at the start of a solve and at the end of each leg. The certificate and the summaries are
    the largest parts of a leg's program after its method; kept out of the legs, they are compiled once instead of
    three and four times in each leg (benchmarks/RESULTS.md, Reach)."""
    path = _Path(net, loss, reparametrize)

    def ends(params, t, stop, X, y, opts: FlowOptions, axis_name):
        TRACE_COUNT["ends"] += 1
        velocity = path.velocity(params, X, y)
        final = path.checkpoint(t, params, X, y)
        decided = path.decided(params, velocity, X, y, opts, axis_name)
        # log L = -inf is a regression run that interpolates exactly, not a failure.
        broken = ((stop == NONFINITE_FIELD) | tree_nonfinite((params, velocity)) | jnp.isnan(final.log_loss)
                  | (final.log_loss == jnp.inf))
        natural = tree_norm(params) / jnp.maximum(tree_norm(velocity), 1e-300)
        return Ends(final=final, beta=net.beta(params), decided=decided,
                    status=final_status(broken, decided, stop == STEP_UNDERFLOW),
                    natural_time=jnp.where(jnp.isfinite(natural) & (natural > 0), natural, 1.0))

    return cached_program(over_runs(ends, (0, 0, 0, None, None, None)), "flow.ends", net, loss, reparametrize,
                          brief=True)


def _ends(net: Network, loss: str, opts: FlowOptions, params, t, stop, X, y) -> Ends:
    """`Ends` at `(t, params)` of runs stopped with `stop`, by the program that every method shares (the options'
    method, static in the options, is left out of its key)."""
    judged = dataclasses.replace(opts, solver="auto")
    return _compiled_ends(net, loss, opts.reparametrize)(params, t, stop, X, y, judged)


def _origin(net: Network, loss: str, opts: FlowOptions, params0, X, y) -> tuple[np.ndarray, Start]:
    """The start of a solve from `params0` at time 0: the runs' natural time scales (which set their time grids
    and budgets) and the `Start` of the first leg."""
    batch = params0[0].shape[0]
    zeros = np.zeros(batch)
    at_start = _ends(net, loss, opts, params0, zeros, np.full(batch, RUNNING), X, y)
    return at_start.natural_time, Start(params=params0, t=zeros, record=at_start.final, decided=at_start.decided)


@functools.lru_cache(maxsize=64)
def _compiled_flow(net: Network, loss: str, solver_name: str, checkpoints: int, reparametrize: bool,
                   brief: bool = False):
    """The compiled leg of one (network, loss, method, grid) combination, as a `brief` program or compiled for
    speed; tolerances, budgets and targets are run-time values of `FlowOptions`. The program maps
    `(natural_time, start: Start, active, X, y, opts)` to `_Stopped`."""
    path = _Path(net, loss, reparametrize)
    objective, regression, depth = path.objective, path.regression, net.depth
    levels = jnp.zeros(0) if regression else jnp.asarray(LOG_LOSS_LEVELS)

    def time_grid(natural, opts: FlowOptions):
        """The time budget and the geometric checkpoint times of one run (set by its initialisation's time scale
        `natural`)."""
        t_max = jnp.where(jnp.isnan(opts.t_max), (1e12 if regression else 1e5) * natural, opts.t_max)
        t_first = jnp.minimum(1e-3 * natural, t_max / 10)
        grid = jnp.minimum(jnp.geomspace(t_first, t_max, checkpoints - 1), t_max)  # geomspace may round up
        return t_max, jnp.concatenate([jnp.zeros(1), grid])

    def solve_lockstep(flow_solver, natural, start: Start, active, X, y, opts: FlowOptions):
        """Regression with an explicit pair: the whole batch in one loop, each run with its own steps."""
        data_scale = jnp.linalg.norm(X, 2) * jnp.linalg.norm(y)
        _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda leaf: leaf[0], start.params))
        flatten = jax.vmap(lambda p: ravel_pytree(p)[0])
        field = jax.vmap(lambda v: ravel_pytree(path.velocity(unravel(v), X, y))[0])
        # The certificate of a batch: the costly part of the test runs once for all runs that need it.
        verdicts = jax.vmap(lambda v, f, wanted: path.verdict(unravel(v), f, X, y, opts, try_settled=wanted,
                                                              axis_name=BATCH_AXIS), axis_name=BATCH_AXIS)

        def stationary(Y, F):  # tested at every accepted point for free (FSAL): a zero field never moves again
            return jnp.all(F == 0, axis=1)

        def settled(Y, F, wanted):
            return verdicts(Y, F, wanted) != UNDECIDED

        def hint(Y, F):  # F = -grad L
            return jax.vmap(lambda v, f: gradient_small(v, f, opts.gtol, data_scale, depth))(Y, F)

        t_max, save_ts = jax.vmap(lambda n: time_grid(n, opts))(natural)
        end = lockstep_solve(field, stationary, lambda t, v: path.checkpoint(t, unravel(v), X, y),
                             flatten(start.params), solver=flow_solver.method(), rtol=opts.rtol, atol=opts.atol,
                             t_max=t_max, save_ts=save_ts, max_steps=opts.max_steps, settled=settled,
                             settle_every=tries_every(X.shape[0]), hint=hint, t0=start.t, active=active,
                             start_records=start.record, settled_at_start=start.decided != UNDECIDED)
        return _Stopped(params=jax.vmap(unravel)(end.y), t=end.t, records=end.records,
                        level_records=jax.tree_util.tree_map(lambda leaf: leaf[:, :0], end.records), stop=end.stop,
                        steps=end.steps, accepted=end.accepted,
                        grad_evals=jnp.asarray(flow_solver.grad_evals(end.steps)), recent_step=end.h)

    def solve_one(flow_solver, natural, start: Start, active, X, y, opts: FlowOptions, axis_name):
        """One run stepped by `stepped_solve`: classification (each run stops at its own target, located on the
        dense output, and is recorded at levels of -log L too) and implicit solvers. A run decided at the start (a
        target already met, a certified or stalled start) or not `active` ends there, with 0 steps. `axis_name`:
        the batch's, or None for a run solved alone (`over_runs`)."""
        t_max, ts = time_grid(natural, opts)

        def field(t, params):
            v = path.velocity(params, X, y)
            # A field that overflowed freezes the run where it is (reported nonfinite) instead of stalling the
            # solver.
            frozen = tree_nonfinite(v)
            return jax.tree_util.tree_map(lambda leaf: jnp.where(frozen, 0.0, leaf), v)

        if regression:
            def settled(t, params, wanted):
                # Under the batch's axis name the costly part of the certificate runs only where a run still
                # going interpolates (a batched `lax.cond` would run it at every step of every run).
                velocity = path.velocity(params, X, y)
                return path.verdict(params, velocity, X, y, opts, try_settled=wanted,
                                    axis_name=axis_name) != UNDECIDED

            def crossings(params):
                return jnp.ones(1)
        else:
            def settled(t, params, wanted):
                return jnp.asarray(False)

            def crossings(params):
                return jnp.stack([objective.log_loss(params, X, y) - opts.target_log_loss,
                                  opts.target_norm - tree_norm(params)])

        stepper = flow_solver.stepper(opts.rtol, opts.atol, axis_name)
        end = stepped_solve(field, start.params, start.t, stepper=stepper, t_max=t_max, max_steps=opts.max_steps,
                            record=lambda t, params: path.checkpoint(t, params, X, y), save_ts=ts, levels=levels,
                            level_of=lambda params: objective.log_loss(params, X, y), crossings=crossings,
                            settled=settled, active=active, first_record=start.record,
                            settled_at_start=start.decided != UNDECIDED)
        return _Stopped(params=end.y, t=end.t, records=end.records, level_records=end.level_records, stop=end.stop,
                        steps=end.steps, accepted=end.accepted,
                        grad_evals=jnp.asarray(flow_solver.grad_evals(end.steps, end.work)), recent_step=end.h)

    def solve(natural, start: Start, active, X, y, opts: FlowOptions):
        TRACE_COUNT["flow"] += 1
        in_turn = runs_in_turn()
        flow_solver = make_solver(solver_name, net.num_params, vmapped=start.t.shape[0] > 1 and not in_turn)
        if regression and flow_solver.lockstep:
            return solve_lockstep(flow_solver, natural, start, active, X, y, opts)
        return over_runs(functools.partial(solve_one, flow_solver), (0, 0, 0, None, None, None),
                         in_turn=in_turn)(natural, start, active, X, y, opts)

    return cached_program(solve, "flow.solve", net, loss, solver_name, checkpoints, reparametrize, brief=brief)


def _assembled(leg: Leg, depth: int, reparametrized: bool, batched: bool) -> FlowResult:
    """The `FlowResult` of a finished leg: one trajectory of the records of the time grid and of the levels in the
    order the path passed them, original time at each (a quadrature on the rescaled path), the statistics; its
    first run alone unless `batched`. In NumPy: a few small arrays, cheaper to handle than to compile."""
    leg = jax.tree_util.tree_map(np.asarray, leg)
    records = jax.tree_util.tree_map(lambda a, b: np.concatenate([a, b], axis=1), leg.records, leg.level_records)
    order = np.argsort(records.time, axis=1, kind="stable")
    records = jax.tree_util.tree_map(
        lambda leaf: np.take_along_axis(leaf, order.reshape(*order.shape, *[1] * (leaf.ndim - 2)), axis=1),
        records)
    if reparametrized:
        log_time, final_log_time = _reconstruct_log_time(records, leg.final, depth)
    else:
        with np.errstate(divide="ignore"):
            log_time = np.where(records.time > 0, np.log(records.time), -np.inf)
            final_log_time = np.log(leg.t)
    stats = Stats(steps=leg.steps, accepted_steps=leg.accepted, rejected_steps=leg.steps - leg.accepted,
                  grad_evals=leg.grad_evals, solver=leg.solver)
    result = FlowResult(params=leg.params, beta=leg.beta, status=leg.status, stats=stats, final=leg.final,
                        final_log_time=final_log_time, trajectory=Trajectory(checkpoints=records, log_time=log_time))
    return jax.tree_util.tree_map(lambda leaf: jnp.asarray(leaf if batched else leaf[0]), result)


def _log_dt_ds(c: Checkpoint, depth: int):
    """`a = log(dt/ds) = -log L + (2-L) log ||theta||` and its derivative in s."""
    a = -c.log_loss + (2 - depth) * np.log(c.param_norm)
    rate = -c.log_loss_rate + (2 - depth) * c.param_norm_rate / c.param_norm
    return a, rate


def _log_integral(s0, s1, a0, a1, r0, r1):
    """`log int_{s0}^{s1} exp(a(s)) ds` with `a` the cubic Hermite interpolant of values and slopes: exact at the
    ends, where the integrand is largest in the late phase (a grows like exp(s) there)."""
    h = s1 - s0
    u = (_GL_NODES + 1) / 2
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    a = h00 * a0[..., None] + h10 * (h * r0)[..., None] + h01 * a1[..., None] + h11 * (h * r1)[..., None]
    return np.log(h / 2) + scipy.special.logsumexp(a + np.log(_GL_WEIGHTS), axis=-1)


def _reconstruct_log_time(records: Checkpoint, final: Checkpoint, depth: int):
    """Per run of a batch: log of the original time at each reached record (`-inf` at the start, `inf` where not
    reached) and at the run's end. Unreached records are `inf`: what they give is masked out."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        a, rate = _log_dt_ds(records, depth)
        reached = np.isfinite(records.time)
        pieces = _log_integral(records.time[:, :-1], records.time[:, 1:], a[:, :-1], a[:, 1:], rate[:, :-1],
                               rate[:, 1:])
        pieces = np.where(reached[:, 1:], pieces, -np.inf)
        log_time = np.concatenate([np.full((len(pieces), 1), -np.inf), np.logaddexp.accumulate(pieces, axis=1)],
                                  axis=1)
        log_time = np.where(reached, log_time, np.inf)
        last = np.sum(reached, axis=1, keepdims=True) - 1

        def at_last(x):
            return np.take_along_axis(x, last, axis=1)[:, 0]

        a_end, rate_end = _log_dt_ds(final, depth)
        tail = _log_integral(at_last(records.time), final.time, at_last(a), a_end, at_last(rate), rate_end)
        tail = np.where(final.time > at_last(records.time), tail, -np.inf)
        return log_time, np.logaddexp(at_last(log_time), tail)
