"""Losses, each with a log-domain form that never underflows.

The risk is a sum over samples (docs/theory.md §1). Classification runs work with `log L` (a logsumexp), because
`L` itself underflows long before the direction of the parameters settles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

LOSSES = {"squared": "regression", "exponential": "classification", "logistic": "classification"}


def task_of(loss: str) -> str:
    """`"regression"` or `"classification"` for a loss name; a clear error for an unknown one."""
    try:
        return LOSSES[loss]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}") from None


# Below this u the series branch of `_log_softplus` takes over: there e^u <= e^-3 ~ 0.05, and the series of
# log1p(t)/t to t^12 is exact to ~1e-18 (next term e^-39/14).
_SERIES_BELOW = -3.0
_LOG1P_RATIO_SERIES = tuple((-1.0) ** k / (k + 1) for k in range(12, -1, -1))  # highest power first


def _log_softplus(u: Array) -> Array:
    """`log(log(1 + e^u))`, with value, gradient and curvature accurate and finite at every float64 `u`.

    Three branches, each fed only the inputs it is selected for (the "double where"): `jnp.where` passes a
    zero cotangent to the branch it does not select, and 0 * inf = NaN, so an unselected branch must never
    see an input where it or its derivatives overflow.
    - u >= 0: `log(u + log1p(e^-u))`; the argument of the outer log is `softplus(u) >= log 2`.
    - -3 <= u < 0: `log(log1p(e^u))` directly.
    - u < -3: `u + log(r(e^u))` with `r(t) = log1p(t)/t` as its power series, which stays accurate where `e^u`
      underflows (u -> -inf gives `u`, gradient 1) and keeps the curvature `~ -e^u / 2` free of the cancellation
      that differentiating `log1p(t)` twice would suffer.
    """
    positive = u >= 0
    series = u < _SERIES_BELOW
    u_positive = jnp.where(positive, u, 0.0)
    u_middle = jnp.where(positive | series, -1.0, u)
    u_series = jnp.where(series, u, _SERIES_BELOW - 1.0)
    positive_branch = jnp.log(u_positive + jnp.log1p(jnp.exp(-u_positive)))
    middle_branch = jnp.log(jnp.log1p(jnp.exp(u_middle)))
    series_branch = u_series + jnp.log(jnp.polyval(jnp.asarray(_LOG1P_RATIO_SERIES), jnp.exp(u_series)))
    return jnp.where(positive, positive_branch, jnp.where(series, series_branch, middle_branch))


def per_sample_log_loss(outputs: Float[Array, " n"], y: Float[Array, " n"], loss: str) -> Float[Array, " n"]:
    """`log l(f_i, y_i)` for each sample (classification losses; margins `y_i f_i`)."""
    margins = y * outputs
    if loss == "exponential":
        return -margins
    if loss == "logistic":
        return _log_softplus(-margins)
    raise ValueError(f"per-sample log loss is defined for classification losses, not {loss!r}")


def risk(outputs: Float[Array, " n"], y: Float[Array, " n"], loss: str) -> Float[Array, ""]:
    """`L = sum_i l(f_i, y_i)`."""
    if loss == "squared":
        return 0.5 * jnp.sum((outputs - y) ** 2)
    if loss == "exponential":
        return jnp.sum(jnp.exp(-y * outputs))
    if loss == "logistic":
        return jnp.sum(jax.nn.softplus(-y * outputs))
    task_of(loss)
    raise AssertionError


def log_risk(outputs: Float[Array, " n"], y: Float[Array, " n"], loss: str) -> Float[Array, ""]:
    """`log L`, computed without forming `L` for classification losses (finite at any margin)."""
    if loss == "squared":
        return jnp.log(risk(outputs, y, loss))
    return jax.nn.logsumexp(per_sample_log_loss(outputs, y, loss))
