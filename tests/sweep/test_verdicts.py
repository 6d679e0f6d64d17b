"""Verdicts end to end: a run no theory judges is "not judged" (never "passed"), as a user sees it from `ltn run`."""

from ltn.cli import main
from ltn.sweep import read_rows

# Fully-connected regression at a finite initial scale: the theory names only the alpha -> 0 (min l2) and
# alpha -> inf (lazy) limits, so where this run ends is measured, not judged.
FC_REGRESSION = """
name = "fc-regression"
task = "regression"
seeds = [0, 1]
data = { kind = "sparse_gaussian", n = 3, d = 5, sparsity = 2 }
network = { kind = "fully_connected", widths = [2] }
init = { scale = 0.5 }
flow = { solver = "tsit5", rtol = 1e-9, atol = 1e-11, checkpoints = 8 }
"""


def test_fully_connected_regression_at_a_finite_scale_is_not_judged(tmp_path, capsys):
    config = tmp_path / "fc.toml"
    config.write_text(FC_REGRESSION)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0  # nothing failed
    text = capsys.readouterr().out
    assert "fc-regression: none judged, 2 not judged (check: limit)" in text
    assert "NOT JUDGED" in text and "no exact theory at a finite scale" in text
    assert "all 0 judged runs passed; 2 not judged" in text
    rows = read_rows(str(out))
    assert [row["verdict"] for row in rows] == ["not judged"] * 2
    assert not any(row["passed"] for row in rows)
    # Still measured: the distance to the min-l2 interpolant (its alpha -> 0 limit) is reported.
    assert all(row["prediction"] == "min l2 norm (alpha->0)" and row["relative_error"] > 0 for row in rows)
