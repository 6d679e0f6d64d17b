"""The executors end to end: one sweep (2 groups) solved in this process, by Ray tasks on a local Ray with 2
worker processes, and by submitit's local executor (one process per job) lands the same results, run by run; a
worker that dies (Ray) or a job that fails (submitit) is computed again, nothing lost or recorded twice."""

import functools
import os
import sys
import textwrap
import warnings

import numpy as np
import pytest
import ray  # the [ray] and [slurm] extras are part of [test]: a missing one fails here, it is never skipped
import submitit  # noqa: F401

from ltn.sweep import RayExecutor, SlurmExecutor, loads_config, read_rows, read_trajectories, run_sweep

pytestmark = pytest.mark.slow  # worker processes start, import JAX and compile: about 2.5 min on 2 shared cores

# Regression only, to keep the workers' compiles short (they share the driver's compilation cache).
CONFIG = textwrap.dedent("""
    name = "executors"
    task = "regression"
    seeds = [0, 1]
    data = { kind = "sparse_gaussian", n = 4, d = 8, sparsity = 2 }
    network = { kind = "diagonal", depth = [2, 3] }
    init = { scale = [0.5, 1.0] }
    flow = { solver = "tsit5", rtol = 1e-10, atol = 1e-12, checkpoints = 8 }
    check = { tolerance = 1e-5 }
""")
# Columns that say when and how fast, not what: they differ between any two runs of a sweep.
TIMING = {"wall_time", "group_wall_time"}


def _flaky(marker_dir, runs, shard=True, cache=None):
    """`compute_group`, except that the first attempt at the depth-3 group dies: the worker process exits (Ray) or
    the job raises (submitit: `fail = "raise"`). A marker file remembers the attempt across processes."""
    from ltn.sweep._executors import compute_group

    marker = os.path.join(marker_dir, "attempted")
    if runs[0].network.depth == 3 and not os.path.exists(marker):
        open(marker, "w").close()
        if os.path.exists(os.path.join(marker_dir, "raise")):
            raise RuntimeError("this job fails once")
        os._exit(1)
    return compute_group(runs, shard, cache)


def _pickle_this_module_by_value():
    """Workers may not import `tests` (CI installs ltn only): ship `_flaky` by value."""
    import cloudpickle
    from ray import cloudpickle as ray_cloudpickle

    for pickler in (cloudpickle, ray_cloudpickle):
        pickler.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def sweep():
    return loads_config(CONFIG)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A compilation cache for the workers (each is a fresh process): compiled once, loaded by the rest."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def local(sweep, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("local"))
    run_sweep(sweep, out, progress=False)
    return out


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module (starting one takes seconds): 2 CPUs, so 2 worker processes run tasks."""
    with warnings.catch_warnings():  # Ray starts its processes with fork + exec, which JAX warns about
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def assert_same_results(folder, reference):
    """Every run of `reference` is in `folder` exactly once, with the same status, verdict and every stored
    number (row and trajectory) equal to 1e-12; returns the largest difference found."""
    rows, expected = read_rows(folder), {row["run_id"]: row for row in read_rows(reference)}
    assert sorted(row["run_id"] for row in rows) == sorted(expected)  # each run once (read_rows refuses repeats)
    largest = 0.0
    for row in rows:
        theirs = expected[row["run_id"]]
        assert (row["status"], row["verdict"], row["passed"]) == (theirs["status"], theirs["verdict"], theirs["passed"])
        for column, value in theirs.items():
            if column in TIMING:
                continue
            if isinstance(value, float):
                np.testing.assert_allclose(row[column], value, rtol=0, atol=1e-12, err_msg=column)
                if np.isfinite(value):
                    largest = max(largest, abs(row[column] - value))
            else:
                assert row[column] == value, column
    paths, expected_paths = read_trajectories(folder), read_trajectories(reference)
    assert set(paths) == set(expected_paths)
    for run, quantities in expected_paths.items():
        for name, values in quantities.items():
            np.testing.assert_allclose(paths[run][name], values, rtol=0, atol=1e-12, err_msg=name)
            finite = np.isfinite(values)
            if finite.any():
                largest = max(largest, float(np.max(np.abs(paths[run][name][finite] - values[finite]))))
    return largest


def test_ray_tasks_land_the_local_results(sweep, local, ray_session, cache, tmp_path):
    outcome = run_sweep(sweep, str(tmp_path), progress=False, executor=RayExecutor(), cache=cache)
    assert outcome.groups_computed == 2 and outcome.runs_computed == 8
    # Measured: every stored number equal bit for bit (largest difference 0.0).
    assert assert_same_results(str(tmp_path), local) <= 1e-12


def test_submitit_jobs_land_the_local_results(sweep, local, cache, tmp_path):
    executor = SlurmExecutor(folder=str(tmp_path / "jobs"), cluster="local", poll=0.5)
    outcome = run_sweep(sweep, str(tmp_path / "out"), progress=False, executor=executor, cache=cache)
    assert outcome.groups_computed == 2 and outcome.runs_computed == 8
    assert assert_same_results(str(tmp_path / "out"), local) <= 1e-12


def test_ray_retries_a_group_whose_worker_died(sweep, local, ray_session, cache, tmp_path):
    _pickle_this_module_by_value()
    marker_dir = tmp_path / "marker"
    marker_dir.mkdir()
    executor = RayExecutor(work=functools.partial(_flaky, str(marker_dir)))
    run_sweep(sweep, str(tmp_path / "out"), progress=False, executor=executor, cache=cache)
    assert (marker_dir / "attempted").exists()  # the first attempt did die
    assert_same_results(str(tmp_path / "out"), local)


def test_submitit_resubmits_a_failed_job_and_gives_up_after_its_retries(sweep, local, cache, tmp_path):
    _pickle_this_module_by_value()
    marker_dir = tmp_path / "marker"
    marker_dir.mkdir()
    (marker_dir / "raise").touch()
    work = functools.partial(_flaky, str(marker_dir))
    executor = SlurmExecutor(folder=str(tmp_path / "jobs"), cluster="local", poll=0.5, work=work)
    run_sweep(sweep, str(tmp_path / "out"), progress=False, executor=executor, cache=cache)
    assert (marker_dir / "attempted").exists()
    assert_same_results(str(tmp_path / "out"), local)
    # With no retries left, the failure is an error naming the group and its log; the other group still landed.
    from ltn.sweep import ExecutorError

    (marker_dir / "attempted").unlink()
    executor = SlurmExecutor(folder=str(tmp_path / "jobs2"), cluster="local", poll=0.5, work=work, retries=0)
    with pytest.raises(ExecutorError, match="1 group.*failed 1 times.*log"):
        run_sweep(sweep, str(tmp_path / "again"), progress=False, executor=executor, cache=cache)
    assert len(read_rows(str(tmp_path / "again"))) == 4
