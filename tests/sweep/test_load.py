"""Results as data: `load` (one typed row per run), `load_trajectories` (long form), and parquet."""

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from ltn.flow import STATUSES
from ltn.sweep import (VERDICTS, CorruptResults, ResultsError, expand, load, load_config, load_trajectories,
                       read_rows, read_trajectories, run_id, run_sweep, to_parquet)
from ltn.sweep._load import frame


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    from tests.sweep.conftest import TINY

    folder = tmp_path_factory.mktemp("load")
    (folder / "tiny.toml").write_text(TINY)
    sweep = load_config(folder / "tiny.toml")
    run_sweep(sweep, str(folder / "out"), progress=False)
    return sweep, folder / "out"


def test_load_gives_one_typed_row_per_run(tiny_results):
    sweep, out = tiny_results
    table = load(out)
    assert sorted(table["run_id"]) == sorted(run_id(run) for run in expand(sweep))
    dtypes = table.dtypes
    assert all(dtypes[c] == np.float64 for c in ("init.scale", "relative_error", "final_log_loss", "wall_time"))
    assert all(dtypes[c] == np.int64 for c in ("seed", "network.depth", "steps", "flow.checkpoints", "rate_points"))
    assert all(dtypes[c] == np.float64 for c in ("test_error", "teacher_error", "margin_ratio", "rate_exponent",
                                                 "rate_exponent_theory", "pass_at_log_loss"))
    assert dtypes["passed"] == bool and dtypes["check.enabled"] == bool
    assert list(dtypes["status"].categories) == list(STATUSES) and list(dtypes["verdict"].categories) == list(VERDICTS)
    assert pd.api.types.is_string_dtype(dtypes["run_id"]) and pd.api.types.is_string_dtype(dtypes["experiment"])
    assert dtypes["data.sparsity"] == "Int64"  # an integer column with a gap (the classification data has none)
    assert dtypes["flow.t_max"] == np.float64 and table["flow.t_max"].isna().all()  # empty, still a number
    # Every cell is the strict reader's value.
    for row, (_, record) in zip(read_rows(str(out)), table.iterrows()):
        for column, value in row.items():
            missing = value is None or (isinstance(value, float) and np.isnan(value))
            assert (pd.isna(record[column]) if missing else record[column] == value), (column, value)
    print(table.head())


def test_lists_stay_lists_and_unknown_columns_get_a_type_from_their_values():
    rows = [{"network.widths": [3, 2], "network.filter_sizes": None, "status": "converged", "extra": 1},
            {"network.widths": None, "network.filter_sizes": [2], "status": "stalled", "extra": 2.5}]
    table = frame(rows)
    assert table["network.widths"].tolist() == [[3, 2], None] and table["network.filter_sizes"][1] == [2]
    assert table["extra"].dtype == np.float64 and list(table["status"]) == ["converged", "stalled"]


def test_trajectories_in_long_form_join_the_runs(tiny_results):
    _, out = tiny_results
    records = read_trajectories(str(out))
    long = load_trajectories(out)
    reached = {run: int(np.isfinite(record["time"]).sum()) for run, record in records.items()}
    assert len(long) == sum(reached.values()) and long.groupby("run_id").size().to_dict() == reached
    assert list(long.columns[:3]) == ["run_id", "checkpoint", "time"] and long["checkpoint"].dtype == np.int64
    run = next(iter(records))
    np.testing.assert_array_equal(long[long["run_id"] == run]["log_loss"], records[run]["log_loss"][:reached[run]])
    joined = long.merge(load(out)[["run_id", "init.scale", "verdict"]], on="run_id", validate="many_to_one")
    assert len(joined) == len(long) and joined["init.scale"].notna().all()
    assert set(load_trajectories(out, run_ids=[run])["run_id"]) == {run}


def test_parquet_round_trip_and_stale_files_refused(tiny_results, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_results[1], out)
    with pytest.raises(ResultsError, match="no such file; write it with ltn.sweep.to_parquet"):
        load(out, format="parquet")
    to_parquet(out)
    pd.testing.assert_frame_equal(load(out, format="parquet"), load(out))
    pd.testing.assert_frame_equal(load_trajectories(out, format="parquet"), load_trajectories(out))
    later = os.path.getmtime(out / "results.parquet") + 10
    os.utime(out / "results.csv", (later, later))  # the CSV changed after the parquet was written
    with pytest.raises(ResultsError, match="results.parquet is older than .*results.csv"):
        load(out, format="parquet")


def test_load_reads_strictly(tiny_results, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(tiny_results[1], out)
    text = (out / "results.csv").read_text().splitlines(keepends=True)
    text[2] = text[2].replace(",true,", ",TRUE,").replace(",false,", ",FALSE,")
    (out / "results.csv").write_text("".join(text))
    with pytest.raises(CorruptResults, match=r"results.csv:3: column .* holds '(TRUE|FALSE)'"):
        load(out)
    with pytest.raises(ResultsError, match="is not a results folder"):
        load(tmp_path)
    with pytest.raises(ValueError, match="format must be one of"):
        load(out, format="xlsx")
