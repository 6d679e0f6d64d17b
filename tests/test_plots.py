"""Figures from the config's `[report]` table: chosen from a results folder built by a tiny sweep, bands joined
into one series, alpha in legend and colour, classification paths against -log L, and clear errors for a bad
table (named by figure and key) or a missing column."""

import tomllib

import numpy as np
import pytest

from ltn.plots import X_AXES, Y_QUANTITIES, plot_figure, report_figures
from ltn.sweep import ConfigError, FigureSpec, loads_config, parse_config, run_sweep

# Two bands of one experiment (they differ only in name and scales; the same budget keeps it to one compile, and
# test_bands_join_and_other_configs_stay_apart varies max_steps).
BANDS = """
name = "bands"
task = "regression"
data = { kind = "sparse_gaussian", n = 2, d = 4, sparsity = 1 }
network = { kind = "diagonal", depth = 2 }
flow = { solver = "tsit5", checkpoints = 8 }

[[experiment]]
name = "diag-small"
init = { kind = "theorem", scale = 0.5 }
flow = { max_steps = 3000 }

[[experiment]]
name = "diag-large"
init = { kind = "theorem", scale = 2.0 }
flow = { max_steps = 3000 }

[[report.figure]]
name = "limits"
x = "scale"
y = ["distance_to_prediction", "distance_limit_small"]
series = "depth"
"""


def _legend(axis) -> list[str]:
    legend = axis.get_legend()
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


def test_report_table_chooses_the_figure_and_joins_the_bands(tmp_path):
    config = tmp_path / "bands.toml"
    config.write_text(BANDS)
    from ltn.sweep import load_config

    run_sweep([load_config(config)], str(tmp_path / "out"), progress=False)
    ((name, figure),) = report_figures(str(tmp_path / "out"))
    assert name == "bands-limits.png"
    axes = figure.get_axes()
    assert [a.get_xlabel() for a in axes] == ["initial scale alpha"] * 2
    assert [a.get_ylabel() for a in axes] == [Y_QUANTITIES["distance_to_prediction"].label,
                                              Y_QUANTITIES["distance_limit_small"].label]
    # one series (L=2) over both bands: one labelled line through both scales
    lines = [line for line in axes[0].get_lines() if not line.get_label().startswith("_")]
    assert _legend(axes[0]) == ["L=2"] and len(lines) == 1
    assert list(lines[0].get_xdata()) == [0.5, 2.0]


def _row(experiment, scale, **config):
    row = {"run_id": f"{experiment}-{scale}", "experiment": experiment, "task": "regression", "seed": 0,
           "data.n": 2, "network.kind": "diagonal", "network.depth": 2, "init.scale": scale,
           "flow.max_steps": 100, "relative_error": 1e-3 * scale, "verdict": "passed", "prediction": "p"}
    return {**row, **config}


def _labelled_lines(axis):
    return [line for line in axis.get_lines() if not line.get_label().startswith("_")]


def test_bands_join_and_other_configs_stay_apart():
    spec = FigureSpec("f", "scale", ("distance_to_prediction",), series="network")
    rows = [_row("a-small", 0.1), _row("a-large", 1.0, **{"flow.max_steps": 9}), _row("b", 0.1, **{"data.n": 3}),
            _row("b", 1.0, **{"data.n": 3})]
    (axis,) = plot_figure(rows, spec).get_axes()
    # a-small and a-large are bands of one series; b has other data: the label says how it differs
    assert _legend(axis) == ["diagonal L=2 (n=2)", "diagonal L=2 (n=3)"]
    assert [list(line.get_xdata()) for line in _labelled_lines(axis)] == [[0.1, 1.0], [0.1, 1.0]]


def test_classification_paths_are_drawn_against_minus_log_loss_with_alpha_in_legend_and_colour():
    rows = [{**_row("c", scale), "task": "classification", "run_id": f"r{scale}"} for scale in (0.1, 1.0)]
    log_loss = np.array([0.5, -1.0, -10.0, -100.0])
    trajectories = {f"r{scale}": {"log_loss": log_loss, "log_time": np.array([-3.0, 0.0, 2.0, 9.0]),
                                  "cosine_to_prediction": np.array([0.5, 0.9, 0.99, 0.999])} for scale in (0.1, 1.0)}
    (axis,) = plot_figure(rows, FigureSpec("p", "log_loss", ("one_minus_cosine",)), trajectories).get_axes()
    assert axis.get_xlabel() == "-log L (along the path)" and axis.get_xscale() == "log"
    lines = _labelled_lines(axis)
    assert list(lines[0].get_xdata()) == [1.0, 10.0, 100.0]  # -log L > 0 only; not log time
    assert np.allclose(lines[0].get_ydata(), [0.1, 0.01, 0.001])
    assert _legend(axis) == ["alpha=0.1, diagonal L=2", "alpha=1, diagonal L=2"]
    assert lines[0].get_color() != lines[1].get_color()


def test_a_missing_column_is_named():
    with pytest.raises(ValueError, match="figure 'm': y 'margin_ratio' needs the results column 'margin_ratio'"):
        plot_figure([{**_row("c", 1.0), "task": "classification"}], FigureSpec("m", "scale", ("margin_ratio",)))


TABLE = """
task = "regression"
data = {{ kind = "sparse_gaussian", n = 2, d = 4 }}
network = {{ kind = "diagonal" }}

[[report.figure]]
{entry}
"""


@pytest.mark.parametrize("entry, needles", [
    ('name = "f"\nx = "scale"\ny = ["distance_to_prediction", "test_eror"]',
     ["c.toml: report.figure[0].y[1]: must be one of", "got 'test_eror' (did you mean 'test_error'?)"]),
    ('name = "f"\nx = "scael"\ny = "certificate"', ["report.figure[0].x: must be one of", "(did you mean 'scale'?)"]),
    ('name = "f"\nx = "scale"', ["report.figure[0].y: is required"]),
    ('name = "f"\nx = "depth"\ny = "teacher_error"\nseries = "depth"',
     ["report.figure[0].series: 'depth' is the x-axis already"]),
    ('name = "f"\nx = "scale"\ny = "test_error"', ["report.figure[0].y[0]: 'test_error'", "set data.n_test"]),
    ('name = "f"\nx = "log_loss"\ny = "one_minus_cosine"',
     ["report.figure[0].x: 'log_loss' applies to classification only"]),
    ('name = "f"\nx = "scale"\ny = "certificate"', ["report.figure[0].y[0]: 'certificate' applies to classification"]),
    ('name = "f"\nx = "scale"\ny = "teacher_error"\nexperiments = ["nope"]',
     ["report.figure[0].experiments[0]: no experiment is named 'nope'"]),
    ('name = "f"\nx = "scale"\ny = "teacher_error"\nkolour = 1', ["report.figure[0].kolour: unknown key"]),
    ('name = "a/b"\nx = "scale"\ny = "teacher_error"', ["report.figure[0].name: must be a simple file name"]),
])
def test_a_bad_report_entry_names_the_field(entry, needles):
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(TABLE.format(entry=entry)), "c.toml")
    for needle in needles:
        assert needle in str(error.value)


def test_a_good_report_table_parses_and_every_registry_entry_is_documented():
    sweep = parse_config(tomllib.loads(TABLE.format(entry='name = "f"\nx = "scale"\ny = "teacher_error"')))
    assert sweep.report.figures == (FigureSpec("f", "scale", ("teacher_error",)),)
    assert all(entry.doc for entry in (*X_AXES.values(), *Y_QUANTITIES.values()))
    with pytest.raises(ConfigError, match="data.n_test: is not used by data kind 'npz'"):
        loads_config('task = "regression"\ndata = { kind = "npz", path = "x.npz", n_test = 3 }\n'
                     'network = { kind = "diagonal" }')
