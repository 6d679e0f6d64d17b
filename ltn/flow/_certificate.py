"""When a regression run may be called `converged` or `stalled`: one decision, shared by both paths of the flow
(lockstep and per-run stepping) and by descent, so that a status means the same wherever it was reached
(docs/theory.md §11).

`converged` needs two tests at the end point: the data are interpolated,
`||X beta - y|| <= residual_tol || |X| |beta| + |y| ||`, and the Gauss-Newton estimate of the change of beta still
to come is small, `||dbeta[J^+ r]|| <= xtol ||beta||`.
Neither fires on a saddle plateau, whose residual is large and whose Jacobian is small (a small `J` makes `J^+ r`
large); a small gradient does fire there, so the gradient alone never makes a run converged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular

from ..networks import Network
from ._batching import any_run
from ._objective import tree_norm
from ._result import CONVERGED, STALLED

UNDECIDED = -1  # neither status applies (yet): the run goes on
# Defaults shared by flow and descent. RESIDUAL_TOL: ordinary runs reach 1e-12 to 1e-14 relative residual
# within a few percent more steps than 1e-9 takes; see docs/theory.md §11.
GTOL, XTOL, RESIDUAL_TOL = 1e-10, 1e-10, 1e-9


def tries_every(n: int) -> int:
    """How many steps apart the certificate is tried when nothing hints that it may hold: its distance test costs
    n backward passes and a QR, a few steps' work."""
    return max(16, 8 * n)


def gradient_small(params, gradient, gtol, data_scale, depth: int) -> jax.Array:
    """The scale-free gradient test `||grad L|| <= gtol ||X||_2 ||y|| ||theta||^(L-1)` (`data_scale`:
    `||X||_2 ||y||`). Free wherever the gradient is at hand, so it says when the certificate is worth trying at
    once; it holds on saddle plateaus too, so it never decides a status."""
    return tree_norm(gradient) <= gtol * data_scale * jnp.maximum(tree_norm(params), 1e-300) ** (depth - 1)


def output_jacobian(net: Network, params, X):
    """`f(X)` and `J = d f(X) / d theta` as an (n, p) matrix (p: the flattened parameters). Rows one backward pass
    at a time (lax.map, not jacrev's vmap): a second batch axis on top of a batch of runs hits an XLA CPU layout
    bug in FFTs (Convolutional nets: RET_CHECK in fft_thunk.cc)."""
    flat, unravel = ravel_pytree(params)
    outputs, pullback = jax.vjp(lambda v: net.apply(unravel(v), X), flat)
    return outputs, jax.lax.map(lambda e: pullback(e)[0], jnp.eye(X.shape[0], dtype=flat.dtype))


def interpolates(net: Network, params, X, y, residual_tol) -> jax.Array:
    """`||X beta - y|| <= residual_tol || |X| |beta| + |y| ||`. Relative to the terms that cancel, not to `||y||`
    alone: an error of relative size eps in beta (integration, rounding) leaves a residual of about
    `eps || |X| |beta| ||` however close to the limit the run is, and a lazy run has a large beta in the null
    space of X (measured: Gaussian init at scale 100, depth 3, 1.9e-11 from the limit with
    `||X beta - y|| = 7e-6 ||y||`)."""
    beta = net.beta(params)
    scale = jnp.linalg.norm(jnp.abs(X) @ jnp.abs(beta) + jnp.abs(y))
    return jnp.linalg.norm(X @ beta - y) <= residual_tol * scale


def settled(net: Network, params, X, y, xtol) -> jax.Array:
    """`||dbeta[J^+ r]|| <= xtol ||beta||` (J: Jacobian of the outputs, r: residuals): near the limit the flow's
    remaining displacement is `-J^+ r` to first order. Unlike `||grad L||` it ignores the step noise of an
    explicit solver held at its stability bound by a stiff run: that noise lies in directions of large curvature,
    where `J^+` divides it down while the gradient multiplies it up. Measured in beta, not theta, because at large
    scales a small relative move of theta is a large one of beta. Costs n backward passes and a QR."""
    flat, unravel = ravel_pytree(params)
    outputs, J = output_jacobian(net, params, X)
    # Minimum-norm solution of J step = r from a QR factorisation of J^T (backward stable in J; 4x cheaper than
    # lstsq's SVD). Near-singular R (a plateau, or the zero init) makes the step huge, and a non-finite one
    # compares False: both keep the run going, never certify it.
    q, R = jnp.linalg.qr(J.T)
    step = q @ solve_triangular(R, outputs - y, trans="T")
    beta, change = jax.jvp(lambda v: net.beta(unravel(v)), (flat,), (step,))
    return jnp.linalg.norm(change) <= xtol * jnp.linalg.norm(beta)


def regression_verdict(net: Network, params, gradient, X, y, residual_tol, xtol, *, try_settled=True,
                       axis_name: str | None = None) -> jax.Array:
    """`CONVERGED` if `params` interpolate and have settled, else `STALLED` if `gradient` (any pytree: the
    gradient or the vector field) is exactly zero, a fixed point of the flow as computed, else `UNDECIDED`.

    The costly `settled` test runs only for a run that interpolates and where `try_settled` holds; under
    `jax.vmap(..., axis_name=axis_name)` it runs once for the whole batch when any run needs it (a batched
    `lax.cond` would run it every time, for every run)."""
    interpolating = interpolates(net, params, X, y, residual_tol)
    needed = any_run(interpolating & try_settled, axis_name)
    certified = interpolating & jax.lax.cond(needed, lambda p: settled(net, p, X, y, xtol),
                                             lambda p: jnp.asarray(False), params)
    stationary = jnp.all(jnp.stack([jnp.all(leaf == 0) for leaf in jax.tree_util.tree_leaves(gradient)]))
    return jnp.where(certified, CONVERGED, jnp.where(stationary, STALLED, UNDECIDED))
