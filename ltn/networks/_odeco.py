"""Orthogonally decomposable (odeco) networks: a diagonal network acting on `z = S x`."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ._base import HashableByContent, Network, Params, frozen_array

# Columns count as orthonormal when max |U^H U - I| is below this (inputs built in float64 sit near 1e-15).
ORTHONORMAL_TOL = 1e-8
# Relative size of Im f(x) on random real probes above which a complex decomposition is not a real network.
REAL_NETWORK_TOL = 1e-8


@dataclasses.dataclass(frozen=True, eq=False)
class Odeco(HashableByContent, Network):
    """`M(x) = sum_j [S x]_j u_1^(j) x ... x u_L^(j)`, `S` of shape (m, d), `U_l` of shape (k_l, m) with
    orthonormal columns (`U_l^H U_l = I`). With `eta_l = U_l^T v_l`: `rho = eta_1 * ... * eta_L` and
    `beta = Re(S^T rho)`. `S` and `U_l` may be complex when they define a real network (checked on random
    probes), as for full-length convolutions; parameters are always real."""

    S: np.ndarray
    Us: tuple[np.ndarray, ...]
    kind = "odeco"

    def __init__(self, S, Us):
        S = frozen_array(S, "S", ndim=2)
        if isinstance(Us, np.ndarray) or not isinstance(Us, (tuple, list)):
            raise TypeError("Us must be a sequence of matrices U_l (one per layer)")
        if len(Us) < 1:
            raise ValueError("Us must hold at least one layer matrix")
        Us = tuple(frozen_array(U, f"Us[{l}]", ndim=2) for l, U in enumerate(Us))
        m = S.shape[0]
        for l, U in enumerate(Us):
            if U.shape[1] != m:
                raise ValueError(f"Us[{l}] must have m = {m} columns (S has shape {S.shape}), got shape {U.shape}")
            gram_error = np.max(np.abs(U.conj().T @ U - np.eye(m)))
            if gram_error > ORTHONORMAL_TOL:
                raise ValueError(f"Us[{l}] must have orthonormal columns: max |U^H U - I| = {gram_error:.2e}")
        object.__setattr__(self, "S", S)
        object.__setattr__(self, "Us", Us)
        if self.is_complex:
            self._check_real_network()

    def __repr__(self) -> str:
        return f"Odeco(S of shape {self.S.shape}, depth={self.depth}, complex={self.is_complex})"

    @property
    def is_complex(self) -> bool:
        return bool(np.iscomplexobj(self.S) or any(np.iscomplexobj(U) for U in self.Us))

    @property
    def d(self) -> int:
        return self.S.shape[1]

    @property
    def depth(self) -> int:
        return len(self.Us)

    @property
    def layer_shapes(self):
        return tuple((U.shape[0],) for U in self.Us)

    @property
    def odeco(self):
        return self.S, self.Us

    def _rho(self, params: Params):
        rho = 1.0
        for U, v in zip(self.Us, params):
            rho = rho * (jnp.asarray(U).T @ v)
        return rho

    def _beta(self, params: Params):
        beta = jnp.asarray(self.S).T @ self._rho(params)
        return beta.real if self.is_complex else beta

    def data_tensor(self, x):
        z = jnp.asarray(self.S) @ jnp.asarray(x)
        tensor = z
        for U in self.Us:
            # Builds sum_j z_j u_1^(j) x ... x u_L^(j) one layer at a time, keeping j as the last axis.
            tensor = tensor[..., None, :] * jnp.asarray(U)
        tensor = tensor.sum(axis=-1)
        return tensor.real if self.is_complex else tensor

    def _check_real_network(self) -> None:
        rng = np.random.default_rng(0)
        for _ in range(3):
            x = rng.standard_normal(self.d)
            etas = [U.T @ rng.standard_normal(U.shape[0]) for U in self.Us]
            terms = (self.S @ x) * np.prod(etas, axis=0)
            value, scale = terms.sum(), np.abs(terms).sum()
            if abs(value.imag) > REAL_NETWORK_TOL * max(scale, 1e-300):
                raise ValueError("S and Us are complex and do not define a real network: "
                                 f"Im f(x) / scale = {abs(value.imag) / scale:.2e} on a random real probe")
