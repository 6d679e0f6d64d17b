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


def _log_softplus(u: Array) -> Array:
    """`log(log(1 + e^u))`, accurate for very negative u (where it is `u - e^u / 2 + ...`)."""
    negative_u = jnp.where(u < 0, u, 0.0)  # where, not minimum: no half-gradient at the tie
    t = jnp.exp(negative_u)
    safe_t = jnp.where(t > 0, t, 1.0)
    # log1p(t)/t -> 1 as t -> 0; the series branch keeps the ratio accurate where t underflows.
    ratio = jnp.where(t > 1e-8, jnp.log1p(safe_t) / safe_t, 1.0 - t / 2)
    negative_branch = negative_u + jnp.log(ratio)
    positive_branch = jnp.log(jax.nn.softplus(jnp.where(u < 0, 0.0, u)))
    return jnp.where(u < 0, negative_branch, positive_branch)


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
