"""Run a validated sweep: one compiled, vmapped solve per group (in this process, or on Ray or SLURM workers:
`_executors`), sharded over the local devices, each batch's results written as soon as it is solved, finished
runs skipped on restart."""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from typing import Iterator

import jax
import numpy as np

from ..data import error_columns
from ..flow import STATUSES, gradient_flow
from ._budget import warn_short_budgets
from ._build import file_sha256, init_batch, input_files, network_and_problem
from ._config import RunSpec, SweepSpec
from ._executors import LocalExecutor
from ._grid import expand, group_id, group_runs, precision, run_columns, run_id
from ._progress import Progress, progress_mode
from ._results import ResultsStore, write_manifest
from ._theory import CONSISTENT, FAILED, NOT_JUDGED, Path, check_group


def _optax_optimizer(name: str, learning_rate: float):
    """Config optimizer names -> optax transformations ("sgd" is plain GD: gradient_descent's own default)."""
    import optax

    return {"momentum": lambda: optax.sgd(learning_rate, momentum=0.9), "adam": lambda: optax.adam(learning_rate)
            }[name]()


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    """What `run_sweep` did: every row of this sweep's runs (finished now or before), and the work done now."""

    out_dir: str
    rows: list
    runs_total: int
    runs_computed: int
    groups_computed: int

    @property
    def failed(self) -> list:
        """Rows whose verdict is "failed" (a run that is "not judged" has not failed; nor has it passed)."""
        return [row for row in self.rows if row["verdict"] == FAILED]

    @property
    def not_judged(self) -> list:
        return [row for row in self.rows if row["verdict"] == NOT_JUDGED]

    @property
    def consistent(self) -> list:
        """Rows whose verdict is "consistent": not yet within tolerance, converging at the theory's rate."""
        return [row for row in self.rows if row["verdict"] == CONSISTENT]


# --- sharding -------------------------------------------------------------------------------------------------


def pad_batch(params0, multiple: int):
    """Repeat the first member so the batch size is a multiple of `multiple` (the device count)."""
    size = params0[0].shape[0]
    extra = (-size) % multiple
    if extra == 0:
        return params0
    return tuple(np.concatenate([np.asarray(p), np.repeat(np.asarray(p)[:1], extra, axis=0)]) for p in params0)


def shard_batch(params0, X, y, devices=None):
    """Put the batch axis of `params0` across a 1-D device mesh and replicate the data. jit then partitions the
    vmapped solve along the batch (members are independent, so no communication is needed)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices() if devices is None else devices
    if len(devices) == 1:
        return params0, X, y
    mesh = Mesh(np.asarray(devices), ("batch",))
    batch = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    params0 = tuple(jax.device_put(np.asarray(p), batch) for p in params0)
    return params0, jax.device_put(np.asarray(X), replicated), jax.device_put(np.asarray(y), replicated)


# --- one group ---------------------------------------------------------------------------------------------------


def _parts(scales, descent: bool, devices) -> list[np.ndarray]:
    """The batches a group is solved in (indices into its runs), each written as soon as it is solved.

    On one device, one batch per initial scale (all under one compile when the batches have equal sizes, as in a
    grid). The scale sets a run's step count (small scales: long plateaus, up to 100x the steps), and in a lockstep
    batch every lane costs a step until the batch's slowest runs are gathered into its narrow last phase (only
    batches of 32 or more have one): mixing scales made the paper's regression-scales sweep 1.7x slower. Sharded
    over several devices, one batch spans all scales and seeds, so that every device has lanes to work on (a
    scale with fewer seeds than devices would leave devices idle). Descent takes the same steps in every lane:
    one batch.
    """
    if descent or len(devices) > 1:
        return [np.arange(len(scales))]
    scales = np.asarray(scales)
    return [np.flatnonzero(scales == scale) for scale in np.unique(scales)]


def _solve_part(net, problem, params0, first: RunSpec, devices):
    """One batched `gradient_flow` (or `gradient_descent`) call, padded and sharded over `devices`; returns
    `(result trimmed to the batch, solver_used, wall)` (`solver_used` None: per run, from the result)."""
    options = first.solver
    size = params0[0].shape[0]
    sharded, X, y = shard_batch(pad_batch(params0, len(devices)), problem.X, problem.y, devices)
    start = time.perf_counter()
    if options.solver == "descent":
        from ..flow import gradient_descent

        kwargs = options.descent_options()
        optimizer = kwargs.pop("optimizer")
        if optimizer not in (None, "sgd"):
            kwargs["optimizer"] = _optax_optimizer(optimizer, kwargs.pop("learning_rate"))
        result = gradient_descent(net, sharded, X, y, first.loss, **kwargs)
        solver_used = f"descent/{optimizer or 'sgd'}"
    else:
        result = gradient_flow(net, sharded, X, y, first.loss, **options.flow_options())
        solver_used = None  # "auto" may pick, or fall back to, an implicit solver
    result = jax.block_until_ready(result)
    wall = time.perf_counter() - start
    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[:size], result), solver_used, wall


def _setup(runs: list[RunSpec], shard: bool):
    net, problem = network_and_problem(runs[0])
    params0 = tuple(np.asarray(p) for p in init_batch(net, runs))
    devices = jax.local_devices() if shard else jax.local_devices()[:1]
    parts = _parts([run.init.scale for run in runs], runs[0].solver.solver == "descent", devices)
    return net, problem, params0, devices, parts


def solve_group(runs: list[RunSpec], *, shard: bool = True):
    """Solve every run of one group (in the batches of `_parts`) and put the results back in the order of `runs`.

    Returns `(net, problem, params0, result, solver_used, wall)`; `wall` is the time of all solves together.
    """
    net, problem, params0, devices, parts = _setup(runs, shard)
    solved = [_solve_part(net, problem, tuple(p[part] for p in params0), runs[0], devices) for part in parts]
    order = np.concatenate(parts)
    stacked = jax.tree_util.tree_map(lambda *leaves: np.concatenate(leaves), *(result for result, _, _ in solved))
    result = jax.tree_util.tree_map(lambda leaf: leaf[np.argsort(order, kind="stable")], stacked)
    return net, problem, params0, result, solved[0][1], sum(wall for _, _, wall in solved)


def solve_parts(runs: list[RunSpec], *, shard: bool = True) -> Iterator[tuple[list[dict], dict]]:
    """Solve one group batch by batch (`_parts`), yielding each batch's `(rows, trajectories)` as soon as it is
    solved and checked, so that a caller that writes them loses at most the batch in flight when killed."""
    net, problem, params0, devices, parts = _setup(runs, shard)
    for part in parts:
        members = [runs[i] for i in part]
        batch = tuple(p[part] for p in params0)
        result, solver_used, wall = _solve_part(net, problem, batch, runs[0], devices)
        yield group_rows(members, net, problem, batch, result, solver_used, wall)


def _trajectory(records, log_time, i, predicted_beta) -> dict[str, np.ndarray]:
    out = {
        "time": records.time[i], "log_time": log_time[i], "log_loss": records.log_loss[i],
        "param_norm": records.param_norm[i], "beta_norm": records.beta_norm[i], "margin": records.margin[i],
        "grad_norm": records.grad_norm[i],
    }
    direction = records.direction[i]
    if predicted_beta is not None and np.linalg.norm(predicted_beta) > 0:
        norm = np.linalg.norm(predicted_beta)
        with np.errstate(invalid="ignore", over="ignore"):
            out["cosine_to_prediction"] = direction @ (predicted_beta / norm)
            path_beta = direction * records.beta_norm[i][:, None]
            out["error_to_prediction"] = np.linalg.norm(path_beta - predicted_beta, axis=1) / norm
    return {key: np.asarray(value, dtype=float) for key, value in out.items()}


def _paths(records, final) -> list[Path]:
    """Each run's recorded path for the classification checks: its checkpoints, then its end point."""
    log_loss = np.concatenate([np.asarray(records.log_loss, dtype=float),
                               np.asarray(final.log_loss, dtype=float)[:, None]], axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        betas = np.concatenate([np.asarray(records.direction) * np.asarray(records.beta_norm)[..., None],
                                (np.asarray(final.direction) * np.asarray(final.beta_norm)[:, None])[:, None]],
                               axis=1)
    return [Path(log_loss[i], betas[i]) for i in range(len(log_loss))]


def group_rows(runs, net, problem, params0, result, solver_used, wall) -> tuple[list[dict], dict]:
    """One results row and one trajectory per run of a solved group (theory checks and the errors of
    `ltn.data.error_columns` included)."""
    rows, trajectories = [], {}
    gid = group_id(runs)
    started = time.perf_counter()
    statuses = [STATUSES[code] for code in np.asarray(result.status).tolist()]
    records, log_time = result.trajectory.checkpoints, result.trajectory.log_time
    paths = _paths(records, result.final) if runs[0].task == "classification" else None
    outcomes = check_group(net, runs, params0, result.params, result.beta, statuses, problem.X, problem.y,
                           paths=paths)
    errors = [error_columns(problem, beta) for beta in np.asarray(result.beta)]
    check_time = (time.perf_counter() - started) / len(runs)
    # Per-run values as Python lists, converted once for the group (not leaf by leaf, run by run).
    final = {name: np.asarray(getattr(result.final, name), dtype=float).tolist()
             for name in ("log_loss", "param_norm", "beta_norm", "margin", "grad_norm")}
    stats = {name: np.asarray(getattr(result.stats, name)).tolist()
             for name in ("steps", "accepted_steps", "rejected_steps", "grad_evals")}
    solvers = [solver_used] * len(runs) if solver_used else [str(name) for name in result.stats.solver_name]
    final_log_time = np.asarray(result.final_log_time, dtype=float).tolist()
    for i, (run, status, outcome) in enumerate(zip(runs, statuses, outcomes)):
        rid = run_id(run)
        row = {**run_columns(run), "run_id": rid, "group_id": gid, "status": status,
               **{f"final_{name}": values[i] for name, values in final.items()},
               "final_log_time": final_log_time[i], **{name: values[i] for name, values in stats.items()},
               "solver_used": solvers[i], "group_size": len(runs), "group_wall_time": wall,
               **outcome.columns(), **errors[i]}
        # The solve and the checks are shared: each run is charged its share of both.
        row["wall_time"] = wall / len(runs) + check_time
        rows.append(row)
        trajectories[rid] = _trajectory(records, log_time, i, outcome.predicted_beta)
    return rows, trajectories


# --- the sweep --------------------------------------------------------------------------------------------------


def run_sweep(sweeps: SweepSpec | list[SweepSpec], out_dir: str, *, progress: bool | str | None = None,
              shard: bool = True, max_groups: int | None = None, grouped: bool = True, executor=None,
              cache: str | None = None) -> SweepOutcome:
    """Run every run of the (validated) sweep(s) not yet recorded in `out_dir`.

    **Arguments:**

    - `progress`: None (default) shows a tqdm bar when stderr is a terminal and one line per finished batch
      otherwise; True a bar, False nothing, or "lines".
    - `shard`: spread each group's batch over all local devices (then one batch spans the group's scales).
    - `max_groups`: stop after that many groups were computed (to test resuming).
    - `grouped=False`: solve every run on its own (one call per run, same compile): the baseline of
      benchmarks/sweep.py.
    - `executor`: where groups are solved (`ltn.sweep._executors`: local by default, Ray, SLURM). Whatever the
      executor, only this process writes into `out_dir`.
    - `cache`: the compilation-cache folder workers of other processes should use (None: none).

    **Returns:** a `SweepOutcome`.

    The folder is locked for the whole sweep: `ResultsLocked` when another sweep writes into it, `ResultsError`
    when it cannot be written (both before any compute). Result files it cannot trust are set aside and their
    runs recomputed, with a `RecoveryWarning` (see `ResultsStore`). Each solved batch (one initial scale of a
    group, on one device) is written as soon as it is checked, so an interrupted sweep loses at most the batch
    in flight. A `PlateauWarning` says, before any compute, which runs cannot cross their saddle plateau within
    their step budget.
    """
    sweeps = [sweeps] if isinstance(sweeps, SweepSpec) else list(sweeps)
    runs = [run for sweep in sweeps for run in expand(sweep)]
    ids = [run_id(run) for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("two runs of this sweep have the same resolved config and seed; remove the duplicate")
    inputs = {path: file_sha256(path) for run in runs for path in input_files(run).values()}
    executor = LocalExecutor() if executor is None else executor
    with ResultsStore(out_dir) as store:  # locks the folder (ResultsLocked) and repairs it, before any compute
        write_manifest(out_dir, [{"source": s.source, "config": s.raw} for s in sweeps],
                       {"runs": len(runs), "groups": len(group_runs(runs)), "precision": precision(),
                        "input_sha256": inputs, "executor": type(executor).__name__})
        groups = [[run for run in group if run_id(run) not in store.done]
                  for group in (group_runs(runs) if grouped else [[run] for run in runs])]
        groups = [group for group in groups if group][:max_groups]
        warn_short_budgets([run for group in groups for run in group])
        total, done = Counter(run.experiment for run in runs), Counter(
            run.experiment for run, rid in zip(runs, ids) if rid in store.done)
        computed = 0
        with Progress(total, done, progress_mode(progress)) as shown:
            for _, rows, trajectories in executor.run(groups, shard=shard, cache=cache):
                fresh = [row for row in rows if row["run_id"] not in store.done]
                store.append(rows, trajectories)
                computed += len(fresh)
                if fresh:
                    shown.finished(fresh)
        store.merge_trajectories()
        by_id = {row["run_id"]: row for row in store.rows}
    rows = [by_id[i] for i in ids if i in by_id]
    return SweepOutcome(out_dir=os.fspath(out_dir), rows=rows, runs_total=len(runs), runs_computed=computed,
                        groups_computed=len(groups))
