"""Diagonal networks: `beta = v_1 * ... * v_L` (entrywise)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ._base import HashableByContent, Network, Params, positive_int


@dataclasses.dataclass(frozen=True, eq=False)
class Diagonal(HashableByContent, Network):
    """Depth-L diagonal network on R^d: `M(x) = sum_j x_j e_j x ... x e_j`; odeco with `S = I`, `U_l = I`."""

    d_in: int
    num_layers: int
    kind = "diagonal"

    def __init__(self, d: int, depth: int):
        object.__setattr__(self, "d_in", positive_int(d, "d"))
        object.__setattr__(self, "num_layers", positive_int(depth, "depth"))

    def __repr__(self) -> str:
        return f"Diagonal(d={self.d}, depth={self.depth})"

    @property
    def d(self) -> int:
        return self.d_in

    @property
    def depth(self) -> int:
        return self.num_layers

    @property
    def layer_shapes(self):
        return ((self.d,),) * self.depth

    @property
    def odeco(self):
        eye = np.eye(self.d)
        return eye, (eye,) * self.depth

    def _beta(self, params: Params):
        beta = params[0]
        for v in params[1:]:
            beta = beta * v
        return beta

    def data_tensor(self, x):
        x = jnp.asarray(x)
        tensor = jnp.zeros((self.d,) * self.depth, dtype=x.dtype)
        diagonal = (jnp.arange(self.d),) * self.depth
        return tensor.at[diagonal].set(x)
