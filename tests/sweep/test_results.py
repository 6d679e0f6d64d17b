"""Results integrity, as a user meets it: a resumed sweep never trusts a result computed from other data, in
another precision or by another ltn; `passed` is read strictly; one writer per folder; damaged result files are
named and recovered from; a folder that cannot be written is a named error before compute; files get 0666 less
the umask. One regression experiment of two runs, shaped as the tiny sweep's (its compile is reused)."""

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from ltn.cli import main
from ltn.data import sparse_regression
from ltn.sweep import (
    CorruptResults,
    RecoveryWarning,
    ResultsError,
    ResultsLocked,
    expand,
    load_config,
    loads_config,
    read_rows,
    read_trajectories,
    run_id,
    run_sweep,
)
from ltn.sweep import _grid, _runner
from ltn.sweep._results import RESULTS, TRAJECTORIES, PARTS, ResultsStore

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The tiny sweep's regression experiment at one scale: two runs, one batch of two (the same compile).
CONFIG = """
name = "integrity"
task = "regression"
seeds = [0, 1]
data = { kind = "sparse_gaussian", n = 4, d = 8, sparsity = 2 }
network = { kind = "diagonal", depth = 2 }
init = { scale = 0.5 }
flow = { solver = "tsit5", rtol = 1e-10, atol = 1e-12, checkpoints = 16 }
check = { tolerance = 1e-5 }
"""


def _sweep(tmp_path, text=CONFIG):
    path = tmp_path / "integrity.toml"
    path.write_text(text)
    return load_config(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished results folder of CONFIG (copied by the tests that damage it)."""
    folder = tmp_path_factory.mktemp("finished")
    sweep = _sweep(folder)
    outcome = run_sweep(sweep, str(folder / "out"), progress=False)
    assert outcome.runs_computed == 2
    return sweep, folder / "out"


def _copy(finished, tmp_path):
    sweep, source = finished
    out = tmp_path / "out"
    shutil.copytree(source, out)
    return sweep, out


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the run id covers everything that determines a result ---------------------------------------------------


def test_resume_recomputes_when_the_data_file_changes(tmp_path):
    """Was: after the .npz was overwritten, a rerun printed "computed 0 of 1 ... all passed" on the old numbers."""
    problem = sparse_regression(0, 4, 8, 2)
    data = tmp_path / "data.npz"
    np.savez(data, X=problem.X, y=problem.y)
    sweep = _sweep(tmp_path, CONFIG.replace('kind = "sparse_gaussian", n = 4, d = 8, sparsity = 2',
                                            'kind = "npz", path = "data.npz"'))
    out = str(tmp_path / "out")
    first = run_sweep(sweep, out, progress=False)
    assert first.runs_computed == 2 and run_sweep(sweep, out, progress=False).runs_computed == 0

    np.savez(data, X=problem.X, y=-2.0 * problem.y)  # same shapes and path, other numbers (and in one process)
    again = run_sweep(sweep, out, progress=False)
    assert again.runs_computed == 2
    assert {row["data.sha256"] for row in again.rows} == {_sha256(data)}
    assert {row["run_id"] for row in again.rows}.isdisjoint(row["run_id"] for row in first.rows)
    # The new rows hold what a fresh sweep on the new data computes, not the old numbers (|beta| 0.85 -> 1.6).
    fresh = run_sweep(sweep, str(tmp_path / "fresh"), progress=False)
    for old, new, expected in zip(first.rows, again.rows, fresh.rows):
        assert new["final_beta_norm"] == expected["final_beta_norm"] != old["final_beta_norm"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["precision"] == "float64"
    assert manifest["input_sha256"] == {str(data): _sha256(data)}


RUN_ID = "from ltn.sweep import expand, loads_config, run_id; print(run_id(expand(loads_config('''{}'''))[0]))"


def test_run_id_covers_precision_and_version_and_is_stable_across_processes(monkeypatch):
    """Was: `LTN_FLOAT32=1 ltn run` into a float64 folder, or a new ltn, reused the old rows (computed 0)."""
    (run,) = expand(loads_config(CONFIG.replace("seeds = [0, 1]", "seeds = [0]")))
    processes = {
        name: subprocess.Popen([sys.executable, "-c", RUN_ID.format(CONFIG.replace("seeds = [0, 1]", "seeds = [0]"))],
                               env={**os.environ, **extra}, cwd=REPOSITORY, stdout=subprocess.PIPE, text=True)
        for name, extra in (("float64", {}), ("float32", {"LTN_FLOAT32": "1"}))}
    ids = {name: process.communicate(timeout=120)[0].strip() for name, process in processes.items()}
    assert ids["float64"] == run_id(run)  # another process, the same id
    assert ids["float32"] != run_id(run) and len(ids["float32"]) == 16
    monkeypatch.setattr(_grid, "__version__", "0.0.0+another")
    assert run_id(run) not in (ids["float64"], ids["float32"])
    assert _grid.run_columns(run)["ltn_version"] == "0.0.0+another"


# --- `passed` and `verdict` are read strictly ---------------------------------------------------------------


def test_a_spreadsheet_FALSE_is_an_error_not_a_pass(tmp_path, capsys):
    """Was: `passed` rewritten as FALSE read as True (`bool("FALSE")`): "all runs passed", exit 0."""
    sweep = _sweep(tmp_path, CONFIG.replace("tolerance = 1e-5", "tolerance = 1e-300"))  # every run fails
    out = tmp_path / "out"
    first = run_sweep(sweep, str(out), progress=False)
    assert [row["passed"] for row in first.rows] == [False, False]
    assert [row["verdict"] for row in first.rows] == ["failed", "failed"]
    path = out / RESULTS
    text = path.read_text()
    assert text.count(",false,failed,") == 2
    path.write_text(text.replace(",false,failed,", ",FALSE,failed,", 1))
    with pytest.raises(CorruptResults, match=re.escape(f"{path}:2: column 'passed' holds 'FALSE', but it is true or "
                                                       f"false")):
        read_rows(str(out))
    with pytest.warns(RecoveryWarning, match=re.escape(f"{path}:2: column 'passed'")):
        again = run_sweep(sweep, str(out), progress=False)
    assert again.runs_computed == 1  # the untrusted row is recomputed; the other is kept
    assert [row["verdict"] for row in again.rows] == ["failed", "failed"] and len(read_rows(str(out))) == 2
    assert any(name.startswith(f"{RESULTS}.corrupt-") for name in os.listdir(out))

    # Other cells that cannot be trusted: an unknown verdict, a verdict the `passed` cell contradicts.
    for bad, message in ((",false,failed,", ",false,Failed,"), "column 'verdict' holds 'Failed'"), \
                        ((",false,failed,", ",true,failed,"), "passed = true contradicts verdict = 'failed'"):
        path.write_text(path.read_text().replace(*bad, 1))
        with pytest.raises(CorruptResults, match=re.escape(f"{path}:") + r"\d+: " + re.escape(message)):
            read_rows(str(out))
        path.write_text(path.read_text().replace(bad[1], bad[0]))
    assert len(read_rows(str(out))) == 2  # the intact file reads

    # From the command line: one line names the file, and the recomputed run's real verdict sets the exit code.
    path.write_text(path.read_text().replace(",false,failed,", ",FALSE,failed,", 1))
    assert main(["run", str(tmp_path / "integrity.toml"), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ltn run: warning: results folder '{out}': {path}:2: column 'passed' holds 'FALSE'")
    assert "Traceback" not in err


# --- one writer per folder ------------------------------------------------------------------------------------


def test_a_second_writer_stops_at_once_and_nothing_is_duplicated(tmp_path):
    """Was: two `ltn run` into one --out both computed everything and both appended: 12 rows for 6 runs."""
    config = tmp_path / "integrity.toml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    with ResultsStore(str(out)):  # this process writes into the folder
        started = time.perf_counter()
        second = subprocess.run([sys.executable, "-m", "ltn.cli", "run", str(config), "--out", str(out),
                                 "--no-progress"], capture_output=True, text=True, cwd=REPOSITORY, timeout=120)
        elapsed = time.perf_counter() - started
        assert second.returncode == 2  # bad input: the folder is taken
        assert f"results folder {str(out)!r} is in use by another ltn run (pid {os.getpid()})" in second.stderr
        assert "computed" not in second.stdout and not (out / RESULTS).exists()
        with pytest.raises(ResultsLocked):
            run_sweep(load_config(config), str(out), progress=False)
    assert elapsed < 60  # it stopped before compiling: an import of ltn (measured 3-8 s on a loaded 2-core CPU)
    assert run_sweep(load_config(config), str(out), progress=False).runs_computed == 2  # the lock is released
    ids = [row["run_id"] for row in read_rows(str(out))]
    assert len(ids) == 2 == len(set(ids))


def test_rows_already_on_disk_are_not_appended_again(finished, tmp_path, monkeypatch):
    """Defensive: a writer that ignored the lock finished the same runs while this sweep solved them."""
    sweep, done = finished
    out = tmp_path / "out"
    solve = _runner._solve_part

    def solve_while_another_writer_finishes(*args, **kwargs):
        result = solve(*args, **kwargs)
        for name in (RESULTS, TRAJECTORIES):
            shutil.copy(done / name, out / name)
        return result

    monkeypatch.setattr(_runner, "_solve_part", solve_while_another_writer_finishes)
    outcome = run_sweep(sweep, str(out), progress=False)
    ids = [row["run_id"] for row in read_rows(str(out))]
    assert len(ids) == 2 == len(set(ids)) and len(outcome.rows) == 2
    assert set(read_trajectories(str(out))) == set(ids)


# --- damaged result files -----------------------------------------------------------------------------------


def _truncate_csv(out):
    text = (out / RESULTS).read_text()
    (out / RESULTS).write_text(text[: len(text) - 40])  # cut inside the last row
    return out / RESULTS, f"{out / RESULTS}:3: truncated"


def _headerless_csv(out):
    text = (out / RESULTS).read_text()
    (out / RESULTS).write_text(text.split("\n", 1)[1])
    return out / RESULTS, f"{out / RESULTS}:1: not a results header"


def _truncate_npz(out):
    data = (out / TRAJECTORIES).read_bytes()
    (out / TRAJECTORIES).write_bytes(data[: len(data) // 2])
    return out / TRAJECTORIES, f"{out / TRAJECTORIES}: not a readable trajectory archive"


def _part(content):
    def damage(out):
        # A sweep killed before its merge: the trajectories are still in a per-group part, and it is damaged.
        part = out / PARTS / "group.npz"
        part.parent.mkdir()
        os.replace(out / TRAJECTORIES, part)
        part.write_bytes(content)
        return part, f"{part}: not a readable trajectory archive"
    return damage


# (damage, runs recomputed): a row cut short is recomputed; rows without an intact trajectory too.
DAMAGES = {"truncated csv": (_truncate_csv, 1), "header-less csv": (_headerless_csv, 2),
           "truncated npz": (_truncate_npz, 2), "empty part": (_part(b""), 2), "non-zip part": (_part(b"PK no"), 2)}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_result_files_are_named_then_recovered(finished, tmp_path, damage):
    """Was: raw tracebacks (AttributeError, BadZipFile); a truncated trajectories.npz made every later sweep into
    the folder compute, save its rows, then crash at the merge."""
    sweep, out = _copy(finished, tmp_path)
    damaged, message = DAMAGES[damage][0](out)
    with pytest.raises(CorruptResults, match=re.escape(message)):  # a reader (`ltn report`) names the file
        read_rows(str(out)), read_trajectories(str(out))
    with pytest.warns(RecoveryWarning, match=re.escape(str(damaged))):
        outcome = run_sweep(sweep, str(out), progress=False)
    assert outcome.runs_computed == DAMAGES[damage][1] and len(outcome.rows) == 2
    ids = [row["run_id"] for row in read_rows(str(out))]
    assert sorted(ids) == sorted(run_id(run) for run in expand(sweep)) and set(read_trajectories(str(out))) == set(ids)
    aside = [name for name in os.listdir(damaged.parent) if name.startswith(f"{damaged.name}.corrupt-")]
    assert len(aside) == 1
    # Recovered for good: the next sweep into the folder (more seeds) computes only its new run, and merges.
    more = run_sweep(_sweep(tmp_path, CONFIG.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")), str(out),
                     progress=False)
    assert more.runs_computed == 1 and len(read_rows(str(out))) == 3


def test_an_intact_folder_is_not_touched(finished, tmp_path, recwarn):
    """The negative case of the recovery: nothing set aside, nothing recomputed, no warning."""
    sweep, out = _copy(finished, tmp_path)
    before = sorted(os.listdir(out))
    assert run_sweep(sweep, str(out), progress=False).runs_computed == 0
    assert not [w for w in recwarn if issubclass(w.category, RecoveryWarning)]
    assert sorted(os.listdir(out)) == before


# --- the folder itself ----------------------------------------------------------------------------------------


def _no_compute(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("computed before the results folder was found unusable")
    monkeypatch.setattr(_runner, "_solve_part", fail)


def test_an_unwritable_out_is_a_named_error_before_compute(tmp_path, monkeypatch):
    """Was: FileExistsError / PermissionError tracebacks."""
    sweep = _sweep(tmp_path)
    _no_compute(monkeypatch)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ResultsError, match=re.escape(f"cannot write results into {str(a_file)!r}: it is a file")):
        run_sweep(sweep, str(a_file), progress=False)
    with pytest.raises(ResultsError, match=re.escape(f"into {str(a_file / 'out')!r}: Not a directory")):
        run_sweep(sweep, str(a_file / "out"), progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_a_named_error_before_compute(tmp_path, monkeypatch):
    sweep = _sweep(tmp_path)
    _no_compute(monkeypatch)
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    with pytest.raises(ResultsError, match=re.escape(f"into {str(read_only / 'out')!r}: Permission denied")):
        run_sweep(sweep, str(read_only / "out"), progress=False)


def test_files_are_created_0666_less_the_umask(finished, tmp_path):
    """Was: 0600 (mkstemp) whatever the umask."""
    sweep, out = finished
    umask = os.umask(0)
    os.umask(umask)
    for name in (RESULTS, TRAJECTORIES, "manifest.json"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o666 & ~umask, name
    previous = os.umask(0o027)
    try:
        run_sweep(sweep, str(tmp_path / "out"), progress=False)
    finally:
        os.umask(previous)
    for name in (RESULTS, TRAJECTORIES, "manifest.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "out" / name).st_mode) == 0o640, name
