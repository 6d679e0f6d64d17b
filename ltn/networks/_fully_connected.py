"""Fully-connected linear networks: `f(x) = x^T W_1 ... W_L`, scalar output."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ._base import HashableByContent, Network, Params, positive_int


@dataclasses.dataclass(frozen=True, eq=False)
class FullyConnected(HashableByContent, Network):
    """Widths `d_0 = d, d_1, ..., d_{L-1}, d_L = 1`; layer l is the matrix `W_l` of shape `(d_{l-1}, d_l)`.

    `widths` lists the hidden widths `d_1..d_{L-1}`, so the depth is `len(widths) + 1` (depth 1 is the linear
    model). The data tensor axis of layer l indexes `vec(W_l)` in row-major order.
    """

    d_in: int
    widths: tuple[int, ...]
    kind = "fully_connected"

    def __init__(self, d: int, widths=()):
        if isinstance(widths, (int,)) or not hasattr(widths, "__iter__"):
            raise TypeError(f"widths must be a sequence of hidden widths d_1..d_(L-1), got {widths!r}")
        object.__setattr__(self, "d_in", positive_int(d, "d"))
        object.__setattr__(self, "widths", tuple(positive_int(w, f"widths[{i}]") for i, w in enumerate(widths)))

    def __repr__(self) -> str:
        return f"FullyConnected(d={self.d}, widths={self.widths})"

    @property
    def d(self) -> int:
        return self.d_in

    @property
    def depth(self) -> int:
        return len(self.widths) + 1

    @property
    def dims(self) -> tuple[int, ...]:
        """`(d_0, d_1, ..., d_L)` with `d_0 = d` and `d_L = 1`."""
        return (self.d, *self.widths, 1)

    @property
    def layer_shapes(self):
        dims = self.dims
        return tuple((dims[l], dims[l + 1]) for l in range(self.depth))

    def _beta(self, params: Params):
        # Right to left: only matrix-vector products.
        beta = params[-1][:, 0]
        for W in reversed(params[:-1]):
            beta = W @ beta
        return beta

    def data_tensor(self, x):
        # M(x)[(a_1,b_1), ..., (a_L,b_L)] = x[a_1] * prod_l [b_l == a_(l+1)], b_L = 0.
        tensor = jnp.asarray(x)
        for width in self.widths:
            tensor = jnp.multiply.outer(tensor, jnp.eye(width, dtype=tensor.dtype))
        tensor = tensor[..., None]
        return tensor.reshape(self.layer_sizes)
