"""The result of a flow or descent run: one type for both, a pytree so batches stack along a leading axis."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..networks import Params
from ._objective import Checkpoint

STATUSES = ("converged", "budget_exhausted", "nonfinite", "solver_failed")
CONVERGED, BUDGET_EXHAUSTED, NONFINITE, SOLVER_FAILED = range(len(STATUSES))


# Index of `Stats.solver`: the ODE solvers, then "descent".
SOLVER_NAMES = ("tsit5", "dopri5", "dopri8", "kvaerno5", "kvaerno3", "descent")


class Stats(eqx.Module):
    """Work done: solver steps (accepted and rejected), the solver's evaluations of the gradient (vector field;
    -1 where an implicit solver's Newton iterations are not counted; each recorded checkpoint costs one more,
    not counted) and which solver ran (`solver_name`)."""

    steps: Int[Array, ""]
    accepted_steps: Int[Array, ""]
    rejected_steps: Int[Array, ""]
    grad_evals: Int[Array, ""]
    solver: Int[Array, ""]

    @property
    def solver_name(self):
        return _names(self.solver, SOLVER_NAMES)


class Trajectory(eqx.Module):
    """Checkpoints at geometrically spaced times (entries after the run stopped hold `inf`), plus `log_time`:
    `log` of the original gradient-flow time at each checkpoint (for regression, `log(time)`)."""

    checkpoints: Checkpoint
    log_time: Float[Array, " k"]

    @property
    def reached(self) -> np.ndarray:
        """Mask of the checkpoints the run reached."""
        return np.isfinite(np.asarray(self.checkpoints.time))


class FlowResult(eqx.Module):
    """Final parameters and `beta`, a status code (see `status_name`), work statistics, the final summaries
    and the trajectory. Batched runs carry a leading batch axis on every leaf."""

    params: Params
    beta: Float[Array, " d"]
    status: Int[Array, ""]
    stats: Stats
    final: Checkpoint
    final_log_time: Float[Array, ""]
    trajectory: Trajectory

    @property
    def status_name(self):
        """`"converged"`, `"budget_exhausted"`, `"nonfinite"` or `"solver_failed"` (an array of them if batched)."""
        return _names(self.status, STATUSES)


def _names(codes, table):
    """Codes -> names: a str for one run, an array of them for a batch."""
    codes = np.asarray(codes)
    names = np.asarray(table, dtype=object)[codes]
    return str(names) if codes.ndim == 0 else names


def nonfinite(tree_leaves) -> Array:
    return ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in tree_leaves]))
