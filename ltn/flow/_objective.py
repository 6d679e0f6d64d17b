"""What the flow and descent integrate: the objective of a (network, loss) pair and the summaries recorded
along a path. Shared so that a flow and a descent run report exactly the same quantities."""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..losses import log_risk, risk, task_of
from ..networks import Network, Params


def tree_norm(tree) -> Array:
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def tree_dot(a, b) -> Array:
    return sum(jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def tree_nonfinite(tree) -> Array:
    """Whether any entry of any leaf is NaN or infinite."""
    return ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(tree)]))


class Checkpoint(eqx.Module):
    """Summaries of one point of a path.

    `time` is the ODE's own time (real time for regression, the reparametrised time s for classification) or the
    step count for descent; `log_loss` is `log L`; `grad_norm` is `||grad L||` (regression) or `||grad log L||`
    (classification); `margin` is the normalised margin `min_i y_i f(x_i) / ||theta||^L` (NaN for regression).
    `log_loss_rate` is `d log L / d time`, which `log_time` reconstruction needs for classification flows.
    """

    time: Float[Array, ""]
    log_loss: Float[Array, ""]
    log_loss_rate: Float[Array, ""]
    param_norm: Float[Array, ""]
    param_norm_rate: Float[Array, ""]
    beta_norm: Float[Array, ""]
    margin: Float[Array, ""]
    grad_norm: Float[Array, ""]
    direction: Float[Array, " d"]


@dataclasses.dataclass(frozen=True)
class Objective:
    """`value(params)` is `L` for regression and `log L` for classification (the quantity whose gradient the
    path follows, up to a positive time rescaling)."""

    net: Network
    loss: str

    @property
    def task(self) -> str:
        return task_of(self.loss)

    def value(self, params: Params, X, y) -> Array:
        outputs = self.net.apply(params, X)
        return risk(outputs, y, self.loss) if self.task == "regression" else log_risk(outputs, y, self.loss)

    def value_and_grad(self, params: Params, X, y):
        return jax.value_and_grad(self.value)(params, X, y)

    def velocity_scale(self, params: Params, value, reparametrize: bool):
        """Positive factor on `-grad value` along the path: 1 for regression, `||theta||^(2-L)` on the rescaled
        classification path, `L = exp(log L)` in plain time."""
        if self.task == "regression":
            return 1.0
        if reparametrize:
            return tree_norm(params) ** (2 - self.net.depth)
        return jnp.exp(value)

    def velocity(self, params: Params, X, y, reparametrize: bool) -> Params:
        """The vector field of the path, `-velocity_scale * grad value`."""
        value, grad = self.value_and_grad(params, X, y)
        scale = self.velocity_scale(params, value, reparametrize)
        return jax.tree_util.tree_map(lambda g: -scale * g, grad)

    def log_loss(self, params: Params, X, y) -> Array:
        return log_risk(self.net.apply(params, X), y, self.loss)

    def checkpoint(self, time, params: Params, X, y, velocity_scale=1.0, value_and_grad=None) -> Checkpoint:
        """Summaries at `params`, for a path `d theta / d time = -velocity_scale * grad value(theta)`
        (`value_and_grad` at `params`, when the caller has it already)."""
        value, grad = self.value_and_grad(params, X, y) if value_and_grad is None else value_and_grad
        grad_sq = tree_dot(grad, grad)
        beta = self.net.beta(params)
        beta_norm = jnp.linalg.norm(beta)
        param_norm = tree_norm(params)
        if self.task == "regression":
            log_loss = jnp.log(value)
            log_loss_rate = -velocity_scale * grad_sq / jnp.where(value > 0, value, 1.0)
            margin = jnp.nan
        else:
            log_loss = value
            log_loss_rate = -velocity_scale * grad_sq
            outputs = self.net.apply(params, X)
            margin = jnp.min(y * outputs) / param_norm**self.net.depth
        param_norm_rate = -velocity_scale * tree_dot(params, grad) / param_norm
        return Checkpoint(
            time=jnp.asarray(time, dtype=beta.dtype),
            log_loss=log_loss,
            log_loss_rate=log_loss_rate,
            param_norm=param_norm,
            param_norm_rate=param_norm_rate,
            beta_norm=beta_norm,
            margin=jnp.asarray(margin, dtype=beta.dtype),
            grad_norm=jnp.sqrt(grad_sq),
            direction=beta / jnp.where(beta_norm > 0, beta_norm, 1.0),
        )
