"""PNG plots of a results folder: how far each run is from its prediction along the path, and the final
distance against the initial scale. Reads only the results files (no JAX), so it works on copied folders."""

from __future__ import annotations

import math
import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: str, dpi: int) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def _distance_label(task: str) -> str:
    return "relative error to prediction" if task == "regression" else "angle to predicted direction (rad)"


def _path_distance(task: str, trajectory: dict) -> np.ndarray | None:
    if task == "regression":
        return trajectory.get("error_to_prediction")
    cosine = trajectory.get("cosine_to_prediction")
    return None if cosine is None else np.arccos(np.clip(cosine, -1.0, 1.0))


def _final_distance(row) -> float:
    if not row.get("prediction"):
        return float("nan")
    if row["task"] == "regression":
        value = row["relative_error"]
    else:
        cosine = row["cosine"]
        value = math.acos(max(-1.0, min(1.0, cosine))) if isinstance(cosine, float) and not math.isnan(cosine) \
            else float("nan")
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _group_label(row, varying) -> str:
    return ", ".join(f"{c.split('.', 1)[-1]}={row.get(c)}" for c in varying) or row["experiment"]


def plot_paths(rows, trajectories, path: str, experiment: str) -> str | None:
    """Distance to the prediction against log original time, one line per run, coloured by group."""
    plt = _pyplot()
    mine = [row for row in rows if row["experiment"] == experiment and row["run_id"] in trajectories]
    if not mine:
        return None
    task = mine[0]["task"]
    from .sweep import varying_columns

    varying = [c for c in varying_columns(mine) if c != "init.scale"]
    groups = list(dict.fromkeys(row["group_id"] for row in mine))
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(groups), 1)))
    # Without a prediction (check disabled or unavailable) the path of log-loss is shown instead.
    with_prediction = any(_path_distance(task, trajectories[row["run_id"]]) is not None for row in mine)
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    plotted = set()
    for row in mine:
        trajectory = trajectories[row["run_id"]]
        distance = _path_distance(task, trajectory) if with_prediction else trajectory.get("log_loss")
        log_time = trajectory.get("log_time")
        if distance is None or log_time is None:
            continue
        keep = np.isfinite(log_time) & np.isfinite(distance) & ((distance > 0) | (not with_prediction))
        if not keep.any():
            continue
        g = groups.index(row["group_id"])
        label = _group_label(row, varying) if row["group_id"] not in plotted else None
        plotted.add(row["group_id"])
        draw = axis.semilogy if with_prediction else axis.plot
        draw(log_time[keep], distance[keep], color=colours[g], alpha=0.8, lw=1.2, label=label)
    if not plotted:
        plt.close(figure)
        return None
    axis.set_xlabel("log(gradient-flow time)")
    axis.set_ylabel(_distance_label(task) if with_prediction else "log loss (no prediction available)")
    axis.set_title(f"{experiment}: " + ("distance to the prediction along the path" if with_prediction
                                         else "loss along the path"))
    if len(plotted) > 1 or varying:
        axis.legend(fontsize=7)
    axis.grid(True, alpha=0.3)
    _save(plt, figure, path, dpi=110)
    return path


def plot_final_vs_scale(rows, path: str, experiment: str) -> str | None:
    """Final distance to the prediction against the initial scale (log-log); failed runs marked x, runs no
    theory judges as open squares."""
    plt = _pyplot()
    mine = [row for row in rows if row["experiment"] == experiment]
    if not mine:
        return None
    from .sweep import FAILED, NOT_JUDGED, PASSED
    from .sweep import varying_columns

    varying = [c for c in varying_columns(mine) if c != "init.scale"]
    groups = list(dict.fromkeys(_group_label(row, varying) for row in mine))
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(groups), 1)))
    with_prediction = any(row.get("prediction") for row in mine)

    def value(row):  # without a prediction: the final log-loss, so the plot still shows how far runs got
        return _final_distance(row) if with_prediction else float(np.exp(row["final_log_loss"]))

    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    anything = False
    for g, label in enumerate(groups):
        members = [row for row in mine if _group_label(row, varying) == label]
        for verdict, marker, suffix in ((PASSED, "o", ""), (NOT_JUDGED, "s", " (not judged)"),
                                        (FAILED, "x", " (failed)")):
            points = [(row["init.scale"], value(row)) for row in members if row["verdict"] == verdict]
            points = [(s, max(e, 1e-17)) for s, e in points if isinstance(s, (int, float)) and np.isfinite(e)]
            if points:
                anything = True
                xs, ys = zip(*points)
                axis.loglog(xs, ys, marker, color=colours[g], label=label + suffix, mfc="none" if verdict == NOT_JUDGED
                            else None)
    if not anything:
        plt.close(figure)
        return None
    axis.set_xlabel("initial scale")
    axis.set_ylabel("final " + (_distance_label(mine[0]["task"]) if with_prediction
                                else "loss (no prediction available)"))
    axis.set_title(f"{experiment}: final " + ("distance to the prediction" if with_prediction else "loss"))
    axis.legend(fontsize=7)
    axis.grid(True, alpha=0.3)
    _save(plt, figure, path, dpi=110)
    return path


def write_plots(folder: str) -> list[str]:
    """Both plots for every experiment of a results folder, as `<experiment>-path.png` and
    `<experiment>-final.png` in the folder; returns the paths written."""
    from .sweep import read_rows, read_trajectories
    from .sweep import file_stem

    rows = read_rows(folder)
    trajectories = read_trajectories(folder, {row["run_id"] for row in rows})
    written = []
    for experiment in dict.fromkeys(row["experiment"] for row in rows):
        safe = file_stem(str(experiment))
        for plot, suffix in ((lambda p: plot_paths(rows, trajectories, p, experiment), "path"),
                             (lambda p: plot_final_vs_scale(rows, p, experiment), "final")):
            result = plot(os.path.join(folder, f"{safe}-{suffix}.png"))
            if result:
                written.append(result)
    return written


# --- paper figures (`ltn report DIR --paper`) ------------------------------------------------------------------
# These may run JAX: the 2-D trajectory figure re-solves its runs with dense checkpoints (the results keep only
# the direction-free summaries of the path), and the scale figures draw the exact prediction on a fine grid of
# scales (the dual Newton solve, docs/theory.md §7), which is cheap next to a flow.


def _runs_of_folder(folder: str):
    """The RunSpecs recorded in a results folder's manifest (its configs, re-validated)."""
    import json

    from .sweep import expand, parse_config, validate

    with open(os.path.join(folder, "manifest.json")) as stream:
        manifest = json.load(stream)
    runs = []
    for entry in manifest.get("configs", []):
        runs += expand(validate(parse_config(entry["config"], entry.get("source", "<manifest>"))))
    return runs


def same_start_params(net, scale: float):
    """A start with beta(0) = 0 that every family shares: the theorem initialisation for odeco networks
    (U_l^T v_l = scale, last layer 0); for fully-connected networks W_l = scale * I (the first min(rows, cols)
    diagonal entries) for l < L and W_L = 0; otherwise Gaussian layers at `scale` with the last layer 0."""
    import jax
    import jax.numpy as jnp

    from .networks import FullyConnected

    if net.odeco is not None:
        return net.init(None, scale, kind="theorem")
    if isinstance(net, FullyConnected):
        shapes = net.layer_shapes
        return tuple(scale * jnp.eye(*shape) if l < len(shapes) - 1 else jnp.zeros(shape)
                     for l, shape in enumerate(shapes))
    params = net.init(jax.random.PRNGKey(0), scale=scale)
    return (*params[:-1], jnp.zeros_like(params[-1]))


def trajectories_2d(folder: str, checkpoints: int = 200) -> list[dict]:
    """Re-solve every regression run of the folder with d = 2, n = 1 from `same_start_params` and return, per run,
    the path of beta, its end point and the predicted limit (exact where the theory has one)."""
    import ltn

    from .sweep._build import network_and_problem
    from .sweep._theory import real_odeco
    from .theory import predict

    out = []
    for run in _runs_of_folder(folder):
        if run.task != "regression":
            continue
        net, problem = network_and_problem(run)
        if problem.d != 2 or problem.n != 1:
            continue
        params0 = same_start_params(net, run.init.scale)
        result = ltn.gradient_flow(net, params0, problem.X, problem.y, "squared",
                                   **{**run.solver.flow_options(), "checkpoints": checkpoints})
        records = result.trajectory.checkpoints
        path = np.asarray(records.direction) * np.asarray(records.beta_norm)[:, None]
        path = path[np.all(np.isfinite(path), axis=1)]
        prediction = predict(real_odeco(net) or net, problem.X, problem.y, init=params0)
        beta = np.asarray(result.beta)
        predicted = np.asarray(prediction.beta, dtype=float)
        out.append({"experiment": run.experiment, "network": run.network.kind, "scale": run.init.scale,
                    "path": np.vstack([np.zeros((1, 2)), path, beta[None]]), "beta": beta, "predicted": predicted,
                    "prediction": prediction.name, "exact": prediction.exact, "status": result.status_name,
                    "error": float(np.linalg.norm(beta - predicted) / np.linalg.norm(predicted)),
                    "X": problem.X, "y": problem.y})
    return out


def plot_trajectories_2d(entries: list[dict], path: str) -> str | None:
    """One panel per initial scale: the line of global minima x^T beta = y, each network's path of beta from
    beta(0) = 0, its end point (circle) and its predicted limit (star), and the l2, l1 and DFT-l1 interpolants."""
    if not entries:
        return None
    plt = _pyplot()
    from .sweep._theory import l1_interpolant

    X, y = entries[0]["X"], entries[0]["y"]
    scales = sorted({e["scale"] for e in entries})
    figure, axes = plt.subplots(1, len(scales), figsize=(3.4 * len(scales) + 2.0, 3.6), squeeze=False)
    colours = {"diagonal": "tab:blue", "convolutional": "tab:orange", "fully_connected": "tab:green",
               "odeco": "tab:purple"}
    F = np.array([[1.0, 1.0], [1.0, -1.0]])
    references = {"min l2": np.linalg.pinv(X) @ y, "min l1": l1_interpolant(X, y),
                  "min l1 of DFT": F.T @ l1_interpolant(X @ F.T, y)}
    points = np.vstack([*references.values(), *(e["path"] for e in entries)])
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.15 * (high - low).max() + 0.05
    for axis, scale in zip(axes[0], scales):
        xs = np.linspace(low[0] - pad, high[0] + pad, 2)
        axis.plot(xs, (y[0] - X[0, 0] * xs) / X[0, 1], "k-", lw=0.8, label="global minima x^T beta = y")
        for (name, point), marker in zip(references.items(), ("s", "D", "^")):
            axis.plot(*point, marker, ms=7, mfc="none", mec="grey", label=name if scale == scales[0] else None)
        for e in (e for e in entries if e["scale"] == scale):
            colour = colours.get(e["network"], "k")
            axis.plot(e["path"][:, 0], e["path"][:, 1], "-", color=colour, lw=1.4,
                      label=e["network"].replace("_", " "))
            axis.plot(*e["beta"], "o", color=colour, ms=5)
            axis.plot(*e["predicted"], "*", color=colour, ms=12, mfc="none")
        axis.plot(0, 0, "k.", ms=6)
        axis.set_xlim(low[0] - pad, high[0] + pad)
        axis.set_ylim(low[1] - pad, high[1] + pad)
        axis.set_aspect("equal")
        axis.set_title(f"initial scale {scale:g}")
        axis.set_xlabel("beta[0]")
        axis.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("beta[1]")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    figure.suptitle("gradient-flow paths of beta from beta(0) = 0 (circle: end, star: predicted limit)", fontsize=9)
    _save(plt, figure, path, dpi=80)
    return path


def _family(row) -> str:
    return f"{row['network.kind']} L={row['network.depth']}"


def plot_scale_limits(rows, path: str, title: str = "") -> str | None:
    """Regression across scales: error to the exact prediction, and distance to the alpha -> 0 and alpha -> inf
    limits, against the initial scale; one line per network family and depth (experiments joined)."""
    mine = [r for r in rows if r["task"] == "regression" and isinstance(r.get("distance_limit_large"), float)]
    if not mine:
        return None
    plt = _pyplot()
    families = list(dict.fromkeys(_family(r) for r in mine))
    colours = plt.cm.tab10(np.arange(len(families)) % 10)
    panels = (("relative_error", "rel. error to the exact prediction", lambda r: bool(r["prediction_exact"])),
              ("distance_limit_small", "distance to the alpha->0 limit\n(l1 / min-l2 FC)", lambda r: True),
              ("distance_limit_large", "distance to the alpha->inf limit\n(l2 / lazy)", lambda r: True))
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for axis, (column, label, keep) in zip(axes, panels):
        for colour, family in zip(colours, families):
            points = sorted((r["init.scale"], r[column]) for r in mine if _family(r) == family and keep(r)
                            and isinstance(r.get(column), float) and np.isfinite(r[column]))
            if points:
                xs, ys = zip(*points)
                axis.loglog(xs, np.maximum(ys, 1e-16), "o-", color=colour, ms=3.5, lw=1.1, label=family)
        axis.set_xlabel("initial scale alpha")
        axis.set_title(label, fontsize=9)
        axis.grid(True, alpha=0.3)
    axes[1].legend(fontsize=6)  # the middle panel draws every family (the first omits inexact predictions)
    if title:
        figure.suptitle(title, fontsize=9)
    _save(plt, figure, path, dpi=80)
    return path


def woodworth_curve(run, scales) -> dict[str, np.ndarray]:
    """The exact prediction argmin Q_alpha (dual Newton) on a grid of scales for one regression run's network and
    data (theorem init): its test error and distances to the l1 and l2 interpolants."""
    from .sweep._build import network_and_problem
    from .sweep._theory import scale_limits
    from .theory import predict

    net, problem = network_and_problem(run)
    out = {"scale": np.asarray(scales, dtype=float), "test_error": [], "distance_limit_small": [],
           "distance_limit_large": []}
    limits = None
    for scale in scales:
        params0 = net.init(None, float(scale), kind="theorem")
        limits = limits or scale_limits(net, run, params0, problem.X, problem.y)
        beta = np.asarray(predict(net, problem.X, problem.y, init=params0).beta)
        out["test_error"].append(np.sum((beta - problem.beta_star) ** 2) / np.sum(problem.beta_star ** 2))
        for which in ("small", "large"):
            limit = limits[which][1]
            out[f"distance_limit_{which}"].append(np.linalg.norm(beta - limit) / np.linalg.norm(limit))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def plot_woodworth(rows, curve: dict, path: str, title: str) -> str | None:
    """Kernel-to-rich transition: test error and distances to the l1 / l2 interpolants against the scale; the
    exact prediction as lines, the flow's end points as markers (crosses: did not converge)."""
    mine = [r for r in rows if r["task"] == "regression" and isinstance(r.get("test_error"), float)]
    if not mine:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].semilogx(curve["scale"], curve["test_error"], "-", color="tab:blue", label="exact prediction argmin Q")
    axes[1].loglog(curve["scale"], curve["distance_limit_small"], "-", color="tab:red", label="to min l1 (prediction)")
    axes[1].loglog(curve["scale"], curve["distance_limit_large"], "-", color="tab:green", label="to min l2 (prediction)")
    for converged, marker in ((True, "o"), (False, "x")):
        chosen = [r for r in mine if (r["status"] == "converged") == converged]
        if not chosen:
            continue
        suffix = "" if converged else " (not converged)"
        s = [r["init.scale"] for r in chosen]
        axes[0].semilogx(s, [r["test_error"] for r in chosen], marker, color="tab:blue", label="flow" + suffix)
        axes[1].loglog(s, [r["distance_limit_small"] for r in chosen], marker, color="tab:red",
                       label="flow, to l1" + suffix)
        axes[1].loglog(s, [r["distance_limit_large"] for r in chosen], marker, color="tab:green",
                       label="flow, to l2" + suffix)
    axes[0].set_ylabel("test error ||beta - beta*||^2 / ||beta*||^2")
    axes[1].set_ylabel("relative distance")
    for axis in axes:
        axis.set_xlabel("initial scale alpha")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    _save(plt, figure, path, dpi=80)
    return path


def plot_alignment(rows, trajectories, path: str, title: str) -> str | None:
    """Classification: 1 - cosine to the predicted direction against -log L along the path, per experiment and
    depth (the flow's log-loss is its progress measure; docs/theory.md §9)."""
    mine = [r for r in rows if r["task"] == "classification" and r["run_id"] in trajectories
            and "cosine_to_prediction" in trajectories[r["run_id"]]]
    if not mine:
        return None
    plt = _pyplot()
    labels = list(dict.fromkeys(f"{r['experiment']} L={r['network.depth']}" for r in mine))
    colours = plt.cm.tab10(np.arange(len(labels)) % 10)
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    seen = set()
    for r in mine:
        t = trajectories[r["run_id"]]
        label = f"{r['experiment']} L={r['network.depth']}"
        x, c = -t["log_loss"], t["cosine_to_prediction"]
        keep = np.isfinite(x) & np.isfinite(c) & (x > 0)
        axis.loglog(x[keep], np.maximum(1 - c[keep], 1e-16), "-", color=colours[labels.index(label)], lw=1.1,
                    label=None if label in seen else label)
        seen.add(label)
    axis.set_xlabel("-log L (progress along the path)")
    axis.set_ylabel("1 - cosine(beta, predicted direction)")
    axis.set_title(title, fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    _save(plt, figure, path, dpi=80)
    return path


def plot_certificates(rows, path: str, title: str) -> str | None:
    """Classification without a closed prediction (partial-filter convolutions): the singular-vector residual of
    docs/theory.md §5 at the end point of flows run to increasing log-loss targets, against -log L."""
    mine = [r for r in rows if r["task"] == "classification" and r.get("certificate_name") == "singular_vector"
            and isinstance(r.get("certificate"), float)]
    # A path needs flows stopped at two or more log-loss targets; one target gives a single column of points.
    if len({float(f"{r['final_log_loss']:.6g}") for r in mine if np.isfinite(r["final_log_loss"])}) < 2:
        return None
    plt = _pyplot()

    def label_of(r):
        return f"{r['experiment']}, L={r['network.depth']}, k={r['network.filter_sizes']}"

    labels = list(dict.fromkeys(label_of(r) for r in mine))
    colours = plt.cm.tab10(np.arange(len(labels)) % 10)
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    for colour, label in zip(colours, labels):
        points = sorted((-r["final_log_loss"], r["certificate"]) for r in mine if label_of(r) == label)
        xs, ys = zip(*points)
        axis.loglog(xs, np.maximum(ys, 1e-16), "o-", color=colour, ms=4, label=label)
    axis.set_xlabel("-log L at the checkpoint (flow run to that target)")
    axis.set_ylabel("singular-vector residual (Theorem 1)")
    axis.set_title(title, fontsize=9)
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)
    _save(plt, figure, path, dpi=80)
    return path


def write_paper_plots(folder: str) -> tuple[list[str], str]:
    """The paper figures that apply to a results folder, named `<folder name>-<figure>.png`, and a text summary
    of the numbers they show. Returns (paths, text)."""
    from .sweep import read_rows, read_trajectories

    rows = read_rows(folder)
    trajectories = read_trajectories(folder, {row["run_id"] for row in rows})
    name = os.path.basename(os.path.normpath(folder))
    written, lines = [], []
    regression = [r for r in rows if r["task"] == "regression"]
    if any(r["data.d"] == 2 and r["data.n"] == 1 for r in regression):
        entries = trajectories_2d(folder)
        if plot_trajectories_2d(entries, os.path.join(folder, f"{name}-paths.png")):
            written.append(os.path.join(folder, f"{name}-paths.png"))
        lines.append("2-D paths from beta(0) = 0 (re-solved): end point vs prediction")
        for e in entries:
            lines.append(f"  {e['network']:16s} alpha={e['scale']:<6g} {e['status']:10s} beta={np.round(e['beta'], 6)} "
                         f"prediction [{e['prediction']}] rel. error {e['error']:.2e}")
    woodworth = [r for r in regression if isinstance(r.get("test_error"), float) and r["data.d"] >= 100
                 and r["init.kind"] == "theorem" and r["network.kind"] == "diagonal"]
    if woodworth:
        run = next(r for r in _runs_of_folder(folder) if r.task == "regression")
        scales = np.geomspace(min(r["init.scale"] for r in woodworth) / 3, max(r["init.scale"] for r in woodworth) * 3,
                              25)
        curve = woodworth_curve(run, scales)
        target = os.path.join(folder, f"{name}-transition.png")
        if plot_woodworth(woodworth, curve, target, f"{name}: kernel-to-rich transition (d={woodworth[0]['data.d']}, "
                          f"n={woodworth[0]['data.n']}, {woodworth[0]['data.sparsity']}-sparse)"):
            written.append(target)
        lines.append("transition: alpha, test error (prediction), distance to l1 / l2 (prediction)")
        for i, s in enumerate(curve["scale"]):
            lines.append(f"  {s:9.3g} {curve['test_error'][i]:10.3e} {curve['distance_limit_small'][i]:10.3e} "
                         f"{curve['distance_limit_large'][i]:10.3e}")
    elif regression:
        target = os.path.join(folder, f"{name}-limits.png")
        if plot_scale_limits(regression, target, f"{name}: where the flow's limit sits between the scale limits"):
            written.append(target)
    target = os.path.join(folder, f"{name}-alignment.png")
    if plot_alignment(rows, trajectories, target, f"{name}: alignment with the predicted direction along the path"):
        written.append(target)
    target = os.path.join(folder, f"{name}-certificate.png")
    if plot_certificates(rows, target, f"{name}: Theorem-1 residual along the path"):
        written.append(target)
    return written, "\n".join(lines)
