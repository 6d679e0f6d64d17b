"""The results folder: `results.csv` (one tidy row per run), `trajectories.npz` (one structured array per run,
keyed by run id, with a field per quantity and an entry per checkpoint) and `manifest.json` (config, versions,
precision, input file hashes, git revision, devices).

Every write is atomic (a temp file in the same folder, then `os.replace`; files get mode 0666 less the umask),
and trajectories are written before the rows that reference them: `results.csv` is the record of which runs
finished, so an interrupted sweep restarts exactly where it stopped. While a sweep runs, each group's
trajectories go to an archive of their own in `trajectories.parts/`; the end of the sweep merges them into
`trajectories.npz` (readers see both), so the cost of writing stays linear in the number of groups.

A sweep holds an exclusive lock on the folder (`flock` on `.lock`, which records the holder's pid) from start to
end: a second writer stops at once with `ResultsLocked`. Files are read strictly: a truncated or malformed
`results.csv` (the file and line are named), a cell not of its column's type (`passed` is `true` or `false`,
nothing else), or an archive that is not an intact zip is `CorruptResults`. Readers raise it; a sweep recovers
(see `ResultsStore`).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import time
import warnings
import zipfile
import zlib

import numpy as np

from ._theory import VERDICTS

RESULTS = "results.csv"
TRAJECTORIES = "trajectories.npz"
PARTS = "trajectories.parts"  # per-group archives of a sweep in progress
MANIFEST = "manifest.json"
LOCK = ".lock"  # flock'ed by the sweep writing into the folder; holds its pid

# Columns after the config columns, in order (the results schema).
OUTCOME_COLUMNS = (
    "run_id", "group_id", "status", "final_log_loss", "final_param_norm", "final_beta_norm", "final_margin",
    "final_grad_norm", "final_log_time", "steps", "accepted_steps", "rejected_steps", "grad_evals", "solver_used",
    "wall_time", "group_wall_time", "group_size", "prediction", "check_kind", "prediction_exact", "cosine",
    "relative_error", "certificate", "certificate_name", "passed", "verdict", "reason",
    "check_error",
    # classification certificates (ltn/sweep/_theory.py, docs/theory.md §12)
    "margin_ratio", "kkt_distance", "alignment", "fit_residual",
    # classification: the rate test behind a "consistent" verdict (ltn/sweep/_theory.py, docs/theory.md §12)
    "rate_exponent", "rate_exponent_theory", "rate_points", "pass_at_log_loss",
    # regression: distances to the alpha -> 0 / alpha -> inf limits (ltn/sweep/_theory.py)
    "limit_small", "distance_limit_small", "limit_large", "distance_limit_large",
    # every run: held-out error and distance to the teacher (ltn.data.error_columns)
    "test_error", "teacher_error",
)
# Per-checkpoint quantities stored for each run.
TRAJECTORY_FIELDS = ("time", "log_time", "log_loss", "param_norm", "beta_norm", "margin", "grad_norm",
                     "cosine_to_prediction", "error_to_prediction")


# Columns read strictly. Booleans: `true` or `false` (a spreadsheet's `FALSE` must not read as a pass);
# the value says whether the cell may be empty. Text: never read as a number (a run id of 16 hex digits can look
# like one, e.g. "12e4..."). `verdict`: one of VERDICTS (empty in rows written before verdicts existed).
BOOLEAN_COLUMNS = {"passed": False, "prediction_exact": True, "check.enabled": False}
TEXT_COLUMNS = ("run_id", "group_id", "experiment", "status", "precision", "ltn_version", "data.sha256",
                "network.sha256", "init.sha256", "data.path", "network.path", "init.path")
REQUIRED_COLUMNS = ("run_id", "status", "passed")


class ResultsError(ValueError):
    """A results folder or file that cannot be used as it is; the message names the path and the cause."""


class CorruptResults(ResultsError):
    """A result file that is truncated or malformed (the message names the file, and the line in results.csv).
    `ltn run` into the folder sets such a file aside and recomputes what it cannot trust."""


class ResultsLocked(ResultsError):
    """Another process is writing into the results folder (it holds the folder's lock)."""

    def __init__(self, folder: str, holder: str):
        self.folder, self.holder = folder, holder
        super().__init__(f"results folder {folder!r} is in use by another ltn run (pid {holder}); wait for it "
                         f"to finish, or write to another folder")


class RecoveryWarning(UserWarning):
    """A sweep found result files it cannot trust, set them aside, and recomputes the runs they held."""


def varying_columns(rows, exclude=("seed",)) -> list[str]:
    """Config columns whose value differs between rows (what tells the runs of a table apart)."""
    if not rows:
        return []
    columns = [c for c in rows[0] if c not in OUTCOME_COLUMNS and c not in exclude]
    return [c for c in columns if len({repr(row.get(c)) for row in rows}) > 1]


def atomic_write(path: str, write) -> None:
    """`write(stream)` into a temp file beside `path`, then swap it in. The temp file is created with mode 0666
    less the umask, as `open` would (mkstemp's 0600 hid results from the group)."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".tmp-{secrets.token_hex(6)}-{os.path.basename(path)}")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
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


def _parse_cell(column: str, text: str):
    if column in BOOLEAN_COLUMNS:
        if text in ("true", "false"):
            return text == "true"
        if text == "" and BOOLEAN_COLUMNS[column]:
            return None
        raise ValueError(f"column {column!r} holds {text!r}, but it is true or false")
    if column == "verdict":
        if text == "":
            return None
        if text not in VERDICTS:
            raise ValueError(f"column 'verdict' holds {text!r}, but it is one of {', '.join(map(repr, VERDICTS))}")
        return text
    if column in TEXT_COLUMNS:
        return text or None
    return parse_value(text)


def _scan_rows(path: str) -> tuple[list[dict], list[str]]:
    """The rows of results.csv that can be trusted, and a `file:line: cause` for each thing that cannot: no
    header, a last row cut short (rows are written whole, newline included), a row with the wrong number of
    fields, a cell not of its column's type, a run recorded twice, `passed` disagreeing with `verdict`."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            text = stream.read()
    except UnicodeDecodeError as error:
        return [], [f"{path}: not UTF-8 text (byte {error.start})"]
    except OSError as error:
        raise ResultsError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not text:
        return [], [f"{path}: empty (no header)"]
    problems = []
    if not text.endswith("\n"):
        problems.append(f"{path}:{text.count(chr(10)) + 1}: truncated (the last row ends without a newline)")
        text = text[: text.rfind("\n") + 1]
    reader = csv.reader(io.StringIO(text), strict=True)
    rows, first_seen = [], {}
    try:
        header = next(reader, [])
        if not set(REQUIRED_COLUMNS) <= set(header) or len(set(header)) != len(header):
            return [], [f"{path}:1: not a results header (it names the columns {', '.join(REQUIRED_COLUMNS)}, "
                        f"each once)"]
        for cells in reader:
            line = reader.line_num
            if len(cells) != len(header):
                problems.append(f"{path}:{line}: {len(cells)} fields, but the header has {len(header)}")
                continue
            try:
                row = {column: _parse_cell(column, cell) for column, cell in zip(header, cells)}
            except ValueError as error:
                problems.append(f"{path}:{line}: {error}")
                continue
            run = row["run_id"]
            if run is None:
                problems.append(f"{path}:{line}: no run_id")
            elif run in first_seen:
                problems.append(f"{path}:{line}: run {run} is already recorded on line {first_seen[run]}")
            elif row.get("verdict") is not None and row["passed"] != (row["verdict"] == "passed"):
                problems.append(f"{path}:{line}: passed = {str(row['passed']).lower()} contradicts verdict = "
                                f"{row['verdict']!r}")
            else:
                first_seen[run] = line
                rows.append(row)
    except csv.Error as error:
        problems.append(f"{path}:{reader.line_num}: {error}")
    return rows, problems


def _corrupt(problems: list[str]) -> CorruptResults:
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return CorruptResults(f"{problems[0]}{more}; running the sweep into this folder again sets the file aside and "
                          f"recomputes what it cannot trust")


def read_rows(folder: str) -> list[dict]:
    """The rows of `results.csv` with typed values ([] when there is none yet); `CorruptResults` naming the file
    and line of the first thing that cannot be trusted."""
    path = os.path.join(folder, RESULTS)
    if not os.path.exists(path):
        return []
    rows, problems = _scan_rows(path)
    if problems:
        raise _corrupt(problems)
    return rows


# What a damaged archive raises: zipfile and numpy's readers, a damaged deflate stream, a member that is not a
# structured array (no field names to iterate).
_ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, TypeError)


def read_trajectories(folder: str, run_ids=None) -> dict[str, dict[str, np.ndarray]]:
    """`{run_id: {quantity: array}}` from `trajectories.npz` and the per-group archives of a sweep that has not
    finished (those are newer: they win); `CorruptResults` naming an archive that cannot be read."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for path in archive_paths(folder):
        try:
            with np.load(path) as archive:
                for run in archive.files:
                    if run_ids is None or run in run_ids:
                        record = archive[run]
                        out[run] = {name: np.asarray(record[name]) for name in record.dtype.names}
        except _ARCHIVE_ERRORS as error:
            raise _corrupt([f"{path}: not a readable trajectory archive ({error})"]) from None
    return out


def _archive_runs(path: str) -> list[str]:
    """The run ids an archive holds, once every member passed its CRC check; `CorruptResults` otherwise."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            names = archive.namelist()
    except _ARCHIVE_ERRORS as error:
        raise CorruptResults(f"{path}: not a readable trajectory archive ({error})") from None
    if damaged is not None:
        raise CorruptResults(f"{path}: member {damaged!r} is damaged (CRC mismatch)")
    return [name.removesuffix(".npy") for name in names]


def archive_paths(folder: str) -> list[str]:
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


def _lock_folder(folder: str) -> int:
    """Create `folder` if needed and take its lock (held until the returned descriptor is closed): a
    `ResultsError` naming the folder when it cannot be written, `ResultsLocked` when another process holds it."""
    try:
        os.makedirs(folder, exist_ok=True)
        handle = os.open(os.path.join(folder, LOCK), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        cause = "it is a file" if os.path.isfile(folder) else (error.strerror or str(error))
        raise ResultsError(f"cannot write results into {folder!r}: {cause}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(handle)
        raise ResultsLocked(folder, holder) from None
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
    return handle


def _set_aside(path: str) -> str:
    """Move an untrusted file out of the way, to `<path>.corrupt-<time>`; its new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target, n = f"{path}.corrupt-{stamp}", 1
    while os.path.exists(target):
        target, n = f"{path}.corrupt-{stamp}-{n}", n + 1
    os.replace(path, target)
    return target


def _signature(path: str):
    with contextlib.suppress(FileNotFoundError):
        stat = os.stat(path)
        return stat.st_ino, stat.st_size, stat.st_mtime_ns
    return None


class ResultsStore:
    """The results folder of one sweep: locked from open to `close` (a context manager), and loaded on open so
    that finished runs are known (and skipped).

    Opening repairs what it cannot trust. A run counts as finished when its row in results.csv is whole and
    strictly typed and its trajectory is in an intact archive; any other row (a truncated or malformed line, a
    bad cell, a duplicate, a row whose archive is damaged or gone) is dropped, and so recomputed. Every file the
    repair replaces (a damaged archive, the results.csv it rewrote without the dropped rows) is kept beside as
    `<name>.corrupt-<time>`, and a `RecoveryWarning` names them.
    """

    def __init__(self, folder: str):
        self.folder = os.fspath(folder)
        self._lock = _lock_folder(self.folder)
        try:
            self._remove_temporaries()
            self._load()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the folder's lock."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _remove_temporaries(self) -> None:
        """Temp files of a writer that was killed mid-write (safe to remove: no one else writes here now)."""
        for directory in (self.folder, os.path.join(self.folder, PARTS)):
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    if name.startswith(".tmp-"):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(directory, name))

    def _load(self) -> None:
        path = os.path.join(self.folder, RESULTS)
        rows, problems = _scan_rows(path) if os.path.exists(path) else ([], [])
        rows_untrusted = bool(problems)
        stored, aside = set(), []
        for archive in archive_paths(self.folder):
            try:
                stored.update(_archive_runs(archive))
            except CorruptResults as error:
                problems.append(str(error))
                aside.append(_set_aside(archive))
        trusted = [row for row in rows if row["run_id"] in stored]
        if len(trusted) < len(rows):
            problems.append(f"{path}: {len(rows) - len(trusted)} run(s) have no intact trajectory")
            rows_untrusted = True
        self._adopt(trusted)
        if rows_untrusted and os.path.exists(path):
            aside.append(_set_aside(path))
            if trusted:
                self._write_rows([], self._columns(self._keys))
        self._signature = _signature(path)
        if problems:
            # Attributed to the caller of run_sweep (_load <- __init__ <- run_sweep <- caller).
            warnings.warn(RecoveryWarning(
                f"results folder {self.folder!r}: {'; '.join(problems)}. Kept {len(trusted)} finished run(s); "
                f"the rest are recomputed. Set aside: {', '.join(aside) or 'nothing'}"), stacklevel=4)

    def _reread_if_changed(self) -> None:
        """Defensive: results.csv changed since this store last wrote it (a writer that ignored the lock, e.g.
        on a file system without flock): take its rows as they are now, so no run is appended twice."""
        path = os.path.join(self.folder, RESULTS)
        if _signature(path) == self._signature:
            return
        rows, problems = _scan_rows(path) if os.path.exists(path) else ([], [])
        if problems:
            raise _corrupt(problems)
        self._adopt(rows)
        self._signature = _signature(path)

    def _adopt(self, rows: list[dict]) -> None:
        """Take `rows` as the finished runs of the folder."""
        self.rows = rows
        self.done = {row["run_id"] for row in rows}
        self._keys: dict[str, None] = {}  # every key of every row, in first-seen order
        for row in rows:
            self._keys.update(dict.fromkeys(row))

    def append(self, rows: list[dict], trajectories: dict[str, dict[str, np.ndarray]]) -> None:
        """Add one finished group: trajectories first, then the rows (the commit record). A run already on disk
        is never appended again."""
        self._reread_if_changed()
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
        atomic_write(os.path.join(parts_dir, f"{next(iter(new))}.npz"), lambda stream: np.savez(stream, **records))

    def merge_trajectories(self) -> None:
        """Fold the per-group archives into trajectories.npz (one atomic replace), then remove them. Arrays of
        runs without a row (a group interrupted between its two writes) are dropped."""
        archives = archive_paths(self.folder)
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

            atomic_write(os.path.join(self.folder, TRAJECTORIES), write)
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

        atomic_write(path, write)
        self._signature = _signature(path)


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
    atomic_write(path, lambda stream: stream.write(json.dumps(manifest, indent=2, default=str).encode()))
    return manifest


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return None

