"""Config-driven sweeps: TOML config -> validated spec -> grid -> grouped jit(vmap) solves -> results folder.

`load_config` validates a file (every problem at once, before any compute); `run_sweep` runs it, one compiled
and vmapped solve per group of runs sharing static structure, and writes `results.csv`, `trajectories.npz`
and `manifest.json`, resuming where an interrupted sweep stopped. `load` and `load_trajectories` read a results
folder as pandas DataFrames (`to_parquet` also writes it as parquet). docs/config.md is the config reference.
"""

from ._config import (
    CheckSpec as CheckSpec,
    ConfigError as ConfigError,
    DataSpec as DataSpec,
    ExecutorSpec as ExecutorSpec,
    ExperimentSpec as ExperimentSpec,
    FigureSpec as FigureSpec,
    InitSpec as InitSpec,
    NetworkSpec as NetworkSpec,
    ReportSpec as ReportSpec,
    RunSpec as RunSpec,
    SolverSpec as SolverSpec,
    SweepSpec as SweepSpec,
    file_stem as file_stem,
    load_config as load_config,
    loads_config as loads_config,
    parse_config as parse_config,
)
from ._grid import expand as expand, group_runs as group_runs, run_id as run_id, validate as validate
from ._results import (
    CorruptResults as CorruptResults,
    RecoveryWarning as RecoveryWarning,
    ResultsError as ResultsError,
    ResultsLocked as ResultsLocked,
    read_rows as read_rows,
    read_trajectories as read_trajectories,
    varying_columns as varying_columns,
)
from ._load import load as load, load_trajectories as load_trajectories, to_parquet as to_parquet
from ._budget import PlateauWarning as PlateauWarning
from ._executors import (ExecutorError as ExecutorError, LocalExecutor as LocalExecutor, RayExecutor as RayExecutor,
                         SlurmExecutor as SlurmExecutor)
from ._runner import SweepOutcome as SweepOutcome, run_sweep as run_sweep
from ._theory import (CONSISTENT as CONSISTENT, FAILED as FAILED, NOT_JUDGED as NOT_JUDGED, PASSED as PASSED,
                      VERDICTS as VERDICTS)
