"""Discrete full-batch descent with optax, reporting what `gradient_flow` reports.

GD is the Euler discretisation of the flow and lands at a point a step-size-dependent distance from the flow's
limit (docs/theory.md §9); running both with the same summaries is how that bias is measured.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from ..losses import task_of
from ..networks import Network
from ._batching import as_batch, check_problem_arrays, first_run, over_runs, runs_in_turn
from ._certificate import UNDECIDED, gradient_small, regression_verdict, tries_every
from ._objective import Objective, tree_nonfinite, tree_norm
from ._options import FlowOptions, descent_options
from ._result import CONVERGED, NONFINITE, SOLVER_NAMES, FlowResult, Stats, Trajectory, final_status

def gradient_descent(net: Network, params0, X, y, loss: str = "squared", **options) -> FlowResult:
    """Full-batch descent on `L` (default `optax.sgd(learning_rate)`), inside one `lax.while_loop`.

    Arguments:
        net, params0, X, y, loss: as for `gradient_flow` (a batch of `params0` runs under one compile).
        **options: `FlowOptions` fields: exactly one of `learning_rate` (plain gradient descent) or `optimizer`
            (an optax GradientTransformation); `step_scaling` ("none", or "loss" for classification: steps on
            `log L`, i.e. the step `learning_rate / L`, which keeps making progress after `L` underflows);
            `max_steps`; `gtol`, `xtol`, `residual_tol` (regression: `converged` where the flow's certificate
            holds, `stalled` at an exactly zero gradient, `gtol` a hint to try the certificate at once);
            `target_log_loss`, `target_norm` (classification stops); `checkpoints` (summaries at geometrically
            spaced steps).

    Returns:
        A `FlowResult`; `final.time` and checkpoint `time` count steps, `log_time` is the log of the equivalent
        flow time `sum_k step_k` (NaN for a custom optimizer, whose step has no flow-time meaning).
    """
    task = task_of(loss)
    opts = descent_options(options).with_default_target(task)
    if opts.step_scaling == "loss" and task != "classification":
        raise ValueError("step_scaling='loss' is for classification losses")
    if np.isnan(opts.learning_rate) == (opts.optimizer is None):
        raise ValueError("give exactly one of learning_rate (plain gradient descent) or optimizer (an optax "
                         "GradientTransformation)")
    X, y = check_problem_arrays(net, X, y, task)
    params0, batched = as_batch(net, params0, X)
    static = (net, loss, opts.max_steps, opts.step_scaling, opts.checkpoints)
    build = _compiled_descent(*static) if opts.optimizer is None else _build_descent(*static, opts.optimizer)
    result = build(params0, X, y, opts)
    return result if batched else first_run(result)


@functools.lru_cache(maxsize=32)
def _compiled_descent(*static):
    return _build_descent(*static, None)


def _build_descent(net, loss, max_steps, step_scaling, num_checkpoints, optimizer):
    import optax  # here, not on import: only descent needs it

    objective = Objective(net, loss)
    regression = objective.task == "regression"
    depth = net.depth
    checkpoint_steps = np.unique(np.concatenate(
        [[0], np.geomspace(1, max_steps, num_checkpoints - 1).round().astype(int)]))
    # Pad to exactly `num_checkpoints` entries with an unreachable step, so results always have the same shape.
    checkpoint_steps = np.concatenate([checkpoint_steps, np.full(num_checkpoints - len(checkpoint_steps),
                                                                 max_steps + 1)])
    checkpoint_steps = jnp.asarray(checkpoint_steps)

    def descent_value(params, X, y):
        """What the step follows: L (plain) or log L (loss-scaled)."""
        if regression or step_scaling == "loss":
            return objective.value(params, X, y)
        return jnp.exp(objective.value(params, X, y))

    def solve_one(params0, X, y, opts: FlowOptions, axis_name):
        learning_rate = opts.learning_rate
        opt = optimizer if optimizer is not None else optax.sgd(learning_rate)
        scale = jnp.linalg.norm(X, 2) * jnp.linalg.norm(y)
        empty = jax.tree_util.tree_map(lambda leaf: jnp.full((num_checkpoints, *leaf.shape), jnp.inf, leaf.dtype),
                                       (objective.checkpoint(0, params0, X, y), jnp.zeros(())))

        def decide(params, value, grad, try_certificate):
            """`NONFINITE`, the status the certificate gives (regression: the flow's, tried where
            `try_certificate`; classification: `CONVERGED` at a target), or `UNDECIDED`."""
            if regression:
                code = regression_verdict(net, params, grad, X, y, opts.residual_tol, opts.xtol,
                                          try_settled=try_certificate, axis_name=axis_name)
            else:
                done = (value <= opts.target_log_loss) | (tree_norm(params) >= opts.target_norm)
                code = jnp.where(done, CONVERGED, UNDECIDED)
            bad = tree_nonfinite((params, grad)) | ~jnp.isfinite(value)
            return jnp.where(bad, NONFINITE, code)

        def cond(carry):
            step, _, _, _, _, code, _ = carry
            return (code < 0) & (step < max_steps)

        def body(carry):
            step, params, opt_state, records, k, code, log_time = carry
            value_grad = objective.value_and_grad(params, X, y)
            value, grad = value_grad
            record = (objective.checkpoint(step, params, X, y, learning_rate, value_grad), log_time)
            hit = checkpoint_steps[k] == step
            records = jax.tree_util.tree_map(
                lambda buffer, new: jnp.where(hit, buffer.at[k].set(new), buffer), records, record)
            # Running runs share `step` (a finished run's lane still passes through here under vmap, frozen).
            hinted = (step % tries_every(X.shape[0]) == 0) | gradient_small(params, grad, opts.gtol, scale, depth)
            code = decide(params, value, grad, (code < 0) & hinted)
            descent_grad = grad if (regression or step_scaling == "loss") else \
                jax.tree_util.tree_map(lambda g: jnp.exp(value) * g, grad)
            updates, opt_state = opt.update(descent_grad, opt_state, params)
            new_params = optax.apply_updates(params, updates)
            step_size = learning_rate if (regression or step_scaling == "none") else learning_rate * jnp.exp(-value)
            keep = code < 0  # a finished run keeps the point at which it stopped
            params = jax.tree_util.tree_map(lambda new, old: jnp.where(keep, new, old), new_params, params)
            log_time = jnp.where(keep, jnp.logaddexp(log_time, jnp.log(step_size)), log_time)
            return step + keep.astype(step.dtype), params, opt_state, records, k + hit, code, log_time

        carry = (jnp.asarray(0), params0, opt.init(params0), empty, jnp.asarray(0), jnp.asarray(-1),
                 jnp.asarray(-jnp.inf))
        steps, params, _, records, _, code, log_time = jax.lax.while_loop(cond, body, carry)
        value_grad = objective.value_and_grad(params, X, y)
        final = objective.checkpoint(steps, params, X, y, learning_rate, value_grad)
        records, record_log_times = records
        evals = steps + (code >= 0) + 1  # one gradient a step, the stopping point's, the final summary's
        # A run that used up max_steps is judged on its end point too.
        code = jnp.where(code < 0, decide(params, *value_grad, True), code)
        status = final_status(code == NONFINITE, code, False)
        stats = Stats(steps=steps, accepted_steps=steps, rejected_steps=jnp.zeros_like(steps), grad_evals=evals,
                      solver=jnp.asarray(SOLVER_NAMES.index("descent")))
        return FlowResult(params=params, beta=net.beta(params), status=status, stats=stats, final=final,
                          final_log_time=log_time,
                          trajectory=Trajectory(checkpoints=records, log_time=record_log_times))

    def solve(params0, X, y, opts: FlowOptions):
        return over_runs(solve_one, (0, None, None, None), in_turn=runs_in_turn())(params0, X, y, opts)

    return jit(solve)
