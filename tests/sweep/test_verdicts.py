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


# --- negative controls: the same end point judged against the theory and against a wrong hypothesis -------------

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import ltn  # noqa: E402
from ltn.sweep import expand, loads_config  # noqa: E402
from ltn.sweep import _theory  # noqa: E402
from ltn.theory import predict  # noqa: E402

DATA = ltn.data.separable_classification(0, 10, 6)


def _classification_run(network: str, against: str):
    text = (f'task = "classification"\ndata = {{ kind = "separable", n = 10, d = 6 }}\nnetwork = {network}\n'
            f'check = {{ against = "{against}", margin = 1e-3 }}\n')
    (run,) = expand(loads_config(text))
    return run


def _judge(net, network, against, params):
    run = _classification_run(network, against)
    return _theory.check_run(net, run, None, params, np.asarray(net.beta(params)), "converged", DATA.X, DATA.y)


def test_negative_controls_fail_where_the_theory_passes():
    # The theory's limits themselves as end points: a balanced diagonal point at the l1 max margin, and rank-one
    # aligned fully-connected layers at the l2 max margin.
    diagonal = ltn.Diagonal(6, 2)
    rho = predict(diagonal, DATA.X, DATA.y, "exponential").diagnostics["rho"]
    at_l1 = (jnp.asarray(np.sign(rho) * np.sqrt(np.abs(rho))), jnp.asarray(np.sqrt(np.abs(rho))))
    dense = ltn.FullyConnected(6, (2,))
    l2 = predict(dense, DATA.X, DATA.y, "exponential").beta
    at_l2 = (jnp.asarray(np.outer(l2, [0.6, 0.8])), jnp.asarray([[0.6], [0.8]]))
    theory = _judge(diagonal, '{ kind = "diagonal" }', "theory", at_l1)
    assert theory.verdict == "passed" and abs(theory.certificates.margin_ratio - 1) < 1e-9
    control = _judge(diagonal, '{ kind = "diagonal" }', "l2", at_l1)
    assert control.verdict == "failed" and control.check_kind == "against l2"
    assert "margin ratio" in control.reason  # measured cosine 0.95, margin ratio 0.84
    theory = _judge(dense, '{ kind = "fully_connected", widths = [2] }', "theory", at_l2)
    assert theory.verdict == "passed" and theory.certificate_name == "kkt_distance" and theory.certificate < 1e-8
    control = _judge(dense, '{ kind = "fully_connected", widths = [2] }', "l1", at_l2)
    assert control.verdict == "failed" and "margin ratio" in control.reason
    print(theory.certificates, control.cosine, control.certificates.margin_ratio)


def test_an_alternative_that_does_not_apply_to_the_task_is_refused(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(FC_REGRESSION + 'check = { against = "l2" }\n')
    assert main(["validate", str(config)]) != 0
    assert "check.against = 'l2' does not apply to regression" in capsys.readouterr().err
