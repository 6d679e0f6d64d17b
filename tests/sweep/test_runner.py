"""The runner: one compile per group, resume after an interruption (no run lost or repeated), the results
schema, the theory verdict, and sharded = unsharded."""

import json
import os
import subprocess
import sys
import textwrap
import types
import zipfile

import numpy as np
import pytest

from ltn.flow import STATUSES, _gradient_flow
from ltn.sweep import (VERDICTS, expand, group_runs, load_config, loads_config, read_rows, read_trajectories, run_id,
                       run_sweep)
from ltn.sweep import _results, _theory
from ltn.sweep._results import OUTCOME_COLUMNS, TRAJECTORY_FIELDS


@pytest.fixture(scope="module")
def interrupted_sweep(tmp_path_factory):
    """Run the tiny sweep, crash while writing its second batch (the second initial scale of the first group: each
    scale is written as soon as it is solved), then resume; record what each step did."""
    from tests.sweep.conftest import TINY

    folder = tmp_path_factory.mktemp("sweep")
    config = folder / "tiny.toml"
    config.write_text(TINY)
    sweep = load_config(config)
    out = str(folder / "out")
    _gradient_flow._compiled_flow.cache_clear()  # count compiles from scratch
    traces_before = _gradient_flow.TRACE_COUNT["flow"]

    real_write_rows = _results.ResultsStore._write_rows
    calls = {"n": 0}

    def crash_on_second_batch(self, fresh, columns):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # trajectories of batch 2 written, its rows not: its runs are not recorded
        real_write_rows(self, fresh, columns)

    _results.ResultsStore._write_rows = crash_on_second_batch
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(sweep, out, progress=False)
    finally:
        _results.ResultsStore._write_rows = real_write_rows
    rows_after_crash = read_rows(out)
    trajectories_after_crash = read_trajectories(out)  # the crashed sweep's per-group archives, not merged
    resumed = run_sweep(sweep, out, progress=False)
    again = run_sweep(sweep, out, progress=False)
    return types.SimpleNamespace(sweep=sweep, out=out, rows_after_crash=rows_after_crash,
                                 trajectories_after_crash=trajectories_after_crash, resumed=resumed,
                                 again=again, traces=_gradient_flow.TRACE_COUNT["flow"] - traces_before)


def test_one_compile_per_group(interrupted_sweep):
    groups = group_runs(expand(interrupted_sweep.sweep))
    assert len(groups) == 2
    assert interrupted_sweep.traces == len(groups)  # the re-solve after the crash reuses the compile


def test_resume_loses_and_repeats_no_run(interrupted_sweep):
    runs = expand(interrupted_sweep.sweep)
    groups = group_runs(runs)
    # The kill came after the first scale of the first group was written: that scale's runs (2 seeds) survive.
    first_scale = min(run.init.scale for run in groups[0])
    kept = {run_id(run) for run in groups[0] if run.init.scale == first_scale}
    assert {row["run_id"] for row in interrupted_sweep.rows_after_crash} == kept and len(kept) == 2
    assert interrupted_sweep.resumed.runs_computed == len(runs) - len(kept)
    assert interrupted_sweep.again.runs_computed == 0 and interrupted_sweep.again.groups_computed == 0
    rows = read_rows(interrupted_sweep.out)
    ids = [row["run_id"] for row in rows]
    assert sorted(ids) == sorted(run_id(r) for r in runs) and len(set(ids)) == len(ids)
    assert set(read_trajectories(interrupted_sweep.out)) == set(ids)
    assert {row["run_id"] for row in interrupted_sweep.rows_after_crash} <= set(
        interrupted_sweep.trajectories_after_crash)
    # A finished sweep leaves one archive; the stale arrays of the crashed group were replaced, not duplicated.
    assert not os.path.exists(os.path.join(interrupted_sweep.out, _results.PARTS))
    with zipfile.ZipFile(os.path.join(interrupted_sweep.out, _results.TRAJECTORIES)) as archive:
        assert sorted(archive.namelist()) == sorted(f"{i}.npy" for i in ids)


def test_group_check_equals_run_by_run(interrupted_sweep):
    """check_group asks the theory for a whole group at once; every outcome equals the run's own check_run."""
    from ltn.flow import STATUSES
    from ltn.sweep._runner import solve_group

    for group in group_runs(expand(interrupted_sweep.sweep)):
        net, problem, params0, result, _, _ = solve_group(group)
        statuses = [STATUSES[int(code)] for code in result.status]
        grouped = _theory.check_group(net, group, params0, result.params, result.beta, statuses, problem.X,
                                      problem.y)
        for i, run in enumerate(group):
            single = _theory.check_run(net, run, tuple(p[i] for p in params0), tuple(p[i] for p in result.params),
                                       result.beta[i], statuses[i], problem.X, problem.y)
            assert grouped[i].passed == single.passed and grouped[i].prediction == single.prediction
            ours, theirs = grouped[i].columns(), single.columns()
            for column, value in theirs.items():
                if isinstance(value, float):  # batched and single theory agree to rounding (measured <= 1e-15)
                    np.testing.assert_allclose(ours[column], value, rtol=1e-9, atol=1e-13, err_msg=column)
                else:
                    assert ours[column] == value, column


def test_results_schema(interrupted_sweep):
    rows = read_rows(interrupted_sweep.out)
    for column in ("experiment", "task", "loss", "data.n", "network.kind", "init.scale", "flow.rtol",
                   "check.tolerance", "seed", *OUTCOME_COLUMNS):
        assert column in rows[0], column
    for row in rows:
        assert row["status"] in STATUSES
        # grad_evals is -1 where an implicit leg ran (its Newton-Krylov evaluations are not counted)
        assert row["steps"] > 0 and row["wall_time"] > 0
        assert row["grad_evals"] > 0 or row["solver_used"].startswith("kvaerno")
        assert isinstance(row["passed"], bool) and row["verdict"] in VERDICTS
        assert row["passed"] == (row["verdict"] == "passed") == (row["reason"] in (None, ""))
    trajectories = read_trajectories(interrupted_sweep.out)
    for quantities in trajectories.values():
        assert set(TRAJECTORY_FIELDS) - {"cosine_to_prediction", "error_to_prediction"} <= set(quantities)
        assert len({len(v) for v in quantities.values()}) == 1  # one value per checkpoint
    with open(os.path.join(interrupted_sweep.out, "manifest.json")) as stream:
        manifest = json.load(stream)
    assert {"ltn", "jax", "diffrax"} <= set(manifest["versions"])
    assert manifest["devices"] and "git_revision" in manifest and manifest["configs"][0]["config"]["name"] == "tiny"
    assert manifest["previous"]  # the resumed runs keep the history of earlier manifests


# --- the verdict, with a stand-in theory (no solve needed) -------------------------------------------------


@pytest.fixture
def fake_theory(monkeypatch):
    def install(beta, exact=True, residual=0.0):
        prediction = types.SimpleNamespace(beta=np.asarray(beta), name="stand-in", exact=exact, diagnostics={})
        monkeypatch.setattr(_theory, "predict", lambda net, X, y, loss, init=None: prediction)
        monkeypatch.setattr(_theory, "certificates",
                            lambda net, run, params, X, y, prediction, path=None: _theory.Certificates(residual, "kkt"))
    return install


def _run(task, **check):
    from tests.sweep.conftest import TINY  # noqa: F401  (same package: keeps imports uniform)
    text = ('task = "%s"\ndata = { kind = "%s", n = 2, d = 3 }\nnetwork = { kind = "diagonal" }\ncheck = { %s }\n'
            % (task, "sparse_gaussian" if task == "regression" else "separable",
               ", ".join(f"{k} = {v}" for k, v in check.items())))
    from ltn.sweep import loads_config
    (run,) = expand(loads_config(text))
    return run


def test_regression_verdict_uses_the_tolerance_and_labels_limits(fake_theory):
    from ltn.networks import Diagonal
    net, run = Diagonal(3, 2), _run("regression", tolerance=1e-6)
    fake_theory([1.0, 0.0, 0.0])
    ok = _theory.check_run(net, run, None, None, np.array([1.0, 0.0, 1e-7]), "converged", None, None)
    assert ok.passed and ok.check_kind == "exact" and ok.relative_error == pytest.approx(1e-7)
    far = _theory.check_run(net, run, None, None, np.array([1.0, 0.0, 1e-3]), "converged", None, None)
    assert not far.passed and "relative error" in far.reason
    stuck = _theory.check_run(net, run, None, None, np.array([1.0, 0.0, 0.0]), "budget_exhausted", None, None)
    assert not stuck.passed and "budget_exhausted" in stuck.reason  # never passes without converging
    assert (ok.verdict, far.verdict, stuck.verdict) == ("passed", "failed", "failed")
    # A limit in the initial scale judges nothing at a finite scale: measured, "not judged", never "passed".
    fake_theory([1.0, 0.0, 0.0], exact=False)
    limit = _theory.check_run(net, run, None, None, np.array([1.0, 0.0, 1e-3]), "converged", None, None)
    assert limit.check_kind == "limit" and limit.relative_error == pytest.approx(1e-3)
    assert limit.verdict == "not judged" and not limit.passed and "no exact theory" in limit.reason
    off = _theory.check_run(net, _run("regression", enabled="false"), None, None, np.zeros(3), "converged", None,
                            None)
    assert off.verdict == "not judged" and not off.passed


def test_classification_verdict_needs_cosine_and_certificate(fake_theory):
    from ltn.networks import Diagonal
    net, run = Diagonal(3, 2), _run("classification", cosine=0.99, certificate=1e-3)
    fake_theory([2.0, 0.0, 0.0], residual=1e-4)
    ok = _theory.check_run(net, run, None, None, np.array([5.0, 0.1, 0.0]), "converged", None, None)
    assert ok.passed and ok.check_kind == "direction" and ok.cosine > 0.99 and ok.certificate_name == "kkt"
    fake_theory([2.0, 0.0, 0.0], residual=1e-1)
    bad = _theory.check_run(net, run, None, None, np.array([5.0, 0.1, 0.0]), "converged", None, None)
    assert not bad.passed and "kkt 1.00e-01 > 1e-03" in bad.reason
    off = _theory.check_run(net, run, None, None, np.array([1.0, 1.0, 0.0]), "converged", None, None)
    assert not off.passed and "cosine" in off.reason


# --- sharding -----------------------------------------------------------------------------------------------

SHARDED = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np, ltn
from ltn.sweep import loads_config, expand, group_runs
from ltn.sweep._runner import _parts, shard_batch, pad_batch, solve_group
assert len(jax.local_devices()) == 4
sweep = loads_config('''
task = "regression"
seeds = [0, 1, 2]
data = { kind = "sparse_gaussian", n = 4, d = 8 }
network = { kind = "diagonal", depth = 2 }
init = { scale = [0.5, 1.0] }
flow = { solver = "tsit5", rtol = 1e-10, atol = 1e-12, checkpoints = 8 }
check = { enabled = false }
''')
(group,) = group_runs(expand(sweep))
params = pad_batch(tuple(np.ones((3, 8)) for _ in range(2)), 4)
sharded, X, y = shard_batch(params, np.ones((4, 8)), np.ones(4))
assert params[0].shape[0] == 4 and len(sharded[0].sharding.device_set) == 4
scales = [run.init.scale for run in group]
# Sharded, one batch spans both scales and all seeds (6 runs padded to 8 lanes on 4 devices); on one device, one
# batch per scale.
assert [len(p) for p in _parts(scales, False, jax.local_devices())] == [6]
assert [len(p) for p in _parts(scales, False, jax.local_devices()[:1])] == [3, 3]
a, b = solve_group(group, shard=True)[3], solve_group(group, shard=False)[3]
assert a.beta.shape == (6, 8)
print(float(np.max(np.abs(a.beta - b.beta))), np.array_equal(a.status, b.status))
"""


@pytest.mark.slow
def test_sharded_equals_unsharded():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SHARDED)], capture_output=True, text=True,
                            env=env, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    difference, same_status = result.stdout.split()[-2:]
    # Same runs, run by run, on 4 devices in one batch or on 1 device scale by scale: the same limits to solver
    # tolerance (measured: equal bit for bit, 0.0). Step counts are not compared: sharding changes the batches.
    assert float(difference) < 1e-8 and same_status == "True"


def test_batched_gaussian_init_equals_run_by_run():
    """A group's Gaussian inits come from one compiled program; each must equal its run's own `net.init` (to the
    last bit or two: compiled and eager sampling round differently, measured 1.2e-16 relative). Batches of other
    sizes on the same network share that program (one compile per network, not per batch size)."""
    from ltn.sweep._build import init_batch, init_params, network_and_problem

    sweep = loads_config(textwrap.dedent("""
        task = "regression"
        seeds = [0, 1, 5]
        data = { kind = "sparse_gaussian", n = 3, d = 6, sparsity = 1 }
        network = { kind = "diagonal", depth = 3 }
        init = { scale = [0.1, 2.0] }
    """), source="init")
    runs = expand(sweep)
    net, _ = network_and_problem(runs[0])
    batch = init_batch(net, runs)
    for i, run in enumerate(runs):
        for layer, single in zip(batch, init_params(net, run)):
            np.testing.assert_allclose(layer[i], single, rtol=1e-15, atol=0)
    from ltn.sweep._build import _gaussian_init

    init_batch(net, runs[:2])
    assert _gaussian_init(net)._cache_size() == 1
