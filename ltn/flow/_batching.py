"""Input checks and the single-or-batch convention shared by flow and descent, and how a per-run program runs over a
batch: vmapped, in turn, or on the run itself for a batch of one (`over_runs`), with a batch-wide predicate
(`any_run`)."""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._compile import jit
from ..networks import Network


BATCH_AXIS = "runs"  # the `axis_name` of the batch of runs in the per-run programs (`over_runs`)


def over_runs(per_run: Callable, in_axes: tuple, in_turn: bool = False) -> Callable:
    """`per_run(*args, axis_name=...)`, a function of one run, over a batch of runs (`in_axes`: 0 for the
    arguments with a leading batch axis, None for those shared): vmapped with `axis_name=BATCH_AXIS`, or, for a
    batch of one, called on that run alone with `axis_name=None`, its results given the batch axis back. Unbatched,
    the program is a fraction of the size (a loop's predicate is not batched, so its state is not selected at every
    iteration, and a `lax.cond` stays a branch): a single run traces and compiles in about half the time
    (benchmarks/RESULTS.md). `in_turn`: a batch runs one run after the other in one program (`lax.map` of the
    unbatched function), each at its own pace, instead of vmapped, where every run waits at each iteration of
    every loop for the slowest."""
    batched_run = jax.vmap(functools.partial(per_run, axis_name=BATCH_AXIS), in_axes=in_axes, axis_name=BATCH_AXIS)

    def taken_in_turn(*args):
        def one(run_args):
            run_args = iter(run_args)
            return per_run(*[next(run_args) if axis == 0 else arg for arg, axis in zip(args, in_axes)],
                           axis_name=None)

        return jax.lax.map(one, [arg for arg, axis in zip(args, in_axes) if axis == 0])

    @functools.wraps(per_run)
    def over(*args):
        leading = [leaf.shape[0] for arg, axis in zip(args, in_axes) if axis == 0
                   for leaf in jax.tree_util.tree_leaves(arg)]
        if leading and all(size == 1 for size in leading):
            one = [jax.tree_util.tree_map(lambda leaf: leaf[0], arg) if axis == 0 else arg
                   for arg, axis in zip(args, in_axes)]
            return jax.tree_util.tree_map(lambda leaf: jnp.expand_dims(leaf, 0), per_run(*one, axis_name=None))
        return taken_in_turn(*args) if in_turn else batched_run(*args)

    return over


def runs_in_turn() -> bool:
    """Whether the stepped per-run programs take a batch in turn (`over_runs(in_turn=True)`) rather than vmapped:
    on a CPU, where vmapping gains no parallelism and every run would wait at each iteration of every loop for the
    slowest (8 stiff regressions: 4.4 s in turn against 40 s vmapped after compilation, benchmarks/RESULTS.md); an
    accelerator runs the batch vmapped, in parallel."""
    return jax.default_backend() == "cpu"


def any_run(flag, axis_name: str | None):
    """Whether `flag` holds for any run of the batch vmapped with `axis_name` (`flag` itself where None): the
    predicate of a `lax.cond` that does costly work for the runs that ask for it, once for the whole batch (a
    batched `lax.cond` would run both branches for every run, every time)."""
    if axis_name is None:
        return flag
    return jax.lax.psum(flag.astype(int), axis_name) > 0


def as_batch(net: Network, params, X):
    """Return `(batch, was_batched)`: params with a leading batch axis on every layer, checked (dtype, and
    placement next to the data `X`) before anything is traced."""
    if isinstance(params, (tuple, list)) and [tuple(jnp.shape(p)) for p in params] == list(net.layer_shapes):
        return tuple(jnp.asarray(p)[None] for p in net.check_params(params, X=X)), False
    return tuple(jnp.asarray(p) for p in net.check_batch(params, "params0", X=X)), True


@jit(brief=True)
def first_run(batch):
    """The first run of a batched result (one compiled call instead of an indexing op per leaf)."""
    return jax.tree_util.tree_map(lambda leaf: leaf[0], batch)


def check_problem_arrays(net: Network, X, y, task: str):
    X, y = jnp.asarray(X, dtype=float), jnp.asarray(y, dtype=float)
    if X.ndim != 2 or X.shape[1] != net.d:
        raise ValueError(f"X must have shape (n, {net.d}) for this network, got {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got {y.shape}")
    # The checks run in NumPy: in JAX each would be a small program of its own, compiled (or loaded) every run.
    host_X, host_y = np.asarray(X), np.asarray(y)
    if not (np.all(np.isfinite(host_X)) and np.all(np.isfinite(host_y))):
        raise ValueError("X and y must be finite (found NaN or inf)")
    if task == "classification" and not np.all((host_y == 1) | (host_y == -1)):
        raise ValueError("classification losses need labels y in {-1, +1}")
    return X, y
