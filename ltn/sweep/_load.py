"""A results folder as pandas DataFrames: one row per run (`load`), and trajectories in long form
(`load_trajectories`, one row per run and checkpoint reached), joinable on `run_id`.

Both read through the strict readers of `_results` (a truncated or edited file is `CorruptResults` naming the
file and line), and type every column once: numbers as int64 / float64 (nullable `Int64` where an integer column
has gaps), booleans as bool (nullable `boolean` for `prediction_exact`), lists (`network.widths`,
`network.filter_sizes`) as Python lists, `status` and `verdict` as categoricals over every possible value, text
as strings. Types come from the specs' annotations and the outcome schema, so a column that happens to be empty in
one folder has the same type as in the next.

CSV stays the format on disk. `to_parquet(out_dir)` also writes `results.parquet` and `trajectories.parquet`
(one file each, needs pyarrow: `pip install "ltn[parquet]"`), and `load(out_dir, format="parquet")` reads them
back, refusing a parquet file older than the CSV or archive it was made from.
"""

from __future__ import annotations

import dataclasses
import os
import typing

import numpy as np

from ..flow import STATUSES
from ._config import CheckSpec, DataSpec, InitSpec, NetworkSpec, SolverSpec
from ._results import (MANIFEST, RESULTS, TRAJECTORIES, TRAJECTORY_FIELDS, ResultsError, archive_paths, atomic_write,
                       read_rows, read_trajectories)
from ._theory import VERDICTS

# pandas is imported on use: it adds about a third to the import time of ltn.sweep, which `ltn run` never needs.
if typing.TYPE_CHECKING:
    import pandas as pd

RESULTS_PARQUET = "results.parquet"
TRAJECTORIES_PARQUET = "trajectories.parquet"
FORMATS = ("csv", "parquet")

# The results columns that are not config columns, by type (config columns take theirs from the specs).
_OUTCOME_TYPES = {
    "float": ("final_log_loss", "final_param_norm", "final_beta_norm", "final_margin", "final_grad_norm",
              "final_log_time", "wall_time", "group_wall_time", "cosine", "relative_error", "certificate",
              "distance_limit_small", "distance_limit_large", "test_error", "teacher_error", "margin_ratio",
              "kkt_distance", "alignment", "fit_residual", "rate_exponent", "rate_exponent_theory",
              "pass_at_log_loss"),
    "int": ("steps", "accepted_steps", "rejected_steps", "grad_evals", "group_size", "seed", "rate_points"),
    "bool": ("passed", "prediction_exact"),
    "text": ("run_id", "group_id", "experiment", "task", "loss", "solver_used", "prediction", "check_kind",
             "certificate_name", "reason", "check_error", "limit_small", "limit_large", "precision", "ltn_version",
             "data.sha256", "network.sha256", "init.sha256"),
}
_CATEGORIES = {"status": tuple(STATUSES), "verdict": tuple(VERDICTS)}
_SPECS = {"data": DataSpec, "network": NetworkSpec, "init": InitSpec, "flow": SolverSpec, "check": CheckSpec}


def _annotation_type(annotation: str) -> str:
    """"int | None" -> "int"; "tuple[int, ...] | None" -> "list"; and so on (the specs' annotations are strings)."""
    if annotation.startswith("tuple"):
        return "list"
    for name in ("bool", "int", "float", "str"):
        if annotation.split(" |")[0] == name:
            return "text" if name == "str" else name
    raise TypeError(f"no column type for the spec annotation {annotation!r}")


def column_types() -> dict[str, str]:
    """`{column: "int" | "float" | "bool" | "list" | "text" | "category"}` for every column a sweep writes."""
    types = {column: kind for kind, columns in _OUTCOME_TYPES.items() for column in columns}
    types.update(dict.fromkeys(_CATEGORIES, "category"))
    for section, spec in _SPECS.items():
        for field in dataclasses.fields(spec):
            types[f"{section}.{field.name}"] = _annotation_type(field.type)
    return types


def _inferred_type(values: list) -> str:
    """The type of a column the schema does not know (e.g. written by a newer ltn), from its values."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float"
    if present and all(isinstance(v, list) for v in present):
        return "list"
    return "text"


def _series(values: list, kind: str, name: str):
    import pandas as pd

    missing = any(v is None for v in values)
    if kind == "float":
        return pd.Series(np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64), name=name)
    if kind == "int":
        return pd.Series(values, dtype="Int64" if missing else np.int64, name=name)
    if kind == "bool":
        return pd.Series(values, dtype="boolean" if missing else bool, name=name)
    if kind == "category":
        return pd.Series(pd.Categorical(values, categories=_CATEGORIES[name]), name=name)
    if kind == "list":
        return pd.Series([None if v is None else list(v) for v in values], dtype=object, name=name)
    return pd.Series([None if v is None else str(v) for v in values], dtype="string", name=name)


def frame(rows: list[dict]) -> "pd.DataFrame":
    """Rows as `read_rows` gives them -> a typed DataFrame (columns in the rows' order)."""
    import pandas as pd

    columns = list(dict.fromkeys(column for row in rows for column in row))
    types = column_types()
    data = {}
    for column in columns:
        values = [row.get(column) for row in rows]
        data[column] = _series(values, types.get(column) or _inferred_type(values), column)
    return pd.DataFrame(data, index=pd.RangeIndex(len(rows)))


def load(out_dir: str | os.PathLike, *, format: str = "csv") -> "pd.DataFrame":
    """The runs of a results folder as a DataFrame, one row per run.

    Arguments:
        out_dir: a folder `ltn run` wrote into (also while a sweep is still writing it).
        format: "csv" reads results.csv (strictly: `CorruptResults` names the file and line of a damaged row);
            "parquet" reads results.parquet as `to_parquet` wrote it.

    Returns:
        A DataFrame with a column per config field (`data.n`, `init.scale`, ...) and per outcome (`status`,
        `verdict`, `relative_error`, ...), typed as the module docstring says; empty when nothing finished yet.
    """
    folder = _folder(out_dir)
    if _format(format) == "parquet":
        return _read_parquet(folder, RESULTS_PARQUET, [os.path.join(folder, RESULTS)])
    return frame(read_rows(folder))


def load_trajectories(out_dir: str | os.PathLike, run_ids=None, *, format: str = "csv") -> "pd.DataFrame":
    """The trajectories of a results folder in long form: one row per run and checkpoint it reached.

    Arguments:
        out_dir: a results folder.
        run_ids: the runs to read (any iterable of run ids); None for every run.
        format: "csv" reads the trajectory archives (trajectories.npz, and the per-group archives of a sweep in
            progress); "parquet" reads trajectories.parquet as `to_parquet` wrote it.

    Returns:
        A DataFrame with columns `run_id`, `checkpoint` (the index of the checkpoint in the run's record, from 0)
        and one float64 column per quantity (`time`, `log_time`, `log_loss`, ...; see
        `ltn.sweep._results.TRAJECTORY_FIELDS`), NaN where a run has no such quantity (e.g. the distance to a
        prediction it has none of). Checkpoints a run did not reach (non-finite time) have no row. Join with
        `load(out_dir)` on `run_id`.
    """
    import pandas as pd

    folder = _folder(out_dir)
    wanted = None if run_ids is None else set(run_ids)
    if _format(format) == "parquet":
        table = _read_parquet(folder, TRAJECTORIES_PARQUET, archive_paths(folder))
        return table if wanted is None else table[table["run_id"].isin(wanted)].reset_index(drop=True)
    trajectories = read_trajectories(folder, wanted)
    quantities = list(dict.fromkeys([*TRAJECTORY_FIELDS, *(q for record in trajectories.values() for q in record)]))
    parts = []
    for run, record in trajectories.items():
        reached = np.flatnonzero(np.isfinite(record["time"]))
        part = {"run_id": np.full(len(reached), run, dtype=object), "checkpoint": reached.astype(np.int64)}
        for quantity in quantities:
            part[quantity] = (np.asarray(record[quantity], dtype=np.float64)[reached] if quantity in record
                              else np.full(len(reached), np.nan))
        parts.append(pd.DataFrame(part))
    table = (pd.concat(parts, ignore_index=True) if parts
             else pd.DataFrame({"run_id": [], "checkpoint": np.zeros(0, np.int64),
                                **{q: np.zeros(0) for q in quantities}}))
    table["run_id"] = table["run_id"].astype("string")
    return table


def to_parquet(out_dir: str | os.PathLike) -> tuple[str, str]:
    """Write `results.parquet` (the table of `load`) and `trajectories.parquet` (that of `load_trajectories`)
    into the folder, each atomically; needs pyarrow (`pip install "ltn[parquet]"`).

    Returns:
        The paths of the two files.
    """
    folder = _folder(out_dir)
    _pyarrow()
    paths = []
    for name, table in ((RESULTS_PARQUET, load(folder)), (TRAJECTORIES_PARQUET, load_trajectories(folder))):
        path = os.path.join(folder, name)
        atomic_write(path, lambda stream, table=table: table.to_parquet(stream, index=False))
        paths.append(path)
    return paths[0], paths[1]


def _read_parquet(folder: str, name: str, sources: list[str]) -> "pd.DataFrame":
    import pandas as pd

    _pyarrow()
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        raise ResultsError(f"{path}: no such file; write it with ltn.sweep.to_parquet({folder!r})")
    newer = [source for source in sources if os.path.exists(source)
             and os.path.getmtime(source) > os.path.getmtime(path)]
    if newer:
        raise ResultsError(f"{path} is older than {newer[0]}, which changed after it was written; run "
                           f"ltn.sweep.to_parquet({folder!r}) again")
    table = pd.read_parquet(path)
    for column in table.columns:
        if table[column].dtype == object:  # pyarrow gives lists back as arrays
            table[column] = [value.tolist() if isinstance(value, np.ndarray) else value for value in table[column]]
    return table


def _folder(out_dir) -> str:
    folder = os.fspath(out_dir)
    if not os.path.isdir(folder):
        raise ResultsError(f"results folder {folder!r} does not exist")
    if not any(os.path.exists(os.path.join(folder, name)) for name in (RESULTS, MANIFEST, TRAJECTORIES)):
        raise ResultsError(f"{folder!r} is not a results folder (no {RESULTS} or {MANIFEST})")
    return folder


def _format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"format must be one of {list(FORMATS)}, got {format!r}")
    return format


def _pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError('parquet files need pyarrow: pip install "ltn[parquet]"') from None
