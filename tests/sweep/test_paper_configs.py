"""Every config in configs/paper validates with `ltn validate` (no compute), and the paper-figure helpers
added for docs/reproduction.md behave on tiny inputs."""

import glob
import os

import numpy as np
import pytest

from ltn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAPER_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "paper", "*.toml")))


def test_there_are_paper_configs():
    assert len(PAPER_CONFIGS) >= 5


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=os.path.basename)
def test_paper_config_validates(path, capsys):
    assert main(["validate", path]) == 0, capsys.readouterr().err
    assert f"valid: {path}" in capsys.readouterr().out


def test_l1_interpolant_is_sparse_and_interpolates():
    from ltn.sweep._theory import l1_interpolant

    rng = np.random.default_rng(0)
    Z = rng.standard_normal((10, 20))
    truth = np.zeros(20)
    truth[3] = 1.0
    rho = l1_interpolant(Z, Z @ truth)
    assert np.allclose(Z @ rho, Z @ truth, atol=1e-8) and np.abs(rho).sum() <= 1.0 + 1e-9


def test_real_dft_of_length_two_is_a_real_odeco_network():
    import ltn
    from ltn.sweep._theory import real_odeco

    conv = ltn.Convolutional(2, 2)
    real = real_odeco(conv)
    assert real is not None and not np.iscomplexobj(real.odeco[0])
    x = np.array([0.3, -1.2])
    assert np.allclose(np.asarray(conv.data_tensor(x)), np.asarray(real.data_tensor(x)), atol=1e-14)
    assert real_odeco(ltn.Convolutional(4, 2)) is None and real_odeco(ltn.Diagonal(3, 2)) is None


def test_same_start_params_give_beta_zero():
    import ltn
    from ltn.sweep.paper import same_start_params

    for net in (ltn.Diagonal(2, 2), ltn.Convolutional(2, 2), ltn.FullyConnected(2, (2,)), ltn.Convolutional(4, 2, 2)):
        params = same_start_params(net, 0.5)
        assert np.allclose(np.asarray(net.beta(params)), 0.0)
        assert float(sum(np.sum(np.asarray(v) ** 2) for v in params)) > 0


def test_regression_scales_runs_at_the_default_flow_options():
    """Experiment 2 of docs/reproduction.md measures the engine at its defaults: no step budget, tolerance or stop
    tuned per run, one experiment per family, judged at 1e-8."""
    from ltn.sweep import expand, load_config
    from ltn.sweep._config import SolverSpec

    sweep = load_config(os.path.join(ROOT, "configs", "paper", "regression-scales.toml"))
    assert [e.name for e in sweep.experiments] == ["diagonal-scales", "odeco-scales", "fully-connected-scales"]
    for run in expand(sweep):
        assert run.check.tolerance == 1e-8
        for key in ("solver", "rtol", "atol", "max_steps", "t_max", "gtol", "xtol", "residual_tol"):
            assert getattr(run.solver, key) == getattr(SolverSpec(), key), (run.network, run.init.scale, key)


def test_classification_config_has_negative_controls():
    """docs/reproduction.md §3 reports the verdicts of the same flows judged against a wrong alternative."""
    from ltn.sweep import load_config

    sweep = load_config(os.path.join(ROOT, "configs", "paper", "classification.toml"))
    against = {e.name: e.base["check"].get("against") for e in sweep.experiments}
    assert against["negative-control-diagonal-vs-l2"] == "l2"
    assert against["negative-control-fully-connected-vs-l1"] == "l1"
