"""Figures of sweep results, as the config's `[report]` table asks for them.

A figure (`ltn.sweep.FigureSpec`) draws one panel per quantity (`Y_QUANTITIES`: test error, distance to the
prediction, distances to the scale limits, margin ratio, 1 - cosine, certificate) against an x-axis (`X_AXES`:
initial scale, depth, -log L, time), one series per depth or per network (`SERIES`). Runs whose configs differ
only in the experiment name, the seed, the step budget and what the x-axis varies are one series, so an experiment
split into step-budget bands is drawn as one. A panel draws each run's path when its quantity is recorded along
the path and x is -log L or time (colour: the initial scale alpha, named in the legend), else each run's end value
(line: the mean over seeds; open markers: not judged, crosses: failed).

Plotting functions take results (the DataFrame of `ltn.sweep.load`, or rows) and return matplotlib Figures; they
never solve anything. `report_figures(folder)` chooses the figures of a results folder from the configs in its
manifest (per-experiment defaults where a config has no `[report]` table); `ltn report` saves them as PNGs.
These registries are the choices the config schema offers (`ltn.sweep._config` checks `[report]` against them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from .sweep import FigureSpec

TASKS = ("regression", "classification")


@dataclasses.dataclass(frozen=True)
class Axis:
    """An x-axis: its label, the results column of a run's end value (`sign` -1: drawn negated), the trajectory
    quantity along the path (None: end values only), the tasks it applies to, and the config columns it varies
    itself (runs that differ in them belong to one series)."""

    label: str
    end: str
    path: str | None
    log: bool
    doc: str
    sign: float = 1.0
    tasks: tuple[str, ...] = TASKS
    varies: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A y quantity: its label, the results column it needs, its value at a run's end (`end(frame)`, one per row)
    and along a path (`path(task, trajectory)`, None: not recorded along the path), and the tasks it applies to."""

    label: str
    column: str
    end: Callable
    doc: str
    path: Callable | None = None
    tasks: tuple[str, ...] = TASKS


X_AXES: dict[str, Axis] = {
    "scale": Axis("initial scale alpha", "init.scale", None, True, "the initial scale alpha (end values)",
                  varies=("init.scale",)),
    "depth": Axis("depth L", "network.depth", None, False, "the depth L (end values)",
                  varies=("network.depth", "network.widths", "network.filter_sizes")),
    "log_loss": Axis("-log L", "final_log_loss", "log_loss", True,
                     "-log L, the classification flow's progress (paths, or end values of flows run to several "
                     "targets)", sign=-1.0, tasks=("classification",),
                     varies=("flow.target_log_loss", "flow.target_norm")),
    "time": Axis("log(gradient-flow time)", "final_log_time", "log_time", False,
                 "the logarithm of the gradient-flow time (paths, or end values)",
                 varies=("flow.t_max", "flow.target_log_loss", "flow.target_norm")),
}


def _column(name: str) -> Callable:
    return lambda frame: frame[name].to_numpy(dtype=float, na_value=np.nan)


def _prediction_distance_path(task: str, trajectory: dict):
    if task == "regression":
        return trajectory.get("error_to_prediction")
    cosine = trajectory.get("cosine_to_prediction")
    # |u - v| of unit vectors with cosine c: the classification `relative_error` of a run's end point
    return None if cosine is None else np.sqrt(np.maximum(2.0 - 2.0 * cosine, 0.0))


def _one_minus_cosine_path(task: str, trajectory: dict):
    cosine = trajectory.get("cosine_to_prediction")
    return None if cosine is None else 1.0 - cosine


Y_QUANTITIES: dict[str, Quantity] = {
    "test_error": Quantity("test error (held out)", "test_error", _column("test_error"),
                           "the end predictor's error on the held-out test set (`data.n_test`): mean squared error "
                           "(regression), 0-1 error (classification)"),
    "teacher_error": Quantity("||beta - beta*||^2 / ||beta*||^2", "teacher_error", _column("teacher_error"),
                              "the relative squared distance of the end predictor to the teacher beta*",
                              tasks=("regression",)),
    "distance_to_prediction": Quantity(
        "distance to the prediction", "relative_error", _column("relative_error"),
        "|beta - beta_pred| / |beta_pred| (regression), |beta/|beta| - direction| (classification)",
        path=_prediction_distance_path),
    "distance_limit_small": Quantity("distance to the alpha->0 limit (l1 / min-l2)", "distance_limit_small",
                                     _column("distance_limit_small"),
                                     "relative distance to the alpha -> 0 limit (l1 point; min-l2 for fully "
                                     "connected networks)", tasks=("regression",)),
    "distance_limit_large": Quantity("distance to the alpha->inf limit (l2 / lazy)", "distance_limit_large",
                                     _column("distance_limit_large"),
                                     "relative distance to the alpha -> inf limit (l2 point, or the lazy limit)",
                                     tasks=("regression",)),
    "margin_ratio": Quantity("margin ratio", "margin_ratio", _column("margin_ratio"),
                             "the `margin_ratio` column (classification)", tasks=("classification",)),
    "one_minus_cosine": Quantity("1 - cosine(beta, prediction)", "cosine",
                                 lambda frame: 1.0 - _column("cosine")(frame),
                                 "1 - cosine between beta and the predicted direction", path=_one_minus_cosine_path),
    "certificate": Quantity("certificate residual (KKT / singular vectors)", "certificate", _column("certificate"),
                            "the KKT or singular-vector residual of the end point", tasks=("classification",)),
}

SERIES: dict[str, str] = {
    "depth": "one series per depth L",
    "network": "one series per network (kind, depth, widths, filters)",
}

# Config columns that tell series apart (outcome columns never do), and those that never do: the experiment name
# (bands), the seed (a series' runs) and the step budgets (bands).
_CONFIG_PREFIXES = ("data.", "network.", "init.", "flow.", "check.")
_NOT_SERIES = ("experiment", "seed", "flow.max_steps", "flow.t_max")
_STYLES = ("-", "--", ":", "-.")


def _frame(results) -> "pd.DataFrame":
    import pandas as pd

    return results if isinstance(results, pd.DataFrame) else pd.DataFrame(list(results))


def _trajectory_records(trajectories) -> dict[str, dict[str, np.ndarray]]:
    """The long-form DataFrame of `ltn.sweep.load_trajectories`, or `{run_id: {quantity: array}}`, as the latter."""
    import pandas as pd

    if trajectories is None:
        return {}
    if not isinstance(trajectories, pd.DataFrame):
        return trajectories
    columns = [c for c in trajectories.columns if c not in ("run_id", "checkpoint")]
    return {str(run): {c: part[c].to_numpy(dtype=float) for c in columns}
            for run, part in trajectories.groupby("run_id", sort=False)}


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _series_of(frame: "pd.DataFrame", series: str, varies: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """(labels, index of each row's series): one series per distinct config, less what never tells series apart
    and the columns `varies` (what the x-axis, or a path's colour, varies). Labels name the depth or the network,
    and the other config values that differ between series only where two series would share a label."""
    identity = [c for c in frame.columns if (c.startswith(_CONFIG_PREFIXES) or c in ("task", "loss"))
                and c not in _NOT_SERIES and c not in varies]
    text = frame[identity].map(repr) if identity else frame.iloc[:, :0]
    keys = [tuple(row) for row in text.itertuples(index=False)]
    distinct = list(dict.fromkeys(keys))
    varying = [c for c in identity if text[c].nunique() > 1]
    if series == "depth":
        named = ["network.depth"]  # a series per depth: other differences go into the label only where needed
    else:
        named = ["network.kind", "network.depth",
                 *(c for c in varying if c.startswith("network.") and c not in ("network.kind", "network.depth"))]
    first = {key: frame.iloc[keys.index(key)] for key in distinct}

    def describe(row, columns) -> str:
        parts = []
        for c in columns:
            value = row[c]
            if c == "network.depth":
                parts.append(f"L={_text(value)}")
            elif c == "network.kind":
                parts.append(str(value))
            elif value is not None and not (isinstance(value, float) and np.isnan(value)):
                parts.append(f"{c.split('.', 1)[-1]}={_text(value)}")
        return " ".join(parts)

    base = [describe(first[key], named) for key in distinct]
    labels = []
    for key, label in zip(distinct, base):
        sharing = [other for other, other_label in zip(distinct, base) if other_label == label]
        if len(sharing) > 1:
            apart = [c for c in varying if c not in named
                     and len({repr(first[other][c]) for other in sharing}) > 1]
            label = f"{label} ({describe(first[key], apart)})"
        labels.append(label)
    return labels, np.asarray([distinct.index(key) for key in keys], dtype=int)


def _positive_log(axis, values) -> None:
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if finite.size and np.all(finite > 0):
        axis.set_yscale("log")


def _draw_paths(axis, frame, labels, series, quantity: Quantity, x: Axis, trajectories) -> list[float]:
    """One line per run along its path: colour = initial scale (or series when there is one scale), line style =
    series. Returns the values drawn."""
    import matplotlib

    scales = sorted(frame["init.scale"].unique())
    by_scale = len(scales) > 1
    colours = matplotlib.colormaps["viridis"]
    tab10 = matplotlib.colormaps["tab10"]
    position = {s: i / max(len(scales) - 1, 1) * 0.9 for i, s in enumerate(scales)}
    drawn, seen = [], set()
    for (_, row), s in zip(frame.iterrows(), series):
        record = trajectories.get(str(row["run_id"]))
        if record is None:
            continue
        ys = quantity.path(row["task"], record)
        xs = record.get(x.path)
        if ys is None or xs is None:
            continue
        xs = x.sign * np.asarray(xs, dtype=float)
        keep = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if x.log else True)
        if not keep.any():
            continue
        colour = colours(position[row["init.scale"]]) if by_scale else tab10(s % 10)
        style = _STYLES[s % len(_STYLES)] if by_scale else "-"
        key = (row["init.scale"], s) if by_scale else s
        label = None
        if key not in seen:
            label = f"alpha={_text(row['init.scale'])}, {labels[s]}" if by_scale else labels[s]
        seen.add(key)
        axis.plot(xs[keep], ys[keep], style, marker=".", ms=3, color=colour, lw=1.2, alpha=0.85, label=label)
        drawn += list(ys[keep])
    if not by_scale and seen and len(scales) == 1:
        axis.legend(title=f"alpha = {_text(scales[0])}", fontsize=7, title_fontsize=7)
    elif seen:
        axis.legend(fontsize=7)
    return drawn


def _draw_ends(axis, frame, labels, series, quantity: Quantity, x: Axis) -> list[float]:
    """Each run's end value (markers by verdict) and, per series, a line through the mean over its runs at each
    x. Returns the values drawn."""
    import matplotlib

    tab10 = matplotlib.colormaps["tab10"]
    xs = x.sign * frame[x.end].to_numpy(dtype=float, na_value=np.nan)
    ys = quantity.end(frame)
    verdicts = frame["verdict"].astype(str).to_numpy() if "verdict" in frame else np.full(len(frame), "passed")
    keep = np.isfinite(xs) & np.isfinite(ys) & ((xs > 0) if x.log else True)
    drawn = []
    for s, label in enumerate(labels):
        mine = keep & (series == s)
        if not mine.any():
            continue
        colour = tab10(s % 10)
        points = sorted(set(xs[mine]))
        axis.plot(points, [np.mean(ys[mine & (xs == p)]) for p in points], "-", color=colour, lw=1.1, label=label)
        for verdict, marker, fill in (("passed", "o", None), ("consistent", "^", None), ("not judged", "o", "none"),
                                      ("failed", "x", None)):
            chosen = mine & (verdicts == verdict)
            if chosen.any():
                axis.plot(xs[chosen], ys[chosen], marker, color=colour, ms=4, mfc=fill)
        drawn += list(ys[mine])
    if drawn:
        axis.legend(fontsize=7, title="open: not judged, triangle: consistent, x: failed", title_fontsize=6)
    return drawn


def plot_figure(results, spec: "FigureSpec", trajectories=None) -> "Figure":
    """One figure of a `[report]` table.

    Arguments:
        results: the runs, as the DataFrame of `ltn.sweep.load` or a list of rows (`ltn.sweep.read_rows`); the
            figure draws those of `spec.experiments` (all when empty).
        spec: the figure (`ltn.sweep.FigureSpec`): x-axis, quantities (one panel each), series.
        trajectories: the long-form DataFrame of `ltn.sweep.load_trajectories` (or `{run_id: {quantity: array}}`);
            needed by the panels drawn along the path.

    Returns:
        A matplotlib Figure (not shown, not saved); a panel with nothing finite to draw says so.

    Raises:
        ValueError: the results lack a column a quantity needs (e.g. written by a version without it).
    """
    from matplotlib.figure import Figure

    frame = _frame(results)
    if spec.experiments:
        frame = frame[frame["experiment"].isin(spec.experiments)]
    frame = frame.reset_index(drop=True)
    x = X_AXES[spec.x]
    for name in spec.y:
        column = Y_QUANTITIES[name].column
        along_path = x.path is not None and Y_QUANTITIES[name].path is not None
        if len(frame) and not along_path and column not in frame.columns:
            raise ValueError(f"figure {spec.name!r}: y {name!r} needs the results column {column!r}, which these "
                             f"results do not have")
    records = _trajectory_records(trajectories)
    figure = Figure(figsize=(5.2 * len(spec.y), 4.0), layout="constrained")
    axes = figure.subplots(1, len(spec.y), squeeze=False)[0]
    for axis, name in zip(axes, spec.y):
        quantity = Y_QUANTITIES[name]
        along_path = x.path is not None and quantity.path is not None
        # along a path, colour tells the initial scales apart
        varies = (*x.varies, "init.scale") if along_path else x.varies
        labels, series = _series_of(frame, spec.series, varies) if len(frame) else ([], np.zeros(0, dtype=int))
        drawn = (_draw_paths(axis, frame, labels, series, quantity, x, records) if along_path
                 else _draw_ends(axis, frame, labels, series, quantity, x))
        if x.log:
            axis.set_xscale("log")
        _positive_log(axis, drawn)
        if not drawn:
            axis.text(0.5, 0.5, f"no finite values of {name}", ha="center", va="center", transform=axis.transAxes)
        axis.set_xlabel(x.label + (" (along the path)" if along_path else ""))
        axis.set_ylabel(quantity.label)
        axis.grid(True, alpha=0.3)
    figure.suptitle(spec.title or spec.name, fontsize=9)
    return figure


def default_figures(results) -> list["FigureSpec"]:
    """What `ltn report` draws for an experiment whose config has no `[report]` table: the distance to the
    prediction along the path (x: -log L for classification, time for regression) and at the end against the
    initial scale, as `<experiment>-path` and `<experiment>-final`; nothing for an experiment without predictions."""
    from .sweep import FigureSpec, file_stem

    frame = _frame(results)
    figures = []
    for experiment in dict.fromkeys(frame["experiment"]):
        mine = frame[frame["experiment"] == experiment]
        if not mine["prediction"].fillna("").astype(str).str.len().any():
            continue
        stem = file_stem(str(experiment))
        path_x = "log_loss" if mine["task"].iloc[0] == "classification" else "time"
        figures += [FigureSpec(f"{stem}-path", path_x, ("distance_to_prediction",), experiments=(experiment,),
                               title=f"{experiment}: distance to the prediction along the path"),
                    FigureSpec(f"{stem}-final", "scale", ("distance_to_prediction",), experiments=(experiment,),
                               title=f"{experiment}: final distance to the prediction")]
    return figures


def report_figures(folder: str) -> list[tuple[str, "Figure"]]:
    """The figures of a results folder, as (file name, Figure): those of each config's `[report]` table, named
    `<config name>-<figure name>.png`, and the defaults (`default_figures`) for the experiments of configs without
    one. The configs are read from the folder's manifest.json."""
    from .sweep import ResultsError, load, load_trajectories, parse_config

    frame = load(folder)
    if frame.empty:
        return []
    path = os.path.join(folder, "manifest.json")
    try:
        with open(path) as stream:
            configs = json.load(stream).get("configs", [])
    except (OSError, json.JSONDecodeError) as error:
        raise ResultsError(f"{path}: cannot read the configs of the results: {error}") from None
    named, defaults = [], []
    for entry in configs:
        sweep = parse_config(entry["config"], entry.get("source", path))
        mine = [e.name for e in sweep.experiments]
        named += [(f"{sweep.name}-{spec.name}.png", spec if spec.experiments
                   else dataclasses.replace(spec, experiments=tuple(mine))) for spec in sweep.report.figures]
        if not sweep.report.figures:
            defaults += default_figures(frame[frame["experiment"].isin(mine)])
    named += [(f"{spec.name}.png", spec) for spec in defaults]
    along_path = any(X_AXES[spec.x].path and any(Y_QUANTITIES[y].path for y in spec.y) for _, spec in named)
    trajectories = _trajectory_records(load_trajectories(folder)) if along_path else None
    return [(name, plot_figure(frame, spec, trajectories)) for name, spec in named]


def plot_paths_2d(entries: list[dict]) -> "Figure":
    """Paths of beta in the plane (d = 2, n = 1; `ltn.paper.paths_2d` computes them): one panel per initial
    scale with the line of global minima x^T beta = y, each network's path from beta(0) = 0, its end point
    (circle) and its predicted limit (star), and the reference points in `entries[0]["references"]`."""
    from matplotlib.figure import Figure

    X, y = entries[0]["X"], entries[0]["y"]
    references = entries[0]["references"]
    scales = sorted({e["scale"] for e in entries})
    figure = Figure(figsize=(3.4 * len(scales) + 2.0, 3.6), layout="constrained")
    axes = figure.subplots(1, len(scales), squeeze=False)[0]
    networks = list(dict.fromkeys(e["network"] for e in entries))
    import matplotlib

    tab10 = matplotlib.colormaps["tab10"]
    points = np.vstack([*references.values(), *(e["path"] for e in entries)])
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.15 * (high - low).max() + 0.05
    for axis, scale in zip(axes, scales):
        xs = np.linspace(low[0] - pad, high[0] + pad, 2)
        axis.plot(xs, (y[0] - X[0, 0] * xs) / X[0, 1], "k-", lw=0.8, label="global minima x^T beta = y")
        for (name, point), marker in zip(references.items(), ("s", "D", "^")):
            axis.plot(*point, marker, ms=7, mfc="none", mec="grey", label=name)
        for e in (e for e in entries if e["scale"] == scale):
            colour = tab10(networks.index(e["network"]) % 10)
            axis.plot(e["path"][:, 0], e["path"][:, 1], "-", color=colour, lw=1.4, label=e["network"])
            axis.plot(*e["beta"], "o", color=colour, ms=5)
            axis.plot(*e["predicted"], "*", color=colour, ms=12, mfc="none")
        axis.plot(0, 0, "k.", ms=6)
        axis.set_xlim(low[0] - pad, high[0] + pad)
        axis.set_ylim(low[1] - pad, high[1] + pad)
        axis.set_aspect("equal")
        axis.set_title(f"initial scale alpha = {scale:g}")
        axis.set_xlabel("beta[0]")
        axis.grid(True, alpha=0.3)
    axes[0].set_ylabel("beta[1]")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle("gradient-flow paths of beta from beta(0) = 0 (circle: end, star: predicted limit)", fontsize=9)
    return figure
