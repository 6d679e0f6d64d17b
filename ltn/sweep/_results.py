"""The results folder: `results.csv` (one tidy row per run), `trajectories.npz` (one structured array per run,
keyed by run id, with a field per quantity and an entry per checkpoint) and `manifest.json` (config, versions,
git revision, devices).

Every write is atomic (a temp file in the same folder, then `os.replace`), and trajectories are written before
the rows that reference them: `results.csv` is the record of which runs finished, so an interrupted sweep
restarts exactly where it stopped. While a sweep runs, each group's trajectories go to an archive of their own in
`trajectories.parts/`; the end of the sweep merges them into `trajectories.npz` (readers see both), so the cost of
writing stays linear in the number of groups.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import zipfile

import numpy as np

RESULTS = "results.csv"
TRAJECTORIES = "trajectories.npz"
PARTS = "trajectories.parts"  # per-group archives of a sweep in progress
MANIFEST = "manifest.json"

# Columns after the config columns, in order (the results schema).
OUTCOME_COLUMNS = (
    "run_id", "group_id", "status", "final_log_loss", "final_param_norm", "final_beta_norm", "final_margin",
    "final_grad_norm", "final_log_time", "steps", "accepted_steps", "rejected_steps", "grad_evals", "solver_used",
    "wall_time", "group_wall_time", "group_size", "prediction", "check_kind", "prediction_exact", "cosine",
    "relative_error", "certificate", "certificate_name", "passed", "reason", "check_error",
    # regression: distances to the alpha -> 0 / alpha -> inf limits and the test error (ltn/sweep/_theory.py)
    "limit_small", "distance_limit_small", "limit_large", "distance_limit_large", "test_error",
)
# Per-checkpoint quantities stored for each run.
TRAJECTORY_FIELDS = ("time", "log_time", "log_loss", "param_norm", "beta_norm", "margin", "grad_norm",
                     "cosine_to_prediction", "error_to_prediction")


def varying_columns(rows, exclude=("seed",)) -> list[str]:
    """Config columns whose value differs between rows (what tells the runs of a table apart)."""
    if not rows:
        return []
    columns = [c for c in rows[0] if c not in OUTCOME_COLUMNS and c not in exclude]
    return [c for c in columns if len({repr(row.get(c)) for row in rows}) > 1]


def _atomic_write(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0
                                                                                         else "-inf"))
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def parse_value(text: str):
    """A CSV cell back to a Python value (numbers, booleans, lists; empty is None)."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_rows(folder: str) -> list[dict]:
    """The rows of `results.csv` with typed values ([] when there is none yet)."""
    path = os.path.join(folder, RESULTS)
    if not os.path.exists(path):
        return []
    with open(path, newline="") as stream:
        return [{k: parse_value(v) for k, v in row.items()} for row in csv.DictReader(stream)]


def read_trajectories(folder: str, run_ids=None) -> dict[str, dict[str, np.ndarray]]:
    """`{run_id: {quantity: array}}` from `trajectories.npz` and the per-group archives of a sweep that has not
    finished (those are newer: they win)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for path in _archives(folder):
        with np.load(path) as archive:
            for run in archive.files:
                if run_ids is None or run in run_ids:
                    record = archive[run]
                    out[run] = {name: np.asarray(record[name]) for name in record.dtype.names}
    return out


def _archives(folder: str) -> list[str]:
    """trajectories.npz (if any), then the parts in the order they were written."""
    merged = os.path.join(folder, TRAJECTORIES)
    parts_dir = os.path.join(folder, PARTS)
    parts = []
    if os.path.isdir(parts_dir):
        parts = sorted((os.path.join(parts_dir, name) for name in os.listdir(parts_dir)
                        if name.endswith(".npz") and not name.startswith(".tmp-")), key=os.path.getmtime)
    return ([merged] if os.path.exists(merged) else []) + parts


def as_record(quantities: dict[str, np.ndarray]) -> np.ndarray:
    """Equal-length 1-D arrays -> one structured array (a field per quantity)."""
    names = list(quantities)
    length = len(next(iter(quantities.values()))) if names else 0
    record = np.zeros(length, dtype=[(name, np.float64) for name in names])
    for name in names:
        record[name] = quantities[name]
    return record


class ResultsStore:
    """The results folder of one sweep, loaded on open so that finished runs are known (and skipped)."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.rows = read_rows(folder)
        self.done = {row["run_id"] for row in self.rows}
        self._keys: dict[str, None] = {}  # every key of every row, in first-seen order
        for row in self.rows:
            self._keys.update(dict.fromkeys(row))

    def append(self, rows: list[dict], trajectories: dict[str, dict[str, np.ndarray]]) -> None:
        """Add one finished group: trajectories first, then the rows (the commit record)."""
        fresh = [row for row in rows if row["run_id"] not in self.done]
        if not fresh:
            return
        self._write_part({row["run_id"]: trajectories[row["run_id"]] for row in fresh
                          if row["run_id"] in trajectories})
        self._write_rows_then_record(fresh)

    def _write_rows_then_record(self, fresh: list[dict]) -> None:
        self.rows.extend(fresh)
        keys = dict(self._keys)
        for row in fresh:
            keys.update(dict.fromkeys(row))
        try:
            self._write_rows(fresh, self._columns(keys))
        except BaseException:
            del self.rows[-len(fresh):]  # not on disk: not finished
            raise
        self._keys = keys
        self.done.update(row["run_id"] for row in fresh)

    def _write_part(self, new: dict[str, dict[str, np.ndarray]]) -> None:
        """One group's trajectories, in an archive of its own (named by its first run: a group recomputed after
        an interruption replaces its stale archive)."""
        if not new:
            return
        parts_dir = os.path.join(self.folder, PARTS)
        os.makedirs(parts_dir, exist_ok=True)
        records = {run: as_record(quantities) for run, quantities in new.items()}
        # Uncompressed: compressing was a sixth of a warm 256-run sweep, for 2.4 MB of float64 per 256 runs.
        _atomic_write(os.path.join(parts_dir, f"{next(iter(new))}.npz"), lambda stream: np.savez(stream, **records))

    def merge_trajectories(self) -> None:
        """Fold the per-group archives into trajectories.npz (one atomic replace), then remove them. Arrays of
        runs without a row (a group interrupted between its two writes) are dropped."""
        archives = _archives(self.folder)
        parts = archives[1:] if os.path.exists(os.path.join(self.folder, TRAJECTORIES)) else archives
        if not parts:
            return
        if len(archives) == 1 and self._all_done(parts[0]):  # one group and nothing before it: keep its archive
            os.replace(parts[0], os.path.join(self.folder, TRAJECTORIES))
        else:
            self._merge(archives)
        for path in parts:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(self.folder, PARTS))

    def _all_done(self, path: str) -> bool:
        with zipfile.ZipFile(path) as archive:
            return all(name.removesuffix(".npy") in self.done for name in archive.namelist())

    def _merge(self, archives: list[str]) -> None:
        members: dict[str, tuple[zipfile.ZipFile, zipfile.ZipInfo]] = {}
        sources = [zipfile.ZipFile(path) for path in archives]
        try:
            for source in sources:
                for info in source.infolist():
                    if info.filename.removesuffix(".npy") in self.done:
                        members[info.filename] = (source, info)

            def write(stream):
                with zipfile.ZipFile(stream, "w") as target:  # members keep their own compression
                    for source, info in members.values():
                        target.writestr(info, source.read(info))

            _atomic_write(os.path.join(self.folder, TRAJECTORIES), write)
        finally:
            for source in sources:
                source.close()

    @staticmethod
    def _columns(keys) -> list[str]:
        config_columns = [c for c in keys if c not in OUTCOME_COLUMNS]
        return config_columns + [c for c in OUTCOME_COLUMNS if c in keys]

    def _write_rows(self, fresh: list[dict], columns: list[str]) -> None:
        """Append `fresh` to a copy of results.csv and swap it in (a full rewrite if the columns changed, e.g.
        a folder shared by configs with different fields)."""
        path = os.path.join(self.folder, RESULTS)
        header = None
        if os.path.exists(path):
            with open(path, newline="") as stream:
                header = next(csv.reader(stream), None)
        rewrite = header != columns
        rows = self.rows if rewrite else fresh

        def write(stream):
            if not rewrite:
                with open(path, "rb") as previous:
                    shutil.copyfileobj(previous, stream)
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
            if rewrite:
                writer.writeheader()
            for row in rows:
                writer.writerow({key: _format(row.get(key)) for key in columns})
            stream.write(text.getvalue().encode())

        _atomic_write(path, write)


def git_revision(path: str) -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    revision = result.stdout.strip()
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                            capture_output=True, text=True, timeout=5, check=False)
    return revision + ("+dirty" if status.returncode == 0 and status.stdout.strip() else "")


def write_manifest(folder: str, configs: list[dict], extra: dict | None = None) -> dict:
    """Config(s), versions of ltn/jax/diffrax/numpy, git revision, platform and devices."""
    import diffrax
    import jax

    from .. import __version__

    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    manifest = {
        "configs": configs,
        "versions": {"ltn": __version__, "jax": jax.__version__, "jaxlib": _version("jaxlib"),
                     "diffrax": diffrax.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "git_revision": git_revision(package_dir),
        "devices": [str(device) for device in jax.local_devices()],
        "platform": jax.default_backend(),
        "x64": bool(jax.config.jax_enable_x64),
        **(extra or {}),
    }
    path = os.path.join(folder, MANIFEST)
    if os.path.exists(path):  # a resumed sweep keeps the history of what ran into this folder
        try:
            with open(path) as stream:
                previous = json.load(stream)
            manifest["previous"] = [*previous.pop("previous", []), previous][-10:]
        except (OSError, json.JSONDecodeError):
            pass
    _atomic_write(path, lambda stream: stream.write(json.dumps(manifest, indent=2, default=str).encode()))
    return manifest


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None

