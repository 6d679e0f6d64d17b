"""The paper figure that needs solves of its own: paths of beta in the plane (docs/reproduction.md, experiment 1).

A results folder keeps, per checkpoint, the direction-free summaries of a path (norms, loss, the distance to the
prediction), not beta itself; and the figure starts every network from the same beta(0) = 0, which a fully
connected network's Gaussian initialisation is not. So this module re-solves the folder's d = 2, n = 1
regression runs from `same_start_params` with dense checkpoints, and `ltn.plots.plot_paths_2d` draws them:

    python -m ltn.sweep.paper RESULTS_DIR [OUT.png]    (default: RESULTS_DIR/<folder name>-paths.png)

Everything else the paper shows is drawn from the results alone by the configs' `[report]` tables
(`ltn report`).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ._build import network_and_problem
from ._config import parse_config
from ._grid import expand, validate
from ._theory import l1_interpolant, real_odeco


def runs_of_folder(folder: str):
    """The RunSpecs recorded in a results folder's manifest (its configs, validated again)."""
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

    from ..networks import FullyConnected

    if net.odeco is not None:
        return net.init(None, scale, kind="theorem")
    if isinstance(net, FullyConnected):
        shapes = net.layer_shapes
        return tuple(scale * jnp.eye(*shape) if l < len(shapes) - 1 else jnp.zeros(shape)
                     for l, shape in enumerate(shapes))
    params = net.init(jax.random.PRNGKey(0), scale=scale)
    return (*params[:-1], jnp.zeros_like(params[-1]))


def paths_2d(folder: str, checkpoints: int = 200) -> list[dict]:
    """Re-solve every regression run of the folder with d = 2, n = 1 from `same_start_params`.

    Arguments:
        folder: a results folder (its manifest names the configs).
        checkpoints: points stored along each path.

    Returns:
        Per run, a dict with `network`, `scale`, `path` (points of beta from 0 to the end point), `beta`,
        `predicted` (the theory's limit for this start), `prediction`, `exact`, `status`, `error` (relative
        distance of the end point to the prediction), the data `X`, `y`, and `references` (the min-l2, min-l1 and
        min-l1-of-the-DFT interpolants): what `ltn.plots.plot_paths_2d` draws.
    """
    from ..flow import gradient_flow
    from ..theory import predict

    out = []
    for run in runs_of_folder(folder):
        if run.task != "regression":
            continue
        net, problem = network_and_problem(run)
        if problem.d != 2 or problem.n != 1:
            continue
        params0 = same_start_params(net, run.init.scale)
        result = gradient_flow(net, params0, problem.X, problem.y, "squared",
                               **{**run.solver.flow_options(), "checkpoints": checkpoints})
        records = result.trajectory.checkpoints
        path = np.asarray(records.direction) * np.asarray(records.beta_norm)[:, None]
        path = path[np.all(np.isfinite(path), axis=1)]
        prediction = predict(real_odeco(net) or net, problem.X, problem.y, init=params0)
        beta, predicted = np.asarray(result.beta), np.asarray(prediction.beta, dtype=float)
        F = np.array([[1.0, 1.0], [1.0, -1.0]])  # the real DFT of length 2
        references = {"min l2": np.linalg.pinv(problem.X) @ problem.y, "min l1": l1_interpolant(problem.X, problem.y),
                      "min l1 of DFT": F.T @ l1_interpolant(problem.X @ F.T, problem.y)}
        out.append({"network": run.network.kind.replace("_", " "), "scale": run.init.scale,
                    "path": np.vstack([np.zeros((1, 2)), path, beta[None]]), "beta": beta, "predicted": predicted,
                    "prediction": prediction.name, "exact": prediction.exact, "status": result.status_name,
                    "error": float(np.linalg.norm(beta - predicted) / np.linalg.norm(predicted)),
                    "X": problem.X, "y": problem.y, "references": references})
    return out


def main(argv: list[str] | None = None) -> int:
    from ..plots import plot_paths_2d

    argv = sys.argv[1:] if argv is None else argv
    if not 1 <= len(argv) <= 2:
        print("usage: python -m ltn.sweep.paper RESULTS_DIR [OUT.png]", file=sys.stderr)
        return 2
    folder = argv[0]
    entries = paths_2d(folder)
    if not entries:
        print(f"{folder}: no regression runs with d = 2, n = 1", file=sys.stderr)
        return 2
    for e in entries:
        print(f"{e['network']:16s} alpha={e['scale']:<6g} {e['status']:10s} beta={np.round(e['beta'], 6)} "
              f"prediction [{e['prediction']}] rel. error {e['error']:.2e}")
    name = os.path.basename(os.path.normpath(folder))
    target = argv[1] if len(argv) > 1 else os.path.join(folder, f"{name}-paths.png")
    plot_paths_2d(entries).savefig(target, dpi=80)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
