"""Config validation (every class of error, reported before compute), grid expansion and grouping."""

import numpy as np
import pytest

from ltn.sweep import ConfigError, expand, group_runs, load_config, loads_config, run_id
from ltn.sweep._config import apply_overrides

BASE = """
task = "regression"
data = { kind = "sparse_gaussian", n = 4, d = 8 }
network = { kind = "diagonal", depth = 2 }
"""


def errors(text, tmp_path, name="config.toml"):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert all(line.startswith(str(path)) for line in message.splitlines()), message
    return message


def test_defaults_fill_every_optional_section():
    (run,) = expand(loads_config(BASE))
    assert run.loss == "squared" and run.seed == 0
    assert run.init.kind == "gaussian" and run.init.scale == 1.0
    assert run.solver.solver == "auto" and run.check.enabled and run.data.sparsity == 3


def test_unknown_keys_suggest_the_right_one(tmp_path):
    message = errors(BASE.replace("depth = 2", "depht = 2") + "chek = {}\n", tmp_path)
    assert "network.depht: unknown key (did you mean 'depth'?)" in message
    assert "chek: unknown key (did you mean 'check'?)" in message


def test_wrong_types_and_values_name_the_field(tmp_path):
    message = errors(BASE.replace("depth = 2", 'depth = "2"') + 'flow = { rtol = -1.0, solver = "tsit" }\n',
                     tmp_path)
    assert "network.depth: must be an integer" in message
    assert "flow.rtol: must be positive" in message
    assert "did you mean 'tsit5'" in message


def test_missing_required_sections(tmp_path):
    message = errors('seeds = [0]\n', tmp_path)
    for field in ("task", "data", "network"):
        assert f"{field}: is required" in message


@pytest.mark.parametrize("text, needle", [
    (BASE.replace("n = 4", "n = 8"), "n < d"),
    (BASE.replace('"regression"', '"classification"'), "generates regression data"),
    (BASE + 'loss = "logistic"\n', "is a classification loss"),
    (BASE.replace('"diagonal", depth = 2', '"fully_connected", depth = 2') + 'init = { kind = "theorem" }\n',
     "'theorem' needs an orthogonally decomposable network"),
    (BASE.replace('"diagonal", depth = 2', '"convolutional", depth = 2, filter_size = 3')
     + 'init = { kind = "theorem" }\n', "'theorem' needs an orthogonally decomposable network"),
    (BASE.replace('"diagonal", depth = 2', '"convolutional", depth = 2') + 'init = { kind = "theorem" }\n',
     "odeco over C only"),
    (BASE.replace('"diagonal", depth = 2', '"odeco", depth = 2, basis = "dft"') + 'init = { kind = "theorem" }\n',
     "odeco over C only"),
    (BASE + 'flow = { learning_rate = 0.1 }\n', "set solver = 'descent'"),
    (BASE + 'flow = { target_norm = 10.0 }\n', "classification stop"),
    (BASE.replace('"regression"', '"classification"').replace('"sparse_gaussian"', '"separable"')
     + 'flow = { xtol = 1e-8 }\n', "xtol: is part of the regression certificate"),
    (BASE.replace("d = 8 }", "d = 8, margin = 0.2 }"), "not used by data kind 'sparse_gaussian'"),
    (BASE.replace('"diagonal", depth = 2', '"fully_connected", widths = [3], depth = 3'), "disagrees with widths"),
    (BASE + "seeds = [1, 1]\n", "must not repeat seeds"),
    (BASE.replace("depth = 2", "depth = []"), "empty list"),
])
def test_impossible_combinations(tmp_path, text, needle):
    assert needle in errors(text, tmp_path)


def test_non_separable_npz_is_rejected_before_compute(tmp_path):
    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.savez(tmp_path / "bad.npz", X=X, y=np.array([1.0, -1.0, 1.0]))
    text = ('task = "classification"\ndata = { kind = "npz", path = "bad.npz" }\n'
            'network = { kind = "diagonal", depth = 2 }\n')
    assert "not linearly separable" in errors(text, tmp_path)


def test_npz_paths_resolve_against_the_config_folder(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", X=rng.standard_normal((3, 6)), y=rng.standard_normal(3))
    (tmp_path / "c.toml").write_text('task = "regression"\ndata = { kind = "npz", path = "data.npz" }\n'
                                     'network = { kind = "diagonal" }\n')
    (run,) = expand(load_config(tmp_path / "c.toml"))
    assert run.data.path == "data.npz" and run.base_dir == str(tmp_path)


def test_lists_are_axes_and_seeds_times_scales_form_one_group():
    text = BASE.replace("depth = 2", "depth = [2, 3]") + "seeds = [0, 1, 2]\ninit = { scale = [0.1, 1.0] }\n"
    runs = expand(loads_config(text))
    assert len(runs) == 2 * 3 * 2
    groups = group_runs(runs)
    assert [len(g) for g in groups] == [6, 6]
    assert {r.network.depth for r in groups[0]} == {2}
    assert groups[0][0].init.scale == 1.0  # stiffest member first: solver="auto" decides from it
    assert len({run_id(r) for r in runs}) == len(runs)


def test_list_valued_fields_sweep_only_as_lists_of_lists():
    text = BASE.replace('"diagonal", depth = 2', '"fully_connected", widths = [[4], [4, 4]]')
    runs = expand(loads_config(text))
    assert [r.network.widths for r in runs] == [(4,), (4, 4)]
    (run,) = expand(loads_config(BASE.replace('"diagonal", depth = 2', '"fully_connected", widths = [4, 5]')))
    assert run.network.widths == (4, 5) and run.network.depth == 3


def test_experiments_merge_over_shared_defaults_and_must_have_unique_names(tmp_path):
    text = """seeds = [0, 1]
flow = { rtol = 1e-6 }
[[experiment]]
name = "a"
task = "regression"
data = { kind = "sparse_gaussian", n = 4, d = 8 }
network = { kind = "diagonal" }
flow = { atol = 1e-9 }
[[experiment]]
name = "b"
task = "classification"
data = { kind = "separable", n = 4, d = 8 }
network = { kind = "fully_connected", widths = [3] }
"""
    runs = expand(loads_config(text))
    assert len(runs) == 4
    a = [r for r in runs if r.experiment == "a"][0]
    assert a.solver.rtol == 1e-6 and a.solver.atol == 1e-9
    assert [r for r in runs if r.experiment == "b"][0].loss == "exponential"
    assert "two experiments are named 'a'" in errors(text.replace('name = "b"', 'name = "a"'), tmp_path)


def test_overrides_reach_every_experiment():
    raw = {"seeds": [0], "experiment": [{"flow": {"rtol": 1.0}}, {"task": "x"}]}
    out = apply_overrides(raw, ["flow.rtol=1e-8", "seeds=[3, 4]"])
    assert out["experiment"][0]["flow"]["rtol"] == 1e-8 and out["flow"]["rtol"] == 1e-8
    assert out["seeds"] == [3, 4] and raw["experiment"][0]["flow"]["rtol"] == 1.0


def test_run_id_depends_on_every_field_and_the_seed():
    runs = expand(loads_config(BASE + "seeds = [0, 1]\n"))
    other = expand(loads_config(BASE + "seeds = [0, 1]\nflow = { rtol = 1e-7 }\n"))
    ids = {run_id(r) for r in runs + other}
    assert len(ids) == 4
    assert run_id(runs[0]) == run_id(expand(loads_config(BASE + "seeds = [0, 1]\n"))[0])


def test_descent_options_are_checked(tmp_path):
    message = errors(BASE + 'flow = { solver = "descent", rtol = 1e-6, step_scaling = "loss" }\n', tmp_path)
    assert "flow.learning_rate: is required" in message
    assert "flow.rtol: is an ODE-solver option" in message
    assert "for classification losses only" in message


def test_fully_connected_width_defaults_to_the_input_dimension():
    (run,) = expand(loads_config(BASE.replace('"diagonal", depth = 2', '"fully_connected", depth = 3')))
    from ltn.sweep._build import network_and_problem
    net, _ = network_and_problem(run)
    assert net.widths == (8, 8)


def test_overrides_index_lists_and_leave_experiment_names_alone():
    raw = {"name": "s", "seeds": [0, 1], "experiment": [{"name": "a", "seeds": [2]}, {"name": "b"}]}
    out = apply_overrides(raw, ["seeds.0=7", "experiment.1.seeds=[9]", "name=t"])
    assert out["seeds"] == [7, 1] and [e["seeds"] for e in out["experiment"]] == [[7], [9]]
    assert [e["name"] for e in out["experiment"]] == ["a", "b"] and out["name"] == "t"
    with pytest.raises(ConfigError, match=r"seeds is a list of 1 entries; '1' is not one of its indices"):
        apply_overrides(raw, ["seeds.1=7"])  # experiment a's own seeds hold one entry


def test_grid_size_counts_runs_without_expanding():
    from ltn.sweep._config import grid_size

    sweep = loads_config(BASE.replace("depth = 2", "depth = [2, 3, 4]") + "seeds = [0, 1]\n"
                         "init = { scale = [0.1, 1.0] }\n")
    assert grid_size(sweep.experiments[0]) == len(expand(sweep)) == 12


def test_names_alike_in_file_names_are_refused_within_a_config(tmp_path):
    text = "".join(f'[[experiment]]\nname = "{name}"\n{BASE}' for name in ("x y", "x/y"))
    message = errors(text, tmp_path)
    assert "experiment[1].name: must be a simple file name" in message
    text = "".join(f'[[experiment]]\nname = "{name}"\n{BASE}' for name in ("x y", "x.y"))
    assert "experiments 'x y' and 'x.y' would write the same files (both become 'x_y'" in errors(text, tmp_path)


# ---- init kinds "shaped" and "file" ---------------------------------------------------------------------


def test_shaped_init_is_checked_before_compute(tmp_path):
    (run,) = expand(loads_config(BASE + 'init = { kind = "shaped", scale = 0.1 }\n'))
    assert run.init.shape == 0.0 and run.init.path is None  # balanced by default
    message = errors(BASE + 'init = { kind = "shaped", shape = 1.0 }\n', tmp_path)
    assert "init.shape: must be < 1 (Azulay et al.'s shape s lies in [0, 1)), got 1.0" in message
    message = errors(BASE + 'init = { kind = "gaussian", shape = 0.5, path = "x.npz" }\n', tmp_path)
    assert "init.shape: is not used by init kind 'gaussian' (it uses ['scale'])" in message
    assert "init.path: is not used by init kind 'gaussian'" in message
    message = errors(BASE.replace("depth = 2", "depth = 3") + 'init = { kind = "shaped" }\n', tmp_path)
    assert "init.kind: 'shaped' (Azulay et al. 2021) is defined for depth-2 orthogonally decomposable" in message
    runs = expand(loads_config(BASE + 'init = { kind = "shaped", shape = [0.0, 0.5] }\n'))
    assert len(group_runs(runs)) == 2  # the shape is static: one compiled solve per shape


def write_init(path, *layers):
    np.savez(path, **{f"layer{l}": layer for l, layer in enumerate(layers)})


def test_file_init_is_checked_before_compute_and_hashed_into_the_run_id(tmp_path):
    config = BASE + 'init = { kind = "file", path = "init.npz", scale = [1.0, 0.5] }\n'
    message = errors(config, tmp_path)
    assert f"init.path: init file {str(tmp_path / 'init.npz')!r} does not exist" in message
    write_init(tmp_path / "init.npz", np.ones(8), np.ones(7))
    assert "init.path: init file" in errors(config, tmp_path) and "layer1 (7,)" in errors(config, tmp_path)
    write_init(tmp_path / "init.npz", np.ones(8), np.full(8, 2.0))
    assert "holds one initialisation (no leading axis), so the 2 seeds [0, 1]" in errors(
        config + "seeds = [0, 1]\n", tmp_path)
    (tmp_path / "config.toml").write_text(config)
    runs = expand(load_config(tmp_path / "config.toml"))
    before = {run_id(run) for run in runs}
    write_init(tmp_path / "init.npz", np.ones(8), np.full(8, 3.0))  # same path, other contents: other runs
    assert before.isdisjoint(run_id(run) for run in runs) and len(before) == 2
    from ltn.sweep._build import init_batch, network_and_problem

    net, _ = network_and_problem(runs[0])
    batch = init_batch(net, runs)
    np.testing.assert_array_equal(batch[1], [np.full(8, 3.0), np.full(8, 1.5)])  # scale times the file
    write_init(tmp_path / "init.npz", np.ones((2, 8)), np.ones((2, 8)))
    assert "holds 2 initialisations (entries 0 to 1), but seed 2 asks for entry 2" in errors(
        config + "seeds = [0, 2]\n", tmp_path)
