"""The options of a flow or descent run: one typed pytree for both entry points.

Static fields (the solver, the number of checkpoints, descent's step scaling and optimiser) are part of the
pytree structure, so a change compiles a new program; every tolerance, budget and target is a leaf, a run-time
value, so changing it reuses the compiled program (descent, whose checkpoint grid is laid out over its step
budget, compiles per `max_steps`). Optional values are stored in a form a compiled program can test:
`t_max` NaN for the default budget, `target_log_loss = -inf` / `target_norm = inf` when not set,
`learning_rate` NaN for a custom optimiser.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx

from ._certificate import GTOL, RESIDUAL_TOL, XTOL
from ._solvers import FLOW_SOLVERS

STEP_SCALINGS = ("none", "loss")
# Options only one entry point takes (the other refuses them by name).
FLOW_ONLY = ("solver", "rtol", "atol", "t_max", "reparametrize")
DESCENT_ONLY = ("learning_rate", "optimizer", "step_scaling")


def _or(value, default: float) -> float:
    return default if value is None else float(value)


def _given(value):
    """None for an optional value left unset (None, or the NaN that stands for it once stored)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


class FlowOptions(eqx.Module):
    """Options of `gradient_flow` and `gradient_descent` (docs/theory.md §9-§11).

    Static: `solver` (one of `SOLVERS`, or "descent"), `checkpoints` (number of recorded summaries),
    `reparametrize` (classification: integrate the rescaled path), `step_scaling` and `optimizer` (descent).
    Dynamic: `max_steps` (step budget), `rtol`, `atol` (step-size controller), `gtol`, `xtol`, `residual_tol`
    (the regression certificate), `t_max` (time budget), `target_log_loss`, `target_norm` (classification
    stops), `learning_rate` (descent).
    """

    solver: str = eqx.field(static=True, default="auto")
    checkpoints: int = eqx.field(static=True, default=128)
    reparametrize: bool = eqx.field(static=True, default=True)
    step_scaling: str = eqx.field(static=True, default="none")
    optimizer: Any = eqx.field(static=True, default=None)
    max_steps: int = 100_000
    rtol: float = 1e-11
    atol: float = 1e-13
    gtol: float = GTOL
    xtol: float = XTOL
    residual_tol: float = RESIDUAL_TOL
    t_max: float = math.nan
    target_log_loss: float = -math.inf
    target_norm: float = math.inf
    learning_rate: float = math.nan

    def __init__(self, *, solver: str = "auto", max_steps: int = 100_000, checkpoints: int = 128,
                 reparametrize: bool = True, step_scaling: str = "none", optimizer=None, rtol: float = 1e-11,
                 atol: float = 1e-13, gtol: float = GTOL, xtol: float = XTOL, residual_tol: float = RESIDUAL_TOL,
                 t_max: float | None = None, target_log_loss: float | None = None, target_norm: float | None = None,
                 learning_rate: float | None = None):
        if solver not in (*FLOW_SOLVERS, "descent"):
            raise ValueError(f"solver must be one of {FLOW_SOLVERS} (or 'descent'), got {solver!r}")
        if step_scaling not in STEP_SCALINGS:
            raise ValueError(f"step_scaling must be one of {STEP_SCALINGS}, got {step_scaling!r}")
        for name, value in (("rtol", rtol), ("atol", atol), ("gtol", gtol), ("xtol", xtol),
                            ("residual_tol", residual_tol)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not (isinstance(max_steps, int) and max_steps >= 1):
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        if not (isinstance(checkpoints, int) and checkpoints >= 2):
            raise ValueError(f"checkpoints must be an integer >= 2, got {checkpoints!r}")
        t_max, learning_rate = _given(t_max), _given(learning_rate)
        for name, value in (("t_max", t_max), ("target_norm", target_norm), ("learning_rate", learning_rate)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.solver, self.max_steps, self.checkpoints = solver, max_steps, checkpoints
        self.reparametrize, self.step_scaling, self.optimizer = bool(reparametrize), step_scaling, optimizer
        self.rtol, self.atol, self.gtol, self.xtol = float(rtol), float(atol), float(gtol), float(xtol)
        self.residual_tol = float(residual_tol)
        self.t_max = _or(t_max, math.nan)
        self.target_log_loss = _or(target_log_loss, -math.inf)
        self.target_norm = _or(target_norm, math.inf)
        self.learning_rate = _or(learning_rate, math.nan)

    @property
    def has_target(self) -> bool:
        return self.target_log_loss > -math.inf or self.target_norm < math.inf

    def with_default_target(self, task: str) -> "FlowOptions":
        """Classification without a target stops at `log L = -100`."""
        if task == "classification" and not self.has_target:
            return eqx.tree_at(lambda o: o.target_log_loss, self, -100.0)
        return self


def flow_options(options: dict) -> FlowOptions:
    """`FlowOptions` for `gradient_flow`, refusing descent-only names."""
    misplaced = sorted(set(options) & set(DESCENT_ONLY))
    if misplaced:
        raise TypeError(f"{misplaced} are options of gradient_descent, not of gradient_flow")
    if options.get("solver") == "descent":
        raise ValueError("solver='descent' is ltn.gradient_descent; gradient_flow takes one of " + str(FLOW_SOLVERS))
    return FlowOptions(**options)


def descent_options(options: dict) -> FlowOptions:
    """`FlowOptions` for `gradient_descent`, refusing ODE-solver-only names."""
    misplaced = sorted(set(options) & set(FLOW_ONLY))
    if misplaced:
        raise TypeError(f"{misplaced} are options of gradient_flow, not of gradient_descent")
    return FlowOptions(solver="descent", **options)
