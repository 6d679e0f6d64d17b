"""The stiffness test of `solver="auto"`: is an explicit run's step held at its stability bound?

An explicit pair is stable while `h |lambda| <~ 3` for every eigenvalue `lambda` of the Jacobian of the vector
field (the Hessian of the loss, rescaled on the classification path); an accuracy-limited step at ltn's
tolerances sits far below that. So where the step the controller holds, times the largest `|lambda|` at the same
point, is of order one, the step is set by stability and not by the path: the flow is stiff there, and an
L-stable implicit method takes steps set by accuracy alone. `|lambda_max|` comes from a few power iterations of
Jacobian-vector products (Hessian-vector products): no matrix is formed. Measurements: docs/theory.md §9.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._cache import cached_program
from ..networks import Network
from ._batching import over_runs
from ._objective import Objective

EXPLICIT_PROBE_STEPS = 2000  # "auto" runs Tsit5 this many steps before it tests the run for stiffness
STIFF_PRODUCT = 1.0  # h |lambda_max| at or above this: the step is held by stability
# A classification run at most this many explicit steps from its target (at its present pace, held by stability or
# not) stays explicit for one more round of that length, untested: on a small network that many Tsit5 steps take a
# fraction of a second, less than compiling the implicit program (docs/theory.md §9).
SPARING_STEPS = 10_000
POWER_ITERATIONS = 20


def implicit_for_auto(task: str) -> str:
    """The implicit method `auto` continues a stiff run with: the variable-order BDF for classification (far out in
    `-log L`, its predictor from the history spares it the stage solves that fail Kvaerno5's steps), Kvaerno5 for
    regression (fewer steps to the certificate). Measurements: docs/theory.md §9."""
    return "bdf" if task == "classification" else "kvaerno5"


def largest_curvature(field, y):
    """`|lambda_max|` of the Jacobian of `field` at `y` (flat), by power iteration on Jacobian-vector products
    from a fixed start (a lower bound, tight to a few percent after 20 iterations on a spread spectrum)."""
    v = jax.random.normal(jax.random.PRNGKey(0), y.shape, y.dtype)

    def iterate(_, v):
        w = jax.jvp(field, (y,), (v / jnp.linalg.norm(v),))[1]
        return jnp.where(jnp.all(jnp.isfinite(w)) & (jnp.linalg.norm(w) > 0), w, v)

    v = jax.lax.fori_loop(0, POWER_ITERATIONS, iterate, v)
    return jnp.linalg.norm(jax.jvp(field, (y,), (v / jnp.linalg.norm(v),))[1])


@functools.lru_cache(maxsize=64)
def step_times_curvature(net: Network, loss: str, reparametrize: bool):
    """Compiled `recent_step * |lambda_max(params)|` over a batch; at or above STIFF_PRODUCT a run's step is held
    by stability."""
    objective = Objective(net, loss)

    def product(params, recent_step, X, y, axis_name):
        del axis_name  # each run's test is its own
        flat, unravel = ravel_pytree(params)
        field = lambda v: ravel_pytree(objective.velocity(unravel(v), X, y, reparametrize))[0]  # noqa: E731
        return recent_step * largest_curvature(field, flat)

    return cached_program(over_runs(product, (0, 0, None, None)), "flow.stiffness", net, loss, reparametrize,
                          brief=True)
