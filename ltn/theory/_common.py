"""Argument checks and odeco coordinates shared by the predictions and the certificates."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..networks import Network


def check_network(net) -> Network:
    if not isinstance(net, Network):
        raise TypeError(f"net must be an ltn network (e.g. ltn.Diagonal), got {type(net).__name__}")
    return net


def check_data(net: Network, X, y, task: str) -> tuple[np.ndarray, np.ndarray]:
    """X (n, d) and y (n,) as float64 NumPy arrays, with the checks the task needs."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != net.d:
        raise ValueError(f"X must have shape (n, {net.d}) for this network (d={net.d}), got {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X {X.shape}, got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite (found NaN or inf)")
    if task == "regression":
        # The regression limits are interpolants (docs/theory.md §5-6): with n > d, or X of rank < n, there is
        # in general none, and the dual solves would return a point the flow never reaches.
        rank = np.linalg.matrix_rank(X)
        if rank < X.shape[0]:
            raise ValueError(f"X: regression predictions need an underdetermined problem with full row rank "
                             f"(interpolants exist), got n = {X.shape[0]}, d = {X.shape[1]}, rank {rank}")
    if task == "classification" and not np.all(np.isin(y, (-1.0, 1.0))):
        raise ValueError("y: classification labels must be -1 or +1 (for loss 'exponential' or 'logistic'); "
                         f"found values such as {y[~np.isin(y, (-1.0, 1.0))][:3]}")
    return X, y


def odeco_or_raise(net: Network, purpose: str) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    decomposition = net.odeco
    if decomposition is None:
        raise ValueError(f"net: {purpose} needs an orthogonally decomposable network, and {net!r} is not "
                         "(its odeco is None); use singular_vector_residual for the general case")
    return decomposition


# Compiled (one dispatch instead of one per layer: eager, these were ~1 ms of every sweep's theory check).
@jax.jit
def layer_coordinates(Us: Sequence[np.ndarray], params) -> Array:
    """`eta_l = U_l^T v_l` for every layer, stacked to shape (L, m) (complex when the U_l are)."""
    return jnp.stack([jnp.asarray(U).T @ jnp.ravel(v) for U, v in zip(Us, params)])


@jax.jit
def transformed_inputs(S: np.ndarray, X) -> Array:
    """`Z = X S^T`: row i is `z_i = S x_i`, the input of the equivalent diagonal network."""
    return jnp.asarray(X) @ jnp.asarray(S).T


def rho_from_point(net: Network, point, purpose: str) -> np.ndarray:
    """`rho = eta_1 * ... * eta_L` from parameters (a tuple, one array per layer) or from an end-to-end beta
    (an array of shape (d,); needs a square invertible S, since beta = Re(S^T rho) loses nothing only then)."""
    S, Us = odeco_or_raise(net, purpose)
    if isinstance(point, (tuple, list)):
        params = net.check_params(point)
        return np.prod(np.asarray(layer_coordinates(Us, params)), axis=0)
    beta = np.asarray(point)
    if beta.shape != (net.d,):
        raise ValueError(f"point must be parameters (a tuple of {net.depth} arrays) or a beta of shape "
                         f"({net.d},), got an array of shape {beta.shape}")
    if S.shape[0] != S.shape[1]:
        raise ValueError(f"point: a beta determines rho only when S is square (here S has shape {S.shape}); "
                         "pass the parameters instead")
    rho = np.linalg.solve(S.T, beta.astype(S.dtype))
    return rho


def unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("cannot normalise a zero or non-finite vector")
    return vector / norm
