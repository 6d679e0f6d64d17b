"""Progress off a terminal (one plain line per written batch) and the plateau warning before any compute."""

import os
import subprocess
import sys
import textwrap
import warnings

import pytest

from ltn.sweep import PlateauWarning, expand, loads_config
from ltn.sweep._budget import plateau_length, warn_short_budgets
from tests.sweep.conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow  # a fresh process compiles the tiny sweep: ~35 s on 2 shared cores
def test_ltn_run_with_stderr_piped_prints_a_line_per_batch(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    result = subprocess.run([sys.executable, "-m", "ltn.cli", "run", str(config), "--out", str(tmp_path / "out"),
                             "--no-cache"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("ltn: ")]
    # TINY: diag-regression is one group of 2 scales x 2 seeds (a batch per scale), diag-classification one
    # group of 2 seeds at one scale: three batches, three lines, the counts adding up to the 6 runs.
    assert len(lines) == 3, result.stderr
    assert lines[0].startswith("ltn: diag-regression: 2/4 runs (sweep: 2/6)")
    assert lines[1].startswith("ltn: diag-regression: 4/4 runs (sweep: 4/6)")
    assert lines[2].startswith("ltn: diag-classification: 2/2 runs (sweep: 6/6)")
    for line in lines:
        assert " s elapsed; +2 runs at init.scale " in line and " steps, " in line and " failed, " in line
    assert "\r" not in result.stderr  # no bar drawn into a pipe


def _runs(depth, scale, max_steps, task="regression", kind="theorem", solver="tsit5"):
    data = "sparse_gaussian" if task == "regression" else "separable"
    return expand(loads_config(textwrap.dedent(f"""
        name = "deep"
        task = "{task}"
        data = {{ kind = "{data}", n = 4, d = 8 }}
        network = {{ kind = "diagonal", depth = {depth} }}
        init = {{ kind = "{kind}", scale = {scale} }}
        flow = {{ solver = "{solver}", max_steps = {max_steps}{', learning_rate = 0.1' if solver == 'descent' else ''} }}
    """)))


def test_plateau_length_is_the_escape_point_of_the_theorem_flow():
    # G_3(inf) = pi / 2 and G_4(inf) = 1 (docs/theory.md §7): the plateau length at scale 0.1 is G * 10^(L-2).
    assert plateau_length(3, 0.1) == pytest.approx(10 * 3.141592653589793 / 2, rel=1e-12)
    assert plateau_length(4, 0.1) == pytest.approx(100, rel=1e-12)


def test_plateau_warning_fires_for_a_deep_tiny_scale_run_with_a_small_budget():
    with pytest.warns(PlateauWarning, match=r"deep: .*depth 5, init.scale 0.001: plateau ~7\.85e\+08 > max_steps "
                                             r"1000"):
        warned = warn_short_budgets(_runs(5, 0.001, 1000))
    assert len(warned) == 1


@pytest.mark.parametrize("case", [
    dict(depth=5, scale=0.001, max_steps=10**9),  # the budget covers the plateau (length 7.85e8)
    dict(depth=3, scale=0.1, max_steps=1000),  # a benign setting: plateau 16 steps
    dict(depth=2, scale=1e-6, max_steps=1000),  # depth 2 has no power-law plateau (log(1/alpha) only)
    dict(depth=5, scale=0.001, max_steps=1000, kind="gaussian"),  # no theorem for this start
    dict(depth=5, scale=0.001, max_steps=1000, task="classification"),
    # The implicit path is not held at a stability bound on the plateau (it crossed one of length 1e6 at depth 4,
    # scale 0.001, in 11506 steps), and descent's steps follow its learning rate.
    dict(depth=5, scale=0.001, max_steps=1000, solver="auto"),
    dict(depth=5, scale=0.001, max_steps=1000, solver="descent"),
])
def test_plateau_warning_stays_quiet_where_the_budget_suffices_or_no_theorem_applies(case):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlateauWarning)
        assert warn_short_budgets(_runs(**case)) == []


def test_run_sweep_warns_before_any_compute(tmp_path, monkeypatch):
    from ltn.sweep import _runner

    def no_compute(*args, **kwargs):
        raise AssertionError("solved before warning")

    monkeypatch.setattr(_runner, "solve_parts", no_compute)
    sweep = loads_config(textwrap.dedent("""
        name = "deep"
        task = "regression"
        data = { kind = "sparse_gaussian", n = 4, d = 8 }
        network = { kind = "diagonal", depth = 4 }
        init = { kind = "theorem", scale = 0.01 }
        flow = { solver = "tsit5", max_steps = 100 }
    """))
    with pytest.warns(PlateauWarning), pytest.raises(AssertionError, match="solved before warning"):
        _runner.run_sweep(sweep, str(tmp_path), progress=False)
