"""`ltn run / validate / report` end to end on the tiny sweep (reusing its compiles when run after
tests/sweep), plus `--help` and `--version`."""

import os
import subprocess
import sys

import pytest

from ltn import __version__
from ltn.cli import main
from ltn.sweep import read_rows
from tests.sweep.conftest import TINY


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and __version__ in capsys.readouterr().out
    assert main([]) == 0 and "validate" in capsys.readouterr().out


def test_console_entry_point():
    result = subprocess.run([sys.executable, "-m", "ltn.cli", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


def test_validate_reports_every_problem_with_file_and_field(tmp_path, config, capsys):
    assert main(["validate", str(config)]) == 0
    assert "diag-regression: regression, 4 runs in 1 compiled group" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("sparsity = 2", "sparsity = 2, nosie = 0.1").replace('"exponential"', '"x"')
                   .replace('init = { scale = 0.5 }', 'init = { scale = 0.5, knd = "theorem" }'))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: experiment[0].data.nosie: unknown key (did you mean 'noise'?)" in err
    assert f"{bad}: experiment[1].init.knd: unknown key (did you mean 'kind'?)" in err


def test_run_then_report(tmp_path, config, capsys):
    out = tmp_path / "out"
    status = main(["run", str(config), "--out", str(out), "--no-progress"])
    text = capsys.readouterr()
    rows = read_rows(str(out))
    assert len(rows) == 6
    assert status == (0 if all(row["passed"] for row in rows) else 1)
    assert "diag-regression:" in text.out and "diag-classification:" in text.out
    # An impossible tolerance fails the regression checks: non-zero exit and the failures are named.
    strict = tmp_path / "strict"
    assert main(["run", str(config), "--out", str(strict), "--no-progress", "--set", "check.tolerance=1e-300"]) == 1
    text = capsys.readouterr()
    assert "FAIL" in text.out and "failed their check" in text.err
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max rel. error" in text and "worst runs of diag-regression" in text
    assert os.path.exists(out / "diag-regression-final.png") and os.path.exists(out / "diag-regression-path.png")
    # A [report] table replaces the defaults: its figure is chosen from the config in the manifest (the rerun
    # computes nothing, it only records the config).
    reported = tmp_path / "reported.toml"
    reported.write_text(TINY + REPORT)
    assert main(["run", str(reported), "--out", str(out), "--no-progress"]) in (0, 1)
    assert "computed 0 of 6 runs" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert f"wrote {out / 'tiny-alignment.png'}" in capsys.readouterr().out
    assert os.path.getsize(out / "tiny-alignment.png") > 0


def test_run_with_the_bdf_solver(tmp_path, config, capsys):
    """`flow.solver = "bdf"` from the command line, end to end: every run solved by BDF, judged as the same run
    solved by Tsit5 is (one classification run of the tiny sweep is short of its direction at its target either
    way, and fails its check both times)."""
    rows = {}
    for solver in ("tsit5", "bdf"):
        out = tmp_path / solver
        main(["run", str(config), "--out", str(out), "--no-progress", "--set", f"flow.solver={solver}"])
        rows[solver] = sorted(read_rows(str(out)),
                              key=lambda row: (row["experiment"], row["init.scale"], row["seed"]))
    assert len(rows["bdf"]) == 6 and all(row["solver_used"] == "bdf" and row["grad_evals"] > 0 for row in rows["bdf"])
    for bdf, tsit5 in zip(rows["bdf"], rows["tsit5"]):
        assert (bdf["status"], bdf["verdict"]) == (tsit5["status"], tsit5["verdict"])
        # the same end points from the two methods at their tolerances: measured 3.1e-12 at most
        assert bdf["cosine"] == pytest.approx(tsit5["cosine"], abs=1e-8)


REPORT = """
[[report.figure]]
name = "alignment"
x = "log_loss"
y = ["one_minus_cosine", "distance_to_prediction"]
experiments = ["diag-classification"]
"""


def test_validate_names_a_bad_report_entry(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY + REPORT.replace('"one_minus_cosine"', '"one_minus_cosine", "margn_ratio"'))
    assert main(["validate", str(bad)]) == 2
    assert (f"{bad}: report.figure[0].y[1]: must be one of" in (err := capsys.readouterr().err)
            and "(did you mean 'margin_ratio'?)" in err)


def test_report_on_an_empty_folder_fails_clearly(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results" in capsys.readouterr().err


def test_packaged_quickstart_matches_the_repository_copy_and_validates(capsys):
    from ltn.cli import packaged_quickstart

    repository_copy = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "quickstart.toml")
    with packaged_quickstart() as path:
        with open(path) as packaged, open(repository_copy) as original:
            assert packaged.read() == original.read()
        assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("compiled group") == 4  # compiles dominate the quick start: keep it at four groups


def test_executor_table_and_flags(tmp_path, capsys):
    """`[executor]` is validated like any section, and the flags of `ltn run` win over it."""
    import argparse

    from ltn.cli import _executor
    from ltn.sweep import LocalExecutor, SlurmExecutor, loads_config

    bad = tmp_path / "bad.toml"
    bad.write_text(TINY + '\n[executor]\nkind = "slurmm"\npartiton = "gpu"\n')
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "executor.kind: must be one of ['local', 'ray', 'slurm']" in err
    assert "executor.partiton: unknown key (did you mean 'partition'?)" in err
    sweep = loads_config(TINY + '\n[executor]\nkind = "slurm"\npartition = "gpu"\ntime = 30\n')
    flags = argparse.Namespace(executor=None, address=None, partition=None, time=None, gpus=2)
    executor = _executor(flags, [sweep], str(tmp_path))
    assert isinstance(executor, SlurmExecutor)
    assert (executor.partition, executor.time, executor.gpus) == ("gpu", 30, 2)
    assert executor.folder == os.path.join(str(tmp_path), "jobs")
    flags.executor = "local"
    assert isinstance(_executor(flags, [sweep], str(tmp_path)), LocalExecutor)
    assert sweep.executor is not None and "executor" not in sweep.experiments[0].base  # never in a run's identity


@pytest.mark.slow  # submitit's job processes import JAX and compile: ~20 s on 2 shared cores
def test_run_with_the_slurm_executor_on_submitits_local_cluster(tmp_path, config):
    local, jobs = tmp_path / "local", tmp_path / "jobs"
    assert main(["run", str(config), "--out", str(local), "--no-progress", "--set", "experiment.1.seeds=[0]"]) in (0, 1)
    cluster = tmp_path / "cluster.toml"
    cluster.write_text(TINY + '\n[executor]\nkind = "slurm"\ncluster = "local"\n')
    assert main(["run", str(cluster), "--out", str(jobs), "--no-progress", "--set", "experiment.1.seeds=[0]"]) in (0, 1)
    ours, theirs = read_rows(str(jobs)), {row["run_id"]: row for row in read_rows(str(local))}
    assert sorted(row["run_id"] for row in ours) == sorted(theirs) and len(ours) == 5
    for row in ours:
        assert (row["status"], row["verdict"], row["final_beta_norm"]) == (
            theirs[row["run_id"]]["status"], theirs[row["run_id"]]["verdict"], theirs[row["run_id"]]["final_beta_norm"])
    assert os.path.isdir(jobs / "jobs")  # submitit's scripts and logs
