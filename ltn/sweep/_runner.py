"""Run a validated sweep: one compiled, vmapped solve per group, sharded over the local devices, each group's
results written as soon as it finishes, finished runs skipped on restart."""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax
import numpy as np

from ..flow import STATUSES, gradient_flow
from ._build import file_sha256, init_batch, input_files, network_and_problem
from ._config import RunSpec, SweepSpec
from ._grid import expand, group_id, group_runs, precision, run_columns, run_id
from ._results import ResultsStore, write_manifest
from ._theory import FAILED, NOT_JUDGED, check_group


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


# --- one group --------------------------------------------------------------------------------------------------


def solve_group(runs: list[RunSpec], *, shard: bool = True):
    """Solve every run of one group in one `gradient_flow` (or `gradient_descent`) call.

    Returns `(net, problem, params0, result, solver_used, wall)` with the batch trimmed to `len(runs)`.
    """
    first = runs[0]
    net, problem = network_and_problem(first)
    params0 = init_batch(net, runs)
    devices = jax.local_devices() if shard else jax.local_devices()[:1]
    options = first.solver
    start = time.perf_counter()
    if options.solver == "descent":
        from ..flow._descent import gradient_descent

        kwargs = options.descent_options()
        optimizer = kwargs.pop("optimizer")
        if optimizer not in (None, "sgd"):
            kwargs["optimizer"] = _optax_optimizer(optimizer, kwargs.pop("learning_rate"))
        sharded, X, y = shard_batch(pad_batch(params0, len(devices)), problem.X, problem.y, devices)
        result = gradient_descent(net, sharded, X, y, first.loss, **kwargs)
        solver_used = f"descent/{optimizer or 'sgd'}"
    else:
        result = _flow_by_scale(net, problem, params0, [run.init.scale for run in runs], first.loss,
                                options.flow_options(), devices)
        solver_used = None  # per run, from the result ("auto" may pick, or fall back to, an implicit solver)
    result = jax.block_until_ready(result)
    wall = time.perf_counter() - start
    size = len(runs)
    result = jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[:size], result)
    params0 = tuple(np.asarray(p)[:size] for p in params0)
    return net, problem, params0, result, solver_used, wall


def _flow_by_scale(net, problem, params0, scales, loss, options, devices):
    """One `gradient_flow` call per initial scale (all under one compile when the sub-batches have equal sizes, as
    in a grid). The scale sets a run's step count (small scales: long plateaus, up to 100x the steps), and in a
    lockstep batch every lane costs a step until the batch's slowest runs are gathered into its narrow last
    phase (only batches of 32 or more have one): mixing scales made the paper's regression-scales sweep 1.7x
    slower."""
    order = np.argsort(scales, kind="stable")
    scales = np.asarray(scales)[order]
    parts = []
    for scale in np.unique(scales):
        members = order[scales == scale]
        batch = pad_batch(tuple(np.asarray(p)[members] for p in params0), len(devices))
        sharded, X, y = shard_batch(batch, problem.X, problem.y, devices)
        result = jax.block_until_ready(gradient_flow(net, sharded, X, y, loss, **options))
        parts.append(jax.tree_util.tree_map(lambda leaf: np.asarray(leaf)[: len(members)], result))
    stacked = jax.tree_util.tree_map(lambda *leaves: np.concatenate(leaves), *parts)
    return jax.tree_util.tree_map(lambda leaf: leaf[np.argsort(order, kind="stable")], stacked)


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


def group_rows(runs, net, problem, params0, result, solver_used, wall) -> tuple[list[dict], dict]:
    """One results row and one trajectory per run of a solved group (theory checks included)."""
    rows, trajectories = [], {}
    gid = group_id(runs)
    started = time.perf_counter()
    statuses = [STATUSES[code] for code in np.asarray(result.status).tolist()]
    outcomes = check_group(net, runs, params0, result.params, result.beta, statuses, problem.X, problem.y)
    check_time = (time.perf_counter() - started) / len(runs)
    # Per-run values as Python lists, converted once for the group (not leaf by leaf, run by run).
    final = {name: np.asarray(getattr(result.final, name), dtype=float).tolist()
             for name in ("log_loss", "param_norm", "beta_norm", "margin", "grad_norm")}
    stats = {name: np.asarray(getattr(result.stats, name)).tolist()
             for name in ("steps", "accepted_steps", "rejected_steps", "grad_evals")}
    solvers = [solver_used] * len(runs) if solver_used else [str(name) for name in result.stats.solver_name]
    final_log_time = np.asarray(result.final_log_time, dtype=float).tolist()
    records, log_time = result.trajectory.checkpoints, result.trajectory.log_time
    for i, (run, status, outcome) in enumerate(zip(runs, statuses, outcomes)):
        rid = run_id(run)
        row = {**run_columns(run), "run_id": rid, "group_id": gid, "status": status,
               **{f"final_{name}": values[i] for name, values in final.items()},
               "final_log_time": final_log_time[i], **{name: values[i] for name, values in stats.items()},
               "solver_used": solvers[i], "group_size": len(runs), "group_wall_time": wall,
               **outcome.columns()}
        # The solve and the checks are shared: each run is charged its share of both.
        row["wall_time"] = wall / len(runs) + check_time
        rows.append(row)
        trajectories[rid] = _trajectory(records, log_time, i, outcome.predicted_beta)
    return rows, trajectories


# --- the sweep --------------------------------------------------------------------------------------------------


def _progress(total: int, initial: int, enabled: bool | None):
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, initial=initial, unit="run", file=sys.stderr, disable=disable, dynamic_ncols=True)


def run_sweep(sweeps: SweepSpec | list[SweepSpec], out_dir: str, *, progress: bool | None = None,
              shard: bool = True, max_groups: int | None = None, grouped: bool = True) -> SweepOutcome:
    """Run every run of the (validated) sweep(s) not yet recorded in `out_dir`.

    `progress`: a tqdm bar on stderr (default: only when stderr is a terminal). `shard`: spread each group's
    batch over all local devices. `max_groups` stops after that many groups were computed (to test resuming).
    `grouped=False` solves every run on its own (one call per run, same compile): the baseline of
    benchmarks/sweep.py.

    The folder is locked for the whole sweep: `ResultsLocked` when another sweep writes into it, `ResultsError`
    when it cannot be written (both before any compute). Result files it cannot trust are set aside and their
    runs recomputed, with a `RecoveryWarning` (see `ResultsStore`).
    """
    sweeps = [sweeps] if isinstance(sweeps, SweepSpec) else list(sweeps)
    runs = [run for sweep in sweeps for run in expand(sweep)]
    ids = [run_id(run) for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError("two runs of this sweep have the same resolved config and seed; remove the duplicate")
    inputs = {path: file_sha256(path) for run in runs for path in input_files(run).values()}
    with ResultsStore(out_dir) as store:  # locks the folder (ResultsLocked) and repairs it, before any compute
        write_manifest(out_dir, [{"source": s.source, "config": s.raw} for s in sweeps],
                       {"runs": len(runs), "groups": len(group_runs(runs)), "precision": precision(),
                        "input_sha256": inputs})
        wanted = set(ids)
        already = len(wanted & store.done)
        computed = groups = 0
        with _progress(len(runs), already, progress) as bar:
            for group in (group_runs(runs) if grouped else [[run] for run in runs]):
                todo = [run for run in group if run_id(run) not in store.done]
                if not todo:
                    continue
                if max_groups is not None and groups >= max_groups:
                    break
                bar.set_description(f"{todo[0].experiment} ({len(todo)} runs)")
                net, problem, params0, result, solver_used, wall = solve_group(todo, shard=shard)
                rows, trajectories = group_rows(todo, net, problem, params0, result, solver_used, wall)
                store.append(rows, trajectories)
                computed += len(todo)
                groups += 1
                bar.update(len(todo))
        store.merge_trajectories()
        by_id = {row["run_id"]: row for row in store.rows}
    rows = [by_id[i] for i in ids if i in by_id]
    return SweepOutcome(out_dir=os.fspath(out_dir), rows=rows, runs_total=len(runs), runs_computed=computed,
                        groups_computed=groups)
