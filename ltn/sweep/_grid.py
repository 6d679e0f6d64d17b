"""Sweep axes -> runs (Cartesian product), cross-field validation, and grouping by static structure.

A group is the set of runs that differ only in the seed and the initial scale: they share the network, the
loss, the solver options and the data, so one `jit(vmap(gradient_flow))` compile solves them all.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os

import jax

from .._version import __version__
from ..flow import DESCENT_ONLY
from ..networks import params_in_file
from ._build import DATA_KINDS, NETWORK_KINDS, file_sha256, input_files, resolve_path
from ._config import (
    FLOW_ONLY,
    INIT_KEYS,
    REGRESSION_ONLY,
    CheckSpec,
    ConfigError,
    DataSpec,
    ExperimentSpec,
    InitSpec,
    NetworkSpec,
    RunSpec,
    SolverSpec,
    SweepSpec,
)


def _resolve(experiment: ExperimentSpec, values: dict, seed: int, problems: list[str]) -> RunSpec | None:
    """One point of the grid as a RunSpec, recording (not raising) what is inconsistent."""
    where = f"{experiment.source}: {experiment.name}"
    fail = len(problems)

    def problem(field: str, reason: str) -> None:
        problems.append(f"{where}: {field}: {reason}")

    sections = {s: dict(experiment.base[s]) for s in ("data", "network", "init", "flow", "check")}
    for dotted, value in values.items():
        section, key = dotted.split(".")
        sections[section][key] = value
    task, loss = experiment.base["task"], experiment.base["loss"]
    base_dir = os.path.dirname(os.path.abspath(experiment.source)) if os.path.exists(experiment.source) else "."

    # data
    data = sections["data"]
    kind = data["kind"]
    data_kind = DATA_KINDS[kind]
    for key in data:
        if key != "kind" and key not in data_kind.keys:
            problem(f"data.{key}", f"is not used by data kind {kind!r} (it uses {sorted(data_kind.keys)})")
    for key in data_kind.required:
        if key not in data:
            problem(f"data.{key}", f"is required for data kind {kind!r}")
    if data_kind.task is not None and data_kind.task != task:
        problem("data.kind", f"{kind!r} generates {data_kind.task} data, but task is {task!r}")
    if kind == "sparse_gaussian" and "n" in data and "d" in data:
        if data["n"] >= data["d"]:
            problem("data.n", f"regression needs an underdetermined problem (n < d), got n = {data['n']}, "
                    f"d = {data['d']}")
        data.setdefault("sparsity", min(3, data["d"]))
        if data["sparsity"] > data["d"]:
            problem("data.sparsity", f"must be <= d = {data['d']}, got {data['sparsity']}")
    if kind == "separable" and "sparsity" in data and "d" in data and data["sparsity"] > data["d"]:
        problem("data.sparsity", f"must be <= d = {data['d']}, got {data['sparsity']}")

    # network
    net = sections["network"]
    nkind = net["kind"]
    for key in net:
        if key != "kind" and key not in NETWORK_KINDS[nkind].keys:
            problem(f"network.{key}", f"is not used by network kind {nkind!r} (it uses "
                    f"{sorted(NETWORK_KINDS[nkind].keys)})")
    depth, widths, filter_sizes = net.get("depth"), None, None
    if nkind == "fully_connected":
        if "widths" in net:
            widths = tuple(net["widths"])
            if "width" in net:
                problem("network.width", "give either widths (a list) or width with depth, not both")
            if depth is not None and depth != len(widths) + 1:
                problem("network.depth", f"depth {depth} disagrees with widths {list(widths)} "
                        f"(depth = len(widths) + 1)")
            depth = len(widths) + 1
        else:
            depth = depth or 2
            # Without `width`, hidden layers are as wide as the input (known only once the data are built).
            widths = (net["width"],) * (depth - 1) if "width" in net else None
    elif nkind in ("diagonal", "convolutional", "odeco"):
        depth = depth or 2
    if nkind == "convolutional" and "filter_size" in net:
        size = net["filter_size"]
        filter_sizes = (size,) * (depth - 1) if isinstance(size, int) else tuple(size)
        if len(filter_sizes) != depth - 1:
            problem("network.filter_size", f"a list must give depth - 1 = {depth - 1} filter sizes, "
                    f"got {list(filter_sizes)}")
        elif "d" in data and any(k > data["d"] for k in filter_sizes):
            problem("network.filter_size", f"filters must have length <= d = {data['d']}, got "
                    f"{list(filter_sizes)}")
        elif "d" in data and all(k == data["d"] for k in filter_sizes):
            filter_sizes = None  # full length: one canonical spelling, so equal networks group together
    if nkind == "tensor" and "path" not in net:
        problem("network.path", "is required for network kind 'tensor' (an .npz holding M)")

    # solver
    flow = sections["flow"]
    solver = flow.get("solver", "auto")
    if solver == "descent":
        if "learning_rate" not in flow:
            problem("flow.learning_rate", "is required when solver = 'descent'")
        for key in FLOW_ONLY:
            if key in flow:
                problem(f"flow.{key}", "is an ODE-solver option; it has no effect with solver = 'descent'")
    else:
        for key in DESCENT_ONLY:
            if key in flow:
                problem(f"flow.{key}", f"is a descent option; set solver = 'descent' to use it "
                        f"(solver is {solver!r})")
    if flow.get("step_scaling") == "loss" and task != "classification":
        problem("flow.step_scaling", "'loss' scales steps by 1/L, for classification losses only")
    if task == "regression":
        for key in ("target_log_loss", "target_norm"):
            if key in flow:
                problem(f"flow.{key}", "is a classification stop; regression stops where its end point is "
                        "certified (residual_tol, xtol)")
    else:
        for key in REGRESSION_ONLY:
            if key in flow:
                problem(f"flow.{key}", "is part of the regression certificate; classification stops at "
                        "target_log_loss or target_norm")

    init = sections["init"]
    ikind = init.get("kind", "gaussian")
    for key in init:
        if key != "kind" and key not in INIT_KEYS[ikind]:
            problem(f"init.{key}", f"is not used by init kind {ikind!r} (it uses {sorted(INIT_KEYS[ikind])})")
    if ikind == "file" and "path" not in init:
        problem("init.path", "is required for init kind 'file' (an .npz holding layer0 ... layer{L-1})")
    if ikind == "shaped":
        init.setdefault("shape", 0.0)
    if len(problems) > fail:
        return None
    return RunSpec(
        experiment=experiment.name, task=task, loss=loss,
        data=DataSpec(**data),
        network=NetworkSpec(kind=nkind, depth=depth if nkind != "tensor" else None, widths=widths,
                            filter_sizes=filter_sizes, basis=net.get("basis", "random") if nkind == "odeco"
                            else "random", seed=net.get("seed", 0), path=net.get("path")),
        init=InitSpec(**init), solver=SolverSpec(**flow), check=CheckSpec(**sections["check"]),
        seed=seed, base_dir=base_dir,
    )


def expand_experiment(experiment: ExperimentSpec, problems: list[str] | None = None) -> list[RunSpec]:
    """Every run of one experiment: the Cartesian product of its axes (in file order), then the seeds."""
    own = problems is None
    problems = [] if own else problems
    names = [name for name, _ in experiment.axes]
    runs = []
    for combination in itertools.product(*(values for _, values in experiment.axes)):
        values = dict(zip(names, combination))
        for seed in experiment.seeds:
            run = _resolve(experiment, values, seed, problems)
            if run is not None:
                runs.append(run)
    if own and problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return runs


def expand(sweep: SweepSpec) -> list[RunSpec]:
    """Every run of every experiment of a config, in a stable order."""
    problems: list[str] = []
    runs = [run for experiment in sweep.experiments for run in expand_experiment(experiment, problems)]
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return runs


def group_runs(runs: list[RunSpec]) -> list[list[RunSpec]]:
    """Runs with equal `group_key()` together (one compiled, vmapped solve each), in first-seen order; inside a
    group, by decreasing scale, then seed."""
    groups: dict[RunSpec, list[RunSpec]] = {}
    for run in runs:
        groups.setdefault(run.group_key(), []).append(run)
    return [sorted(members, key=lambda r: (-r.init.scale, r.seed)) for members in groups.values()]


# --- identity -------------------------------------------------------------------------------------------------


def precision() -> str:
    """The float precision runs compute in: "float64", unless `LTN_FLOAT32` left JAX at its float32 default."""
    return "float64" if jax.config.jax_enable_x64 else "float32"


def _config_columns(run: RunSpec) -> dict:
    columns = {"experiment": run.experiment, "task": run.task, "loss": run.loss}
    for section, spec in (("data", run.data), ("network", run.network), ("init", run.init),
                          ("flow", run.solver), ("check", run.check)):
        for field in dataclasses.fields(spec):
            value = getattr(spec, field.name)
            if field.name == "path" and value is not None:
                value = resolve_path(value, run.base_dir)
            columns[f"{section}.{field.name}"] = list(value) if isinstance(value, tuple) else value
    columns["seed"] = run.seed
    return columns


def _identity_columns(run: RunSpec) -> dict:
    """What determines a run's result besides its config: the contents of its input files, the precision, and
    the ltn version (a stamp for the code: a source tree edited without a new version keeps its ids)."""
    hashes = {f"{section}.sha256": file_sha256(path) for section, path in input_files(run).items()}
    return {**hashes, "precision": precision(), "ltn_version": __version__}


def run_columns(run: RunSpec) -> dict:
    """The config of a run as flat, dotted columns, then its identity columns (input file hashes, precision,
    ltn version): the config part of a results row, and everything its run id covers."""
    return {**_config_columns(run), **_identity_columns(run)}


def run_id(run: RunSpec) -> str:
    """A stable id: hash of `run_columns` (the resolved config, the seed, the SHA-256 of every input file, the
    precision and the ltn version), so a restart recognises finished runs and never trusts a result computed
    from other data, in another precision or by another version. The same in every process; computed without
    any JAX compute."""
    return _run_id(run, tuple(_identity_columns(run).items()))


@functools.lru_cache(maxsize=1 << 16)
def _run_id(run: RunSpec, identity: tuple) -> str:
    # Cached: a sweep asks for each id several times, and hashing the JSON of a run costs ~0.1 ms.
    text = json.dumps({**_config_columns(run), **dict(identity)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_id(group: list[RunSpec]) -> str:
    """The id of a group: the run id of its static part (no seed, no scale), shortened."""
    return run_id(group[0].group_key())[:12]


# --- validation -------------------------------------------------------------------------------------------------


def validate(sweep: SweepSpec) -> SweepSpec:
    """Expand the grid and check every group: data (shape, rank, separability), network construction, init and
    the theory check's requirements. Raises one ConfigError listing every problem."""
    from ._build import network_and_problem
    from ._theory import check_supported

    runs = expand(sweep)
    problems: list[str] = []
    for group in group_runs(runs):
        first = group[0]
        where = f"{sweep.source}: {first.experiment}"
        try:
            net, problem = network_and_problem(first)
        except (ValueError, TypeError, FileNotFoundError) as error:
            field = "network" if "tensor" in str(error) or "filter" in str(error) else "data"
            problems.append(f"{where}: {field}: {error}")
            continue
        if problem.task != first.task:
            problems.append(f"{where}: data: holds {problem.task} data, but task is {first.task!r}")
            continue
        if net.d != problem.d:
            problems.append(f"{where}: network: takes inputs of dimension {net.d}, but the data have "
                            f"d = {problem.d}")
            continue
        if first.init.kind == "theorem" and net.odeco is None:
            problems.append(f"{where}: init.kind: 'theorem' needs an orthogonally decomposable network, and "
                            f"{net!r} is not (use kind = 'gaussian', a diagonal/odeco network or full-length "
                            f"convolutional filters)")
            continue
        if first.init.kind == "shaped" and (net.odeco is None or net.depth != 2):
            problems.append(f"{where}: init.kind: 'shaped' (Azulay et al. 2021) is defined for depth-2 "
                            f"orthogonally decomposable networks, and {net!r} is not one")
            continue
        if first.init.kind == "file":
            reason = init_file_problem(net, group)
            if reason is not None:
                problems.append(f"{where}: init.path: {reason}")
                continue
        if first.check.enabled:
            reason = check_supported(net, first)
            if reason is not None:
                problems.append(f"{where}: check: {reason}")
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return sweep


def init_file_problem(net, group: list[RunSpec]) -> str | None:
    """Why the init file of a group cannot start its runs, or None: not an init file for `net` (names, shapes,
    values), several seeds for a file that holds one initialisation, or a seed beyond its entries."""
    try:
        entries = params_in_file(net, resolve_path(group[0].init.path, group[0].base_dir))
    except (ValueError, FileNotFoundError) as error:
        return str(error)
    seeds = sorted({run.seed for run in group})
    if entries is None and len(seeds) > 1:
        return (f"the file holds one initialisation (no leading axis), so the {len(seeds)} seeds {seeds} would "
                f"repeat one run; give one seed, or stack initialisations along a leading axis (seed i takes "
                f"entry i)")
    if entries is not None and seeds[-1] >= entries:
        return (f"the file holds {entries} initialisations (entries 0 to {entries - 1}), but seed {seeds[-1]} "
                f"asks for entry {seeds[-1]}")
    return None


__all__ = ["expand", "expand_experiment", "group_runs", "run_columns", "run_id", "group_id", "validate",
           "precision", "init_file_problem"]
