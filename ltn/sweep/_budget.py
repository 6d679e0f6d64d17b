"""A warning before any compute when an explicit solver's step budget cannot cover a run's predicted saddle
plateau.

Basis (docs/theory.md §7 and §9): under the theorem initialisation of an odeco network of depth `L >= 3` at
scale `α` (with `η̄ = 1`, as configs use), coordinate `j` moves as `ρ_j = c^L h_L(c^{L-2} τ_j)`, `c = α`, where
`τ_j = ∫ [S Xᵀ r]_j dt` and `h_L` blows up at `G_L(∞) = ∫_0^∞ (1 + s²)^{-(L-1)/2} ds`. While the residual is still
`y` (the plateau), `τ_j ≈ t [S Xᵀ y]_j`, so the first coordinate escapes at the time
`T = G_L(∞) α^{-(L-2)} / max_j |[S Xᵀ y]_j|`: the dimensionless plateau length is `G_L(∞) α^{-(L-2)}`.

An explicit solver cannot stride across the plateau: once the first coordinates escape, the others still sit on
it, the flow is stiff there (§9), and each step is held at `~3/|λ_max|`, so its step count grows in proportion
to the plateau. Measured on sparse regression (n = 10, d = 30, diagonal, rtol = 1e-11): the loss halves at 0.7
to 1.3 times `T` (L = 3, 4; α = 0.3 to 0.03), and Tsit5 takes 130 to 390 steps per unit of the dimensionless
length (docs/theory.md §9: 246000 steps at L = 4, α = 0.01, i.e. 25 per unit). So an explicit solver with a
budget of fewer steps than `G_L(∞) α^{-(L-2)}` is short by a factor of 25 or more: the run would end
`budget_exhausted` on its plateau, which is worth saying before any compute. The implicit path is not held so
(`solver = "auto"` crossed a plateau of length 1e6 at L = 4, α = 0.001 in 11506 steps): no warning for it, nor for
descent (whose steps follow the learning rate). The warning applies where the plateau is a theorem: regression,
theorem initialisation, depth >= 3.
"""

from __future__ import annotations

import math
import warnings

from ..flow import EXPLICIT_SOLVERS
from ._config import RunSpec


# The explicit Runge-Kutta pairs of `ltn.flow` (held at their stability bound on a stiff plateau).


class PlateauWarning(UserWarning):
    """A run's step budget is smaller than its predicted saddle plateau: it would stop on the plateau."""


def plateau_length(depth: int, scale: float) -> float:
    """`G_L(∞) α^{-(L-2)}`: the dimensionless length of the saddle plateau of a theorem start (module docstring)."""
    escape = math.sqrt(math.pi) * math.gamma((depth - 2) / 2) / (2 * math.gamma((depth - 1) / 2))
    return escape * scale ** -(depth - 2)


def _short_budget(run: RunSpec) -> float | None:
    """The predicted plateau length when it exceeds the run's `max_steps`, else None."""
    depth = run.network.depth
    if (run.task != "regression" or run.init.kind != "theorem" or depth is None or depth < 3
            or run.solver.solver not in EXPLICIT_SOLVERS):
        return None
    length = plateau_length(depth, run.init.scale)
    return length if length > run.solver.max_steps else None


def warn_short_budgets(runs: list[RunSpec]) -> list[tuple[str, int, float, float, int]]:
    """One `PlateauWarning` per experiment whose runs cannot cross their plateau within `max_steps`; returns the
    `(experiment, depth, scale, plateau length, max_steps)` it warned about."""
    short = {}
    for run in runs:
        length = _short_budget(run)
        if length is not None:
            short[(run.experiment, run.network.depth, run.init.scale)] = (length, run.solver.max_steps)
    by_experiment: dict[str, list] = {}
    for (experiment, depth, scale), (length, budget) in sorted(short.items()):
        by_experiment.setdefault(experiment, []).append((depth, scale, length, budget))
    for experiment, cases in by_experiment.items():
        listed = "; ".join(f"depth {depth}, init.scale {scale:g}: plateau ~{length:.3g} > max_steps {budget}"
                           for depth, scale, length, budget in cases)
        warnings.warn(PlateauWarning(
            f"{experiment}: the step budget cannot cover the predicted saddle plateau (an explicit solver needs "
            f"G_L(inf) * scale^-(L-2) steps at the least, docs/theory.md §9) of {len(cases)} setting(s): {listed}. "
            f"These runs will end budget_exhausted on their plateau; raise flow.max_steps or the initial scale, or "
            f"use solver = \"auto\""), stacklevel=3)
    return [(experiment, depth, scale, length, budget) for experiment, cases in by_experiment.items()
            for depth, scale, length, budget in cases]
