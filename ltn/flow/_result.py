"""The result of a flow or descent run: one type for both, a pytree so batches stack along a leading axis."""

from __future__ import annotations

import enum

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..networks import Params
from ._objective import Checkpoint
from ._solvers import LEG_SOLVERS


class Status(enum.IntEnum):
    """How a run ended; each status is a claim with a certificate behind it (docs/theory.md §11). A new status
    takes the next code, so stored codes keep their meaning."""

    CONVERGED = 0  # regression: interpolates and settled (`_certificate`); classification: its target reached
    BUDGET_EXHAUSTED = 1  # max_steps or t_max used up before any other status applied
    NONFINITE = 2  # parameters, loss or vector field overflowed
    SOLVER_FAILED = 3  # the step size underflowed, or the implicit solver failed
    STALLED = 4  # regression: the gradient is exactly zero at a point that is not certified converged


STATUSES = tuple(status.name.lower() for status in Status)  # names by code, for tables and the sweep
CONVERGED, BUDGET_EXHAUSTED, NONFINITE, SOLVER_FAILED, STALLED = Status


# Index of `Stats.solver`: the methods of a flow's leg, then "descent".
SOLVER_NAMES = (*LEG_SOLVERS, "descent")


class Stats(eqx.Module):
    """Work done: solver steps (accepted and rejected, summed over the legs of a run that `solver="auto"`
    continued with another method), the gradient (vector-field) evaluations of the solver's stages (-1 where an
    implicit leg ran: its Newton and GMRES iterations, each a Hessian-vector product, are not reported by
    diffrax's step; recorded checkpoints, certificate tries and the stiffness test are not counted either) and the
    solver of the run's last leg (`solver_name`)."""

    steps: Int[Array, ""]
    accepted_steps: Int[Array, ""]
    rejected_steps: Int[Array, ""]
    grad_evals: Int[Array, ""]
    solver: Int[Array, ""]

    @property
    def solver_name(self):
        return _names(self.solver, SOLVER_NAMES)


class Trajectory(eqx.Module):
    """Checkpoints in the order the path passed them: at geometrically spaced times and, for classification,
    where `-log L` first reached each `10^(k/10)`, k = 0..120 (entries the run did not reach hold `inf` and
    come last), plus `log_time`: `log` of the original gradient-flow time at each checkpoint (for regression,
    `log(time)`)."""

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
        """One of `STATUSES` (an array of them if batched)."""
        return _names(self.status, STATUSES)


def _names(codes, table):
    """Codes -> names: a str for one run, an array of them for a batch."""
    codes = np.asarray(codes)
    names = np.asarray(table, dtype=object)[codes]
    return str(names) if codes.ndim == 0 else names


def final_status(broken, decided, failed) -> Array:
    """The status of a run that ended: `NONFINITE` if it is `broken`, else the status its certificate `decided`
    (`CONVERGED` or `STALLED`; a negative code where none applies), else `SOLVER_FAILED` if the solver `failed`,
    else `BUDGET_EXHAUSTED`."""
    return jnp.where(broken, NONFINITE, jnp.where(decided >= 0, decided, jnp.where(
        failed, SOLVER_FAILED, BUDGET_EXHAUSTED)))
