"""Circular 1-D linear convolutional networks."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ._base import HashableByContent, Network, Params, positive_int


def dft_matrix(d: int) -> np.ndarray:
    """`F[j, m] = omega^(-j m)` with `omega = exp(2 pi i / d)` (the unnormalised DFT)."""
    j = np.arange(d)
    return np.exp(-2j * np.pi * np.outer(j, j) / d)


@dataclasses.dataclass(frozen=True, eq=False)
class Convolutional(HashableByContent, Network):
    """`h_0 = x`, `h_l[i] = sum_{k < k_l} v_l[k] h_(l-1)[(i + k) mod d]`, `f = <h_(L-1), v_L>`.

    `filter_sizes` gives `k_1..k_(L-1)` (each between 1 and d; default: all d, the full-length network); the
    last layer always has length d. `beta` is the circular convolution of the zero-padded filters, and
    `M(x)[i_1..i_L] = x[(i_1 + ... + i_L) mod d]`. Full-length networks are odeco over C via the DFT.
    """

    d_in: int
    filter_sizes: tuple[int, ...]
    kind = "convolutional"

    def __init__(self, d: int, depth: int, filter_sizes=None):
        d = positive_int(d, "d")
        depth = positive_int(depth, "depth")
        if filter_sizes is None:
            filter_sizes = (d,) * (depth - 1)
        elif isinstance(filter_sizes, (int, np.integer)) and not isinstance(filter_sizes, bool):
            filter_sizes = (int(filter_sizes),) * (depth - 1)
        filter_sizes = tuple(filter_sizes)
        if len(filter_sizes) != depth - 1:
            raise ValueError(f"filter_sizes must list depth - 1 = {depth - 1} sizes k_1..k_(L-1), "
                             f"got {len(filter_sizes)}: {filter_sizes}")
        for i, k in enumerate(filter_sizes):
            positive_int(k, f"filter_sizes[{i}]")
            if k > d:
                raise ValueError(f"filter_sizes[{i}] = {k} is longer than d = {d}; filters must have length <= d")
        object.__setattr__(self, "d_in", d)
        object.__setattr__(self, "filter_sizes", tuple(int(k) for k in filter_sizes))

    def __repr__(self) -> str:
        return f"Convolutional(d={self.d}, depth={self.depth}, filter_sizes={self.filter_sizes})"

    @property
    def d(self) -> int:
        return self.d_in

    @property
    def depth(self) -> int:
        return len(self.filter_sizes) + 1

    @property
    def full_length(self) -> bool:
        return all(k == self.d for k in self.filter_sizes)

    @property
    def layer_shapes(self):
        return tuple((k,) for k in (*self.filter_sizes, self.d))

    @property
    def odeco(self):
        """For full-length filters: `S = d^((L-2)/2) F`, `U_l = conj(F) / sqrt(d)` (complex)."""
        if not self.full_length:
            return None
        F = dft_matrix(self.d)
        U = np.conj(F) / np.sqrt(self.d)
        return self.d ** ((self.depth - 2) / 2) * F, (U,) * self.depth

    def _beta(self, params: Params):
        spectrum = 1.0
        for v in params:
            spectrum = spectrum * jnp.fft.rfft(v, n=self.d)  # rfft zero-pads each filter to length d
        return jnp.fft.irfft(spectrum, n=self.d)

    def data_tensor(self, x):
        x = jnp.asarray(x)
        index_sum = sum(np.ix_(*[np.arange(k) for k in self.layer_sizes]))
        return x[index_sum % self.d]
