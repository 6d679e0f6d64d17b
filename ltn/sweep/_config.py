"""TOML config -> validated, typed experiment specs.

A config file describes one experiment, or several in a list of `[[experiment]]` tables. Top-level keys are
shared defaults: each experiment table is merged over them, section by section (so a file can hold a regression
and a classification sweep that share `seeds` and `flow` settings)::

    name = "quickstart"
    seeds = [0, 1]
    flow = { rtol = 1e-9 }

    [[experiment]]
    name = "diagonal-regression"
    task = "regression"
    data = { kind = "sparse_gaussian", n = 10, d = 30, sparsity = 3 }
    network = { kind = "diagonal", depth = [2, 3] }     # a list is a sweep axis
    init = { kind = "theorem", scale = [0.1, 1.0] }

    [[experiment]]
    name = "fc-classification"
    task = "classification"
    ...

Every problem is reported as a `ConfigError` naming the file, the field and the reason, all problems at once,
before any compute starts. Only the sections `task`, `data` and `network` are required.

Besides types, a config is held to limits that keep `ltn validate` cheap and a run finite: at most `MAX_RUNS`
runs per file (counted from the axes, never expanded to find out), `MAX_DEPTH` layers, `MAX_CHECKPOINTS`
checkpoints, seeds that fit `jax.random.PRNGKey` (`0 <= seed < 2**32`), and names that are simple file names.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import tomllib
from typing import Any, Callable

from ..flow import FLOW_ONLY as _SOLVER_ONLY, SOLVERS as FLOW_SOLVERS, STEP_SCALINGS, FlowOptions
from ..losses import LOSSES
from ..networks import INIT_KINDS
from ..plots import SERIES, X_AXES, Y_QUANTITIES
from ..theory import MAX_MARGIN_NORMS
from ._build import DATA_KINDS, MAX_DEPTH, NETWORK_KINDS

SECTIONS = ("data", "network", "init", "flow", "check")
TOP_LEVEL_KEYS = ("name", "description", "task", "loss", "seeds", *SECTIONS)
TASKS = ("regression", "classification")
DEFAULT_LOSS = {"regression": "squared", "classification": "exponential"}
ODECO_BASES = ("random", "dft", "identity")
SOLVERS = (*FLOW_SOLVERS, "descent")
DESCENT_OPTIMIZERS = ("sgd", "momentum", "adam")
# A config holding more runs is refused before its grid is expanded: expanding and checking 10^7 runs took
# `ltn validate` past 1.3 GB; 10^5 runs take ~12 s and ~100 MB (2-core CPU).
MAX_RUNS = 100_000
# Each checkpoint stores a summary of every run of a batch; the defaults are 64 (sweeps) and 128 (the API).
MAX_CHECKPOINTS = 10_000
# `jax.random.PRNGKey` takes a uint32 seed without x64 (2**32 wraps to the key of seed 0).
SEED_LIMIT = 2**32


def file_stem(name: str) -> str:
    """The form of an experiment name used in file names (the report's plots): characters other than
    letters, digits, '-' and '_' become '_'. Two names with one stem would overwrite each other's files."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def name_problem(name) -> str | None:
    """Why `name` cannot name a sweep or an experiment, or None. A name becomes a results folder
    (`results/<name>`) and file names inside it: it must be a plain file name that stays where it is put."""
    if not isinstance(name, str) or not name.strip():
        return f"must be a non-empty string, got {name!r}"
    if "/" in name or "\\" in name or name in (".", "..") or os.path.isabs(name) or "\0" in name:
        return (f"must be a simple file name (no '/', '\\', and not '.' or '..'): it names the results folder "
                f"and files in it, got {name!r}")
    return None


class ConfigError(ValueError):
    """A config that cannot run: every problem found, one per line, each naming file, field and reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# --- the typed specs --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where X, y come from. `seed` fixes the data: every run of a group shares one problem (the batch axis
    varies the initialisation only)."""

    kind: str
    n: int | None = None
    d: int | None = None
    sparsity: int | None = None
    noise: float = 0.0
    margin: float = 0.1
    path: str | None = None
    seed: int = 0
    n_test: int = 0  # held-out test points (generators with a teacher); 0: no test set


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Network family and sizes; the input dimension comes from the data."""

    kind: str
    depth: int | None = None
    widths: tuple[int, ...] | None = None  # fully_connected hidden widths
    filter_sizes: tuple[int, ...] | None = None  # convolutional; None = full length
    basis: str = "random"  # odeco: random real orthogonal S and U_l, the complex DFT, or the identity
    seed: int = 0  # odeco random basis
    path: str | None = None  # tensor: .npz holding M of shape (d, k_1, ..., k_L)


@dataclasses.dataclass(frozen=True)
class InitSpec:
    """The initialisation (`ltn.networks.INIT_KINDS`): `shape` for kind "shaped", `path` for kind "file"."""

    kind: str = "gaussian"
    scale: float = 1.0
    shape: float | None = None
    path: str | None = None


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """Options of `ltn.gradient_flow` (or of `ltn.gradient_descent` when `solver = "descent"`)."""

    solver: str = "auto"
    rtol: float = FlowOptions.rtol  # the flow's own defaults: one source of truth
    atol: float = FlowOptions.atol
    max_steps: int = FlowOptions.max_steps
    t_max: float | None = None
    gtol: float = FlowOptions.gtol
    xtol: float = FlowOptions.xtol
    residual_tol: float = FlowOptions.residual_tol
    target_log_loss: float | None = None
    target_norm: float | None = None
    checkpoints: int = 64
    learning_rate: float | None = None
    optimizer: str | None = None
    step_scaling: str = "none"

    def flow_options(self) -> dict:
        names = ("solver", "rtol", "atol", "max_steps", "t_max", "gtol", "xtol", "residual_tol",
                 "target_log_loss", "target_norm", "checkpoints")
        return {name: getattr(self, name) for name in names}

    def descent_options(self) -> dict:
        names = ("learning_rate", "optimizer", "max_steps", "step_scaling", "gtol", "xtol", "residual_tol",
                 "target_log_loss", "target_norm", "checkpoints")
        return {name: getattr(self, name) for name in names}


# `check.against`: the theory, or a named alternative (which ones apply to which task: ltn/sweep/_theory.py).
CHECK_AGAINST = ("theory", *MAX_MARGIN_NORMS, "lazy", "min_norm")


@dataclasses.dataclass(frozen=True)
class CheckSpec:
    """The theory check: what a run is judged against and with which tolerances. Regression
    `||beta - beta_pred|| / ||beta_pred|| <= tolerance`; classification `cosine(beta, beta_pred) >= cosine`,
    when `margin` is set `|margin_ratio - 1| <= margin`, and when `certificate` is set the certificate (KKT
    residual on the detected support, or the distance to the Theorem-1 KKT point) `<= certificate`. Unset
    tolerances are reported, not judged: at a finite flow time they are dominated by coordinates still decaying
    on the slow (polynomial in -log L) approach. `against`: "theory" (the theory's prediction for the network)
    or a named alternative, to test a competing hypothesis (or a negative control) on the same flows."""

    enabled: bool = True
    tolerance: float = 1e-6
    cosine: float = 0.999
    certificate: float | None = None
    margin: float | None = None
    against: str = "theory"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One fully resolved run: every sweep axis fixed, plus the seed of the initialisation."""

    experiment: str
    task: str
    loss: str
    data: DataSpec
    network: NetworkSpec
    init: InitSpec
    solver: SolverSpec
    check: CheckSpec
    seed: int
    base_dir: str = "."  # the config file's folder: relative data paths resolve against it

    def group_key(self) -> "RunSpec":
        """Everything static for the solver: equal keys share one compiled, vmapped solve."""
        return dataclasses.replace(self, seed=0, init=dataclasses.replace(self.init, scale=0.0))


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """One experiment of a config file, validated, with its sweep axes still unexpanded.

    `axes` maps a dotted field (e.g. `"network.depth"`) to its tuple of values; `base` holds every field with
    a single value (sections as dicts). `grid.expand` turns it into `RunSpec`s."""

    name: str
    source: str
    base: dict
    axes: tuple[tuple[str, tuple], ...]
    seeds: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A whole config file: its experiments, the figures of its `[report]` table, and the raw TOML (kept for the
    manifest, where `ltn report` reads the figures back)."""

    source: str
    name: str
    experiments: tuple[ExperimentSpec, ...]
    raw: dict
    report: "ReportSpec" = dataclasses.field(default_factory=lambda: ReportSpec())  # the [report] table
    executor: "ExecutorSpec" = None  # the file's [executor] table (None: not given; where groups are solved)


# --- the [executor] table (where groups are solved; never part of a run's identity) ----------------------------


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    """The `[executor]` table of a config file: where `ltn run` solves its groups (`ltn.sweep._executors`). It
    belongs to the file, not to an experiment, and never enters a run id: results do not depend on where they were
    computed. `ltn run` flags override it."""

    kind: str = "local"
    address: str | None = None
    partition: str | None = None
    time: int | None = None
    gpus: int | None = None
    cpus: int | None = None
    cluster: str = "slurm"
    retries: int = 2


# --- field schemas ------------------------------------------------------------------------------------------

REQUIRED = object()


@dataclasses.dataclass(frozen=True)
class Field:
    """One key of a config section: its type, default, bounds, whether a list of values sweeps it, and what it
    means (`doc`, printed in docs/config.md)."""

    kind: str  # "int", "float", "str", "bool", "int_list", "int_or_list"
    default: Any = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    below: float | None = None  # an exclusive upper bound
    positive: bool = False
    sweep: bool = True
    max_items: int | None = None  # list-valued fields: at most this many entries
    why: str = ""  # the reason for a bound, added to its message
    doc: str = ""


# The top-level keys of an experiment (parsed by `_parse_experiment`; listed here for the reference).
TOP_LEVEL: dict[str, Field] = {
    "name": Field("str", "experiment<i>", sweep=False,
                  doc="the experiment's name (of the sweep, at the top of a file with [[experiment]] tables): a "
                      "plain file name, unique in the file; names the results folder and plot files"),
    "description": Field("str", None, sweep=False, doc="free text, kept in the manifest"),
    "task": Field("str", REQUIRED, choices=TASKS, sweep=False,
                  doc="regression (squared loss, underdetermined data) or classification (separable data)"),
    "loss": Field("str", DEFAULT_LOSS, choices=tuple(LOSSES), sweep=False,
                  doc="the loss (`ltn.losses.LOSSES`); it must be one of the task's"),
    "seeds": Field("int_list", 0, sweep=False,
                   doc="initialisation seed(s), each in [0, 2**32): one run per seed at every point of the grid"),
}


def _kind_doc(registry: dict) -> str:
    return "; ".join(f"`{kind}`: {entry if isinstance(entry, str) else entry.doc}" for kind, entry in registry.items())


SCHEMA: dict[str, dict[str, Field]] = {
    "data": {
        "kind": Field("str", REQUIRED, choices=tuple(DATA_KINDS), sweep=False,
                      doc="where X, y come from: " + _kind_doc(DATA_KINDS)),
        "n": Field("int", None, minimum=1, doc="number of samples (generated data; required)"),
        "d": Field("int", None, minimum=1, doc="input dimension (generated data; required)"),
        "sparsity": Field("int", None, minimum=1,
                          doc="non-zero entries of the teacher beta* (sparse_gaussian: default min(3, d); "
                              "separable: default dense)"),
        "noise": Field("float", 0.0, minimum=0.0, doc="sparse_gaussian: standard deviation of the label noise"),
        "margin": Field("float", 0.1, positive=True, doc="separable: the margin the points are pushed to"),
        "path": Field("str", None, doc="npz: the data file (relative to the config file's folder); its SHA-256 "
                                       "enters the run id"),
        "seed": Field("int", 0, minimum=0,
                      doc="seed of generated data: every run of a group shares one problem (the seeds vary the "
                          "initialisation only)"),
        "n_test": Field("int", 0, minimum=0, sweep=False,
                        doc="held-out test points drawn from the training distribution (generators with a teacher), "
                            "independently of the training set and deterministically from `seed`; the `test_error` "
                            "column is the end predictor's mean squared error (regression) or 0-1 error "
                            "(classification) on them, NaN when 0"),
    },
    "network": {
        "kind": Field("str", REQUIRED, choices=tuple(NETWORK_KINDS), sweep=False,
                      doc="the network family: " + _kind_doc(NETWORK_KINDS)),
        "depth": Field("int", None, minimum=1, maximum=MAX_DEPTH, why="compile time grows with depth",
                       doc="number of layers L (default 2; fully_connected with widths: len(widths) + 1)"),
        "widths": Field("int_list", None, max_items=MAX_DEPTH - 1, why="compile time grows with depth",
                        doc="fully_connected: hidden widths (a list of lists sweeps them)"),
        "width": Field("int", None, minimum=1, doc="fully_connected: one width for every hidden layer"),
        "filter_size": Field("int_or_list", None, max_items=MAX_DEPTH - 1, why="compile time grows with depth",
                             doc="convolutional: filter length of the first L - 1 layers, one for all or a list "
                                 "(default: full length d)"),
        "basis": Field("str", "random", choices=ODECO_BASES,
                       doc="odeco: S and the U_l random orthogonal (seeded by `seed`), the complex DFT, or the "
                           "identity"),
        "seed": Field("int", 0, minimum=0, doc="odeco: seed of the random basis"),
        "path": Field("str", None, doc="tensor: .npz holding M of shape (d, k_1, ..., k_L); its SHA-256 enters "
                                       "the run id"),
    },
    "init": {
        "kind": Field("str", "gaussian", choices=tuple(INIT_KINDS),
                      doc="the initialisation (`ltn.networks.INIT_KINDS`): " + _kind_doc(INIT_KINDS)),
        "scale": Field("float", 1.0, positive=True,
                       doc="the initial scale: every layer is proportional to it (for `file`, a factor on the "
                           "file's arrays)"),
        "shape": Field("float", None, minimum=0.0, below=1.0, why="Azulay et al.'s shape s lies in [0, 1)",
                       doc="shaped: the shape s (default 0: balanced layers)"),
        "path": Field("str", None,
                      doc="file: .npz with arrays layer0 ... layer{L-1} of the layer shapes, or all with one "
                          "leading axis B (then the run of seed i starts from entry i; seeds must be below B); "
                          "relative to the config file's folder; its SHA-256 enters the run id"),
    },
    "flow": {
        "solver": Field("str", "auto", choices=SOLVERS,
                        doc="an ODE solver for `ltn.gradient_flow` (`auto` picks Tsit5, then Kvaerno5 or BDF, "
                            "per run), or `descent` for `ltn.gradient_descent`"),
        "rtol": Field("float", SolverSpec.rtol, positive=True, doc="ODE solver: relative tolerance"),
        "atol": Field("float", SolverSpec.atol, positive=True, doc="ODE solver: absolute tolerance"),
        "max_steps": Field("int", SolverSpec.max_steps, minimum=1,
                           doc="step budget (solver or descent steps); using it up is the status "
                               "`budget_exhausted`"),
        "t_max": Field("float", None, positive=True, doc="ODE solver: a time budget (default none)"),
        "gtol": Field("float", SolverSpec.gtol, positive=True,
                      doc="gradient norm below which a run that has not met its stop is `stalled`"),
        "xtol": Field("float", SolverSpec.xtol, positive=True,
                      doc="regression: an interpolating end point is converged when the change of beta still to "
                          "come (Gauss-Newton estimate) is below xtol * |beta|"),
        "residual_tol": Field("float", SolverSpec.residual_tol, positive=True,
                              doc="regression: relative residual below which the end point interpolates"),
        "target_log_loss": Field("float", None, doc="classification: stop at this log-loss"),
        "target_norm": Field("float", None, positive=True, doc="classification: stop at this parameter norm"),
        "checkpoints": Field("int", SolverSpec.checkpoints, minimum=2, maximum=MAX_CHECKPOINTS,
                             why="each checkpoint is stored for every run",
                             doc="trajectory summaries stored per run, at geometrically spaced times"),
        "learning_rate": Field("float", None, positive=True, doc="descent: the step size (required)"),
        "optimizer": Field("str", None, choices=DESCENT_OPTIMIZERS, doc="descent: the optimiser (default sgd)"),
        "step_scaling": Field("str", "none", choices=STEP_SCALINGS,
                              doc="descent: `loss` takes the step learning_rate / L (classification only)"),
    },
    "check": {
        "enabled": Field("bool", True, sweep=False,
                         doc="judge runs against the theory (false: every verdict is `not judged`)"),
        "tolerance": Field("float", CheckSpec.tolerance, positive=True,
                           doc="regression: passes when |beta - beta_pred| / |beta_pred| <= tolerance"),
        # A threshold above 1 can never pass; one at or below 0 passes a direction orthogonal (or opposite) to
        # the prediction, which checks nothing. `enabled = false` is the way to skip the check.
        "cosine": Field("float", CheckSpec.cosine, positive=True, maximum=1.0,
                        why="a cosine threshold must lie in (0, 1]",
                        doc="classification: passes when cosine(beta, beta_pred) >= cosine"),
        "certificate": Field("float", None, positive=True,
                             doc="classification: also require the certificate (KKT residual on the detected "
                                 "support for odeco nets, else the distance to the Theorem-1 KKT point) <= "
                                 "certificate (default: reported, not judged)"),
        "margin": Field("float", None, positive=True,
                        doc="classification: also require |margin_ratio - 1| <= margin, the normalised margin "
                            "relative to the predicted optimum (default: reported, not judged)"),
        "against": Field("str", CheckSpec.against, choices=CHECK_AGAINST,
                         doc="what runs are judged against: `theory` (the prediction for the network), or an "
                             "alternative: classification `l1`, `l2`, `l2/L` (max margin in the network's "
                             "coordinates), regression `lazy`, `min_norm` (negative controls, competing "
                             "hypotheses)"),
    },
}
# The [executor] table (parsed by `_parse_executor`; a file-level table like `name`, not a sweep section).
EXECUTOR: dict[str, Field] = {
    "kind": Field("str", "local", choices=("local", "ray", "slurm"), sweep=False,
                  doc="`local`: this process; `ray`: one Ray task per group; `slurm`: one SLURM job (array "
                      "element) per group, through submitit (`ltn run --executor` overrides it)"),
    "address": Field("str", None, sweep=False,
                     doc="ray: the cluster's address (default: `RAY_ADDRESS`, else a local Ray for this sweep)"),
    "partition": Field("str", None, sweep=False, doc="slurm: the partition"),
    "time": Field("int", None, minimum=1, sweep=False, doc="slurm: the time limit of one job, in minutes"),
    "gpus": Field("int", None, minimum=0, sweep=False,
                  doc="GPUs per group (ray: default 1 when the cluster has GPUs, else 0; slurm: default 0)"),
    "cpus": Field("int", None, minimum=1, sweep=False, doc="CPUs per group (default 1)"),
    "cluster": Field("str", "slurm", choices=("slurm", "local"), sweep=False,
                     doc="slurm: `local` runs the jobs as local processes through submitit (to try a config "
                         "without a cluster)"),
    "retries": Field("int", 2, minimum=0, sweep=False,
                     doc="how many times a group whose worker died (or whose job ended without a result) is "
                         "computed again"),
}


def _parse_executor(table, problems: "_Problems") -> ExecutorSpec | None:
    """The `[executor]` table as an `ExecutorSpec` (None when the file has none); problems recorded."""
    if table is None:
        return None
    if not isinstance(table, dict):
        problems.add("executor", f"must be a table ([executor] with kind = ...), got {table!r}")
        return None
    values = {}
    for key, value in table.items():
        if key not in EXECUTOR:
            problems.add(f"executor.{key}", f"unknown key{_did_you_mean(key, EXECUTOR)}")
            continue
        checked = _check_scalar(value, EXECUTOR[key], f"executor.{key}", problems)
        if checked is not None:
            values[key] = checked
    return ExecutorSpec(**values)


# Which init keys each init kind uses (a key set for another kind is a mistake worth reporting).
INIT_KEYS = {"gaussian": ("scale",), "theorem": ("scale",), "shaped": ("scale", "shape"), "file": ("scale", "path")}
# ODE-solver options a descent run refuses: the flow's own list, less what the config spells otherwise (`solver`
# names descent too; `reparametrize` is not a config key).
FLOW_ONLY = tuple(key for key in _SOLVER_ONLY if key in SCHEMA["flow"] and key != "solver")
REGRESSION_ONLY = ("xtol", "residual_tol")  # the regression certificate (docs/theory.md §11)


def _did_you_mean(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(options))})"


class _Problems:
    """Collects problems so that `ltn validate` reports all of them at once."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, where: str, reason: str) -> None:
        self.items.append(f"{self.source}: {where}: {reason}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(self.items)


def _check_scalar(value, field: Field, where: str, problems: _Problems) -> Any:
    """The value converted to its field type, or None after recording why it cannot be."""
    kind = field.kind
    if kind == "bool":
        if not isinstance(value, bool):
            problems.add(where, f"must be true or false, got {value!r}")
            return None
        return value
    if kind == "str":
        if not isinstance(value, str):
            problems.add(where, f"must be a string, got {value!r}")
            return None
        if field.choices is not None and value not in field.choices:
            problems.add(where, f"must be one of {list(field.choices)}, got {value!r}"
                         + _did_you_mean(value, field.choices).replace(" (known", " (choices"))
            return None
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            problems.add(where, f"must be an integer, got {value!r}")
            return None
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.add(where, f"must be a number, got {value!r}")
            return None
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            problems.add(where, f"must be finite, got {value!r}")
            return None
    elif kind in ("int_list", "int_or_list"):
        items = value if isinstance(value, list) else [value]
        if kind == "int_list" and not isinstance(value, list):
            problems.add(where, f"must be a list of integers, got {value!r}")
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
            problems.add(where, f"must hold positive integers, got {value!r}")
            return None
        if field.max_items is not None and len(items) > field.max_items:
            problems.add(where, f"must hold at most {field.max_items} entries ({field.why}), got {len(items)}")
            return None
        return tuple(items) if isinstance(value, list) else value
    if field.positive and not value > 0:
        problems.add(where, f"must be positive, got {value!r}")
        return None
    if field.minimum is not None and value < field.minimum:
        problems.add(where, f"must be >= {field.minimum:g}, got {value!r}")
        return None
    if field.maximum is not None and value > field.maximum:
        problems.add(where, f"must be <= {field.maximum:g} ({field.why}), got {value!r}")
        return None
    if field.below is not None and not value < field.below:
        problems.add(where, f"must be < {field.below:g} ({field.why}), got {value!r}")
        return None
    return value


def _is_axis(value, field: Field) -> bool:
    """A list is a sweep axis, except for list-valued fields, where a list of lists is."""
    if not isinstance(value, list):
        return False
    if field.kind == "int_list":
        return bool(value) and all(isinstance(v, list) for v in value)
    if field.kind == "int_or_list":
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def _check_section(name: str, table, where: str, problems: _Problems, axes: dict, out: dict) -> None:
    schema = SCHEMA[name]
    if not isinstance(table, dict):
        problems.add(where, f"must be a table (e.g. {name} = {{ kind = ... }}), got {table!r}")
        return
    for key, value in table.items():
        field_where = f"{where}.{key}"
        if key not in schema:
            problems.add(field_where, f"unknown key{_did_you_mean(key, schema)}")
            continue
        field = schema[key]
        if _is_axis(value, field):
            if not field.sweep:
                problems.add(field_where, "cannot be a sweep axis (give one value)")
                continue
            if not value:
                problems.add(field_where, "an empty list sweeps over nothing")
                continue
            checked = [_check_scalar(v, field, f"{field_where}[{i}]", problems) for i, v in enumerate(value)]
            if any(c is None for c in checked):
                continue
            if len(set(checked)) != len(checked):
                problems.add(field_where, f"a sweep axis must not repeat values, got {value!r}")
                continue
            axes[f"{name}.{key}"] = tuple(checked)
        else:
            checked = _check_scalar(value, field, field_where, problems)
            if checked is not None:
                out[key] = checked


def _parse_seeds(value, where: str, problems: _Problems) -> tuple[int, ...] | None:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        problems.add(where, f"must be a non-negative integer or a non-empty list of them, got {value!r}")
        return None
    outside = [v for v in values if not 0 <= v < SEED_LIMIT]
    if outside:
        problems.add(where, f"must be integers in [0, 2**32) (the seeds of jax.random.PRNGKey), got {outside[0]!r}")
        return None
    if len(set(values)) != len(values):
        problems.add(where, f"must not repeat seeds, got {value!r}")
        return None
    return tuple(values)


def _merge(defaults: dict, table: dict) -> dict:
    merged = copy.deepcopy({k: v for k, v in defaults.items() if k not in FILE_KEYS})
    for key, value in table.items():
        if key in SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _parse_experiment(table: dict, where: str, source: str, index: int, problems: _Problems
                      ) -> ExperimentSpec | None:
    prefix = f"{where}." if where else ""
    before = len(problems.items)
    for key in table:
        if key not in TOP_LEVEL_KEYS:
            problems.add(f"{prefix}{key}", f"unknown key{_did_you_mean(key, TOP_LEVEL_KEYS)}")
    for required in ("task", "data", "network"):
        if required not in table:
            problems.add(f"{prefix}{required}", "is required")
    task = table.get("task")
    if "task" in table and task not in TASKS:
        problems.add(f"{prefix}task", f"must be one of {list(TASKS)}, got {task!r}")
        task = None
    name = table.get("name", f"experiment{index}")
    reason = name_problem(name)
    if reason is not None:
        problems.add(f"{prefix}name", reason)
        name = f"experiment{index}"
    loss = table.get("loss", DEFAULT_LOSS.get(task))
    if loss is not None and loss not in LOSSES:
        problems.add(f"{prefix}loss", f"must be one of {list(LOSSES)}, got {loss!r}")
        loss = None
    elif task is not None and loss is not None and LOSSES[loss] != task:
        problems.add(f"{prefix}loss", f"loss {loss!r} is a {LOSSES[loss]} loss, but task is {task!r} "
                     f"(use {DEFAULT_LOSS[task]!r})")
    seeds = _parse_seeds(table.get("seeds", 0), f"{prefix}seeds", problems)
    if "description" in table and not isinstance(table["description"], str):
        problems.add(f"{prefix}description", "must be a string")

    axes: dict[str, tuple] = {}
    sections: dict[str, dict] = {}
    for section in SECTIONS:
        values: dict = {}
        if section in table:
            _check_section(section, table[section], f"{prefix}{section}", problems, axes, values)
        sections[section] = values
    if len(problems.items) > before:
        return None
    base = {"name": name, "task": task, "loss": loss, **sections}
    return ExperimentSpec(name=name, source=source, base=base, axes=tuple(axes.items()), seeds=seeds)


def parse_config(raw: dict, source: str = "<config>") -> SweepSpec:
    """Validate the structure and field types of a parsed TOML document (no data or network is built yet:
    `validate` does the cross-field and data checks)."""
    problems = _Problems(source)
    executor = _parse_executor(raw.get("executor"), problems)  # the file's table, not an experiment's
    experiments = []
    if "experiment" in raw:
        tables = raw["experiment"]
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            problems.add("experiment", "must be a list of tables ([[experiment]] sections)")
            problems.raise_if_any()
        for key in raw:
            if key not in FILE_KEYS and key not in TOP_LEVEL_KEYS:
                problems.add(key, f"unknown key{_did_you_mean(key, (*TOP_LEVEL_KEYS, *FILE_KEYS))}")
        for i, table in enumerate(tables):
            spec = _parse_experiment(_merge(raw, table), f"experiment[{i}]", source, i, problems)
            if spec is not None:
                experiments.append(spec)
        for message in duplicate_names([e.name for e in experiments]):
            problems.add("experiment", message)
        if "name" in raw:
            reason = name_problem(raw["name"])
            if reason is not None:
                problems.add("name", reason)
    else:
        table = {key: value for key, value in raw.items() if key not in FILE_KEYS}
        spec = _parse_experiment(table, "", source, 0, problems)
        if spec is not None:
            experiments.append(spec)
    if experiments:
        _check_grid_size(experiments, problems)
    report = _parse_report(raw.get("report", {}), experiments, problems)
    problems.raise_if_any()
    name = raw.get("name", experiments[0].name) if isinstance(raw.get("name"), str) else experiments[0].name
    return SweepSpec(source=source, name=name, experiments=tuple(experiments), raw=raw, report=report,
                     executor=executor)


# --- the [report] table ------------------------------------------------------------------------------------------
# The figures `ltn report` draws for the config's results. Its quantities, axes and series are the registries of
# `ltn.plots`, which draws them; this block only checks a table against them.

# Keys of a file that belong to the file, not to its experiments (never merged into an experiment).
FILE_KEYS = ("experiment", "report", "executor")


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure of the `[report]` table: one panel per quantity in `y`, against `x`, one series per depth or per
    network (experiments that differ only in the initial scale and the step budget are one series: bands)."""

    name: str
    x: str
    y: tuple[str, ...]
    series: str = "network"
    experiments: tuple[str, ...] = ()  # () = every experiment of the config
    title: str = ""


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    """The `[report]` table: its figures; none means `ltn report` draws its default figures per experiment."""

    figures: tuple[FigureSpec, ...] = ()


def _choices_doc(registry: dict) -> str:
    return "; ".join(f"`{name}`: {entry if isinstance(entry, str) else entry.doc}" for name, entry in registry.items())


REPORT_FIGURE: dict[str, Field] = {
    "name": Field("str", REQUIRED, sweep=False,
                  doc="the figure's name, unique in the table: `ltn report` writes it as <config name>-<name>.png "
                      "in the results folder"),
    "x": Field("str", REQUIRED, choices=tuple(X_AXES), sweep=False, doc="the x-axis: " + _choices_doc(X_AXES)),
    "y": Field("str_or_list", REQUIRED, choices=tuple(Y_QUANTITIES), sweep=False,
               doc="the quantity, or a list of them (one panel each); a panel draws each run's path when the "
                   "quantity is recorded along it and x is `log_loss` or `time`, else each run's end value: "
                   + _choices_doc(Y_QUANTITIES)),
    "series": Field("str", "network", choices=tuple(SERIES), sweep=False,
                    doc="what one series (colour) is: " + _choices_doc(SERIES) + "; runs whose configs differ only "
                        "in the experiment name, the seed, the step budget (flow.max_steps, flow.t_max) and what "
                        "the x-axis varies are one series, so an experiment split into step-budget bands is joined"),
    "experiments": Field("str_list", None, sweep=False,
                         doc="the experiments the figure draws (default: every experiment of the config)"),
    "title": Field("str", None, sweep=False, doc="the figure's title (default: its name)"),
}


def _parse_report(table, experiments: list[ExperimentSpec], problems: _Problems) -> ReportSpec:
    """The `[report]` table checked against the `ltn.plots` registries and the config's experiments, each problem
    naming its figure and key (`report.figure[1].y[0]: ...`)."""
    if not isinstance(table, dict):
        problems.add("report", f"must be a table ([report], with [[report.figure]] tables), got {table!r}")
        return ReportSpec()
    for key in table:
        if key != "figure":
            problems.add(f"report.{key}", f"unknown key{_did_you_mean(key, ('figure',))}")
    entries = table.get("figure", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        problems.add("report.figure", "must be a list of tables ([[report.figure]] sections)")
        return ReportSpec()
    by_name = {experiment.name: experiment for experiment in experiments}
    figures = []
    for i, entry in enumerate(entries):
        figure = _parse_figure(entry, f"report.figure[{i}]", by_name, problems)
        if figure is not None:
            figures.append(figure)
    names = [figure.name for figure in figures]
    for name in dict.fromkeys(n for n in names if names.count(n) > 1):
        problems.add("report.figure", f"two figures are named {name!r}; names must be unique")
    return ReportSpec(tuple(figures))


def _parse_figure(entry: dict, where: str, experiments: dict[str, ExperimentSpec], problems: _Problems
                  ) -> FigureSpec | None:
    before = len(problems.items)
    for key in entry:
        if key not in REPORT_FIGURE:
            problems.add(f"{where}.{key}", f"unknown key{_did_you_mean(key, REPORT_FIGURE)}")
    for key, field in REPORT_FIGURE.items():
        if field.default is REQUIRED and key not in entry:
            problems.add(f"{where}.{key}", "is required")
    values = {}
    for key in ("name", "x", "series", "title"):
        if key in entry:
            values[key] = _check_scalar(entry[key], dataclasses.replace(REPORT_FIGURE[key], kind="str"),
                                        f"{where}.{key}", problems)
    if values.get("name") is not None and name_problem(values["name"]) is not None:
        problems.add(f"{where}.name", name_problem(values["name"]))
    for key in ("y", "experiments"):
        if key in entry:
            items = entry[key] if isinstance(entry[key], list) else [entry[key]]
            if not items or (key == "experiments" and not isinstance(entry[key], list)):
                problems.add(f"{where}.{key}", f"must be a non-empty list of names, got {entry[key]!r}")
                continue
            field = dataclasses.replace(REPORT_FIGURE[key], kind="str")
            values[key] = tuple(_check_scalar(item, field, f"{where}.{key}[{j}]", problems)
                                for j, item in enumerate(items))
    chosen = list(experiments.values())
    for j, name in enumerate(values.get("experiments") or ()):
        if name is not None and name not in experiments:
            problems.add(f"{where}.experiments[{j}]", f"no experiment is named {name!r}"
                         + _did_you_mean(name, experiments).replace(" (known", " (experiments"))
    if values.get("experiments") and all(name in experiments for name in values["experiments"]):
        chosen = [experiments[name] for name in values["experiments"]]
    if len(problems.items) > before:
        return None
    series = values.get("series", REPORT_FIGURE["series"].default)
    if series == values["x"]:
        problems.add(f"{where}.series", f"{series!r} is the x-axis already; choose another series")
    tasks = {experiment.base["task"] for experiment in chosen}
    axis = X_AXES[values["x"]]
    for task in sorted(tasks - set(axis.tasks)):
        problems.add(f"{where}.x", f"{values['x']!r} applies to {' and '.join(axis.tasks)} only, and the figure "
                     f"draws {task} experiments")
    for j, quantity in enumerate(values["y"]):
        for task in sorted(tasks - set(Y_QUANTITIES[quantity].tasks)):
            problems.add(f"{where}.y[{j}]", f"{quantity!r} applies to {' and '.join(Y_QUANTITIES[quantity].tasks)} "
                         f"only, and the figure draws {task} experiments")
        if quantity == "test_error":
            for experiment in chosen:
                if not experiment.base["data"].get("n_test", 0):
                    problems.add(f"{where}.y[{j}]", f"'test_error' is the error on a held-out test set, and "
                                 f"experiment {experiment.name!r} draws none (set data.n_test)")
    if len(problems.items) > before:
        return None
    return FigureSpec(name=values["name"], x=values["x"], y=values["y"], series=series,
                      experiments=values.get("experiments", ()), title=values.get("title") or "")


def duplicate_names(names: list[str]) -> list[str]:
    """A message for each set of experiment names that are equal or share a `file_stem`: their rows and plot
    files would land in one place."""
    by_stem: dict[str, list[str]] = {}
    for name in names:
        by_stem.setdefault(file_stem(name), []).append(name)
    messages = []
    for stem, same in by_stem.items():
        if len(same) > 1 and len(set(same)) == 1:
            messages.append(f"two experiments are named {same[0]!r}; names must be unique")
        elif len(same) > 1:
            messages.append(f"experiments {' and '.join(map(repr, dict.fromkeys(same)))} would write the same "
                            f"files (both become {stem!r} in file names); rename one")
    return messages


def grid_size(experiment: ExperimentSpec) -> int:
    """The number of runs of an experiment, from its axes (without expanding them)."""
    return math.prod(len(values) for _, values in experiment.axes) * len(experiment.seeds)


def _check_grid_size(experiments: list[ExperimentSpec], problems: _Problems) -> None:
    total = sum(grid_size(e) for e in experiments)
    if total > MAX_RUNS:
        detail = "; ".join(f"{e.name}: " + " * ".join([f"{name} x{len(values)}" for name, values in e.axes]
                                                       + [f"seeds x{len(e.seeds)}"]) for e in experiments)
        problems.add("grid", f"holds {total:,} runs ({detail}), more than the {MAX_RUNS:,} a config may hold; "
                     f"split it into several configs")


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """`"flow.rtol=1e-6"` -> (["flow", "rtol"], 1e-6): the value is read as TOML (so `[1, 2]` is a list and
    `true` a bool), falling back to a plain string."""
    if "=" not in assignment:
        raise ConfigError([f"--set {assignment}: expected key=value (e.g. flow.rtol=1e-6)"])
    key, text = assignment.split("=", 1)
    key, text = key.strip(), text.strip()
    if not key or not all(key.split(".")):
        raise ConfigError([f"--set {assignment}: empty key or key part (expected e.g. flow.rtol=1e-6)"])
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set dotted keys in the raw document; with `[[experiment]]` tables a section key is set in every
    experiment that defines that section (and in the shared defaults), so it wins everywhere. A number in the
    key indexes a list (`experiment.1.seeds=[0]`)."""
    raw = copy.deepcopy(raw)
    for assignment in overrides:
        path, value = parse_override(assignment)
        experiments = raw.get("experiment")
        if path[0] == "experiment" and len(path) > 1 and not isinstance(experiments, list):
            raise ConfigError([f"--set {assignment}: this config has no [[experiment]] tables to index"])
        targets = [raw]
        if isinstance(experiments, list) and path[0] != "experiment":
            # A top-level key (e.g. seeds) wins in every experiment, except the name, which must stay unique.
            targets += [t for t in experiments if isinstance(t, dict) and path != ["name"]
                        and (len(path) == 1 or path[0] in t)]
        for target in targets:
            _set_path(target, path, value, assignment)
    return raw


def _set_path(node, path: list[str], value, assignment: str) -> None:
    """`node[path[0]][path[1]]... = value`, creating tables on the way; list items by index only."""
    for depth, part in enumerate(path):
        key: str | int = part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                where = ".".join(path[:depth])
                raise ConfigError([f"--set {assignment}: {where} is a list of {len(node)} entries; {part!r} is "
                                   f"not one of its indices (0 to {len(node) - 1})"])
            key = int(part)
        if depth == len(path) - 1:
            node[key] = value
            return
        child = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
        if not isinstance(child, (dict, list)):
            raise ConfigError([f"--set {assignment}: {part!r} is not a table"])
        node = child


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> SweepSpec:
    """Read and validate a TOML config file (structure, types, cross-field rules and data), raising one
    `ConfigError` that lists every problem."""
    from ._grid import validate  # late import: grid builds on the specs defined here

    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([f"{source}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{source}: is a directory, not a TOML config file"]) from None
    except OSError as error:
        raise ConfigError([f"{source}: cannot be read: {error.strerror or error}"]) from None
    except UnicodeDecodeError as error:
        before = error.object[:error.start]
        line, column = before.count(b"\n") + 1, error.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigError([f"{source}: not UTF-8 text (TOML must be UTF-8): byte {error.object[error.start]:#04x} "
                           f"at line {line}, column {column}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{source}: not valid TOML: {error}"]) from None
    return validate(parse_config(apply_overrides(raw, overrides or []), source))


def loads_config(text: str, source: str = "<string>", overrides: list[str] | None = None) -> SweepSpec:
    """`load_config` for TOML text (relative paths resolve against the working directory)."""
    from ._grid import validate

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{source}: not valid TOML: {error}"]) from None
    return validate(parse_config(apply_overrides(raw, overrides or []), source))


Validator = Callable[[RunSpec], None]
