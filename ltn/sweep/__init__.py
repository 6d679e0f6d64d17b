"""Config-driven sweeps: TOML config -> validated spec -> grid -> grouped jit(vmap) solves -> results folder.

`load_config` validates a file (every problem at once, before any compute); `run_sweep` runs it, one compiled
and vmapped solve per group of runs sharing static structure, and writes `results.csv`, `trajectories.npz`
and `manifest.json`, resuming where an interrupted sweep stopped.
"""

from ._config import (
    CheckSpec as CheckSpec,
    ConfigError as ConfigError,
    DataSpec as DataSpec,
    ExperimentSpec as ExperimentSpec,
    InitSpec as InitSpec,
    NetworkSpec as NetworkSpec,
    RunSpec as RunSpec,
    SolverSpec as SolverSpec,
    SweepSpec as SweepSpec,
    load_config as load_config,
    loads_config as loads_config,
)
from ._grid import expand as expand, group_runs as group_runs, run_id as run_id, validate as validate
from ._results import (
    CorruptResults as CorruptResults,
    RecoveryWarning as RecoveryWarning,
    ResultsError as ResultsError,
    ResultsLocked as ResultsLocked,
    read_rows as read_rows,
    read_trajectories as read_trajectories,
)
from ._runner import SweepOutcome as SweepOutcome, run_sweep as run_sweep
from ._theory import (FAILED as FAILED, NOT_JUDGED as NOT_JUDGED, PASSED as PASSED,
                      VERDICTS as VERDICTS)
