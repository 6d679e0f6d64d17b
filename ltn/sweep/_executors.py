"""Where a sweep's groups are solved: in this process (`LocalExecutor`), as Ray tasks (`RayExecutor`), or as SLURM
jobs through submitit (`SlurmExecutor`).

A group (runs that share one compiled, batched solve) is the unit of work. Workers only compute: a worker returns
its group's rows and trajectories to the driver (through Ray's object store, or submitit's pickled result), and
only the driver, which holds the results folder's lock, writes them (`ResultsStore.append` records a run once,
whatever reaches it twice). A group whose worker dies is computed again: Ray resubmits the task (`max_retries`);
for submitit the driver resubmits every group whose job ended without a result. Either way nothing is lost, and
nothing is recorded twice.

Every executor's `run(groups, shard=...)` yields `(index of the group, rows, trajectories)` as results arrive, in
any order.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Iterator

from ._config import RunSpec


def compute_group(runs: list[RunSpec], shard: bool = True, cache: str | None = None) -> list[tuple[list, dict]]:
    """A worker's job: every batch of one group, as `[(rows, trajectories), ...]`. `cache`: the driver's
    compilation-cache folder, so that workers share compiled programs (None: no cache)."""
    if cache:
        from .._cache import enable_compilation_cache

        enable_compilation_cache(cache)
    from ._runner import solve_parts

    return list(solve_parts(runs, shard=shard))


def _call(work: Callable, *args):
    """A Ray task: `work(*args)` (Ray's `remote` takes functions, not any callable such as a partial)."""
    return work(*args)


class ExecutorError(RuntimeError):
    """Groups the executor could not compute (their workers kept failing), raised once every other group has
    landed; the message names each group and where the workers' logs are."""


@dataclasses.dataclass(frozen=True)
class LocalExecutor:
    """Solve the groups one after the other in this process, yielding each batch as soon as it is solved (so a
    kill loses at most the batch in flight)."""

    def run(self, groups: list[list[RunSpec]], *, shard: bool = True, cache: str | None = None
            ) -> Iterator[tuple[int, list, dict]]:
        from ._runner import solve_parts

        for index, group in enumerate(groups):
            for rows, trajectories in solve_parts(group, shard=shard):
                yield index, rows, trajectories


@dataclasses.dataclass(frozen=True)
class RayExecutor:
    """One Ray task per group, on the Ray cluster at `address` (None: the one `RAY_ADDRESS` names, else a local
    Ray started for this sweep and stopped after it; a Ray already initialised in this process is used as it is).

    `gpus`: GPUs per task (None: 1 when the cluster has GPUs, else 0); `cpus`: CPUs per task. A task whose worker
    dies is retried `retries` times by Ray. The workers import ltn and read the config's input files: on a
    cluster, ltn must be installed on every node and the files be where the config says. `work` is the function
    a task runs on one group (`compute_group`).
    """

    address: str | None = None
    gpus: float | None = None
    cpus: float = 1
    retries: int = 2
    work: Callable = compute_group

    def run(self, groups: list[list[RunSpec]], *, shard: bool = True, cache: str | None = None
            ) -> Iterator[tuple[int, list, dict]]:
        import ray

        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, log_to_driver=False)
        pending = {}
        try:
            gpus = self.gpus
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
            task = ray.remote(_call).options(num_cpus=self.cpus, num_gpus=gpus, max_retries=self.retries,
                                             retry_exceptions=False)
            pending = {task.remote(self.work, group, shard, cache): index for index, group in enumerate(groups)}
            failures = []
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                index = pending.pop(ready)
                try:
                    parts = ray.get(ready)
                except ray.exceptions.RayError as error:  # retries used up, or the group raised
                    failures.append(f"group {index}: {type(error).__name__}: {str(error).strip().splitlines()[0]}")
                    continue
                for rows, trajectories in parts:
                    yield index, rows, trajectories
            _raise_failures(failures, "the Ray workers' logs (ray logs, or /tmp/ray/session_latest/logs)")
        finally:
            for reference in pending:  # the driver stopped early (an error, an interrupt): stop the rest
                ray.cancel(reference, force=True)
            if started:
                ray.shutdown()


@dataclasses.dataclass(frozen=True)
class SlurmExecutor:
    """One SLURM job per group, submitted as one job array through submitit (`submitit.AutoExecutor`).

    `folder`: where submitit keeps job scripts, pickles and logs. `partition`, `time` (minutes per job), `gpus`
    (per job), `cpus` (per job). `cluster = "local"` runs the jobs as local processes instead (submitit's
    `LocalExecutor`: a laptop, or a test). The driver polls the jobs every `poll` seconds and resubmits a group
    whose job ended without a result (killed, preempted, out of time, or raised) up to `retries` times; a group
    still failing then is named in an `ExecutorError` raised once the other groups have landed.
    """

    folder: str
    partition: str | None = None
    time: int | None = None
    gpus: int | None = None
    cpus: int | None = None
    cluster: str = "slurm"
    retries: int = 2
    poll: float = 2.0
    work: Callable = compute_group

    def _executor(self):
        import submitit

        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        # Generic keys are translated per cluster; `slurm_` keys are ignored by the local cluster.
        executor.update_parameters(name="ltn", timeout_min=self.time, gpus_per_node=self.gpus or None,
                                   cpus_per_task=self.cpus, slurm_partition=self.partition)
        return executor

    def run(self, groups: list[list[RunSpec]], *, shard: bool = True, cache: str | None = None
            ) -> Iterator[tuple[int, list, dict]]:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        executor = self._executor()
        jobs = executor.map_array(self.work, groups, [shard] * len(groups), [cache] * len(groups))
        pending = {job: index for index, job in enumerate(jobs)}
        attempts = dict.fromkeys(range(len(groups)), 1)
        failures = []
        try:
            while pending:
                finished = [job for job in pending if job.done()]
                if not finished:
                    time.sleep(self.poll)
                for job in finished:
                    index = pending.pop(job)
                    try:
                        parts = job.result()
                    except (FailedJobError, UncompletedJobError) as error:
                        if attempts[index] > self.retries:
                            failures.append(f"group {index} failed {attempts[index]} times; its last job "
                                            f"{job.job_id} ended with {type(error).__name__} (log: "
                                            f"{job.paths.stderr})")
                            continue
                        attempts[index] += 1
                        pending[executor.submit(self.work, groups[index], shard, cache)] = index
                        continue
                    for rows, trajectories in parts:
                        yield index, rows, trajectories
            _raise_failures(failures, "the logs named")
        finally:
            for job in pending:
                job.cancel(check=False)


def _raise_failures(failures: list[str], logs: str) -> None:
    """After every other group has landed: an `ExecutorError` naming each group that could not be computed."""
    if failures:
        raise ExecutorError(f"{len(failures)} group(s) could not be computed (the others are written; running the "
                            f"sweep again computes only what is missing; see {logs}): " + "; ".join(failures))


EXECUTORS = ("local", "ray", "slurm")


def make_executor(kind: str, out_dir: str, **options):
    """The executor of `kind` (one of `EXECUTORS`) with the options of an `[executor]` table and the CLI flags
    (None: not given); submitit's folder defaults to `<out_dir>/jobs`."""
    options = {key: value for key, value in options.items() if value is not None}
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(**{key: options[key] for key in ("address", "gpus", "cpus", "retries") if key in options})
    if kind == "slurm":
        keys = ("partition", "time", "gpus", "cpus", "cluster", "retries")
        return SlurmExecutor(folder=os.path.join(out_dir, "jobs"), **{key: options[key] for key in keys
                                                                       if key in options})
    raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
