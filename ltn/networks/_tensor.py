"""General linear tensor networks from an explicit data tensor."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ._base import HashableByContent, Network, Params, contract_all, frozen_array


@dataclasses.dataclass(frozen=True, eq=False)
class TensorNetwork(HashableByContent, Network):
    """`f(x; v) = M(x)(v_1, ..., v_L)` with `M(x) = sum_m x_m T[m]` for a real array `T` of shape
    `(d, k_1, ..., k_L)`. The general case of docs/theory.md §2; every cost is that of reading `T` once."""

    T: np.ndarray
    kind = "tensor"

    def __init__(self, M):
        T = frozen_array(M, "M")
        if T.ndim < 2:
            raise ValueError(f"M must have shape (d, k_1, ..., k_L) with L >= 1, got shape {T.shape}")
        if np.iscomplexobj(T):
            raise TypeError("M must be real (complex decompositions belong in Odeco)")
        if 0 in T.shape:
            raise ValueError(f"M must have no empty axis, got shape {T.shape}")
        object.__setattr__(self, "T", T)

    def __repr__(self) -> str:
        return f"TensorNetwork(M of shape {self.T.shape})"

    @property
    def d(self) -> int:
        return self.T.shape[0]

    @property
    def depth(self) -> int:
        return self.T.ndim - 1

    @property
    def layer_shapes(self):
        return tuple((k,) for k in self.T.shape[1:])

    def _beta(self, params: Params):
        return contract_all(jnp.asarray(self.T), params)

    def data_tensor(self, x):
        return jnp.tensordot(jnp.asarray(x), jnp.asarray(self.T), axes=1)
