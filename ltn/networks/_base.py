"""The interface shared by every linear tensor network.

A network is a frozen, hashable spec (usable as a static argument of `jax.jit`); its parameters are a plain
tuple of arrays, one per layer. Every method is a pure function of its arguments, so it composes with
`jit`, `vmap` and `grad`. `apply` goes through the end-to-end predictor `beta` (f is linear in x), so the dense
data tensor `M(x)` is only ever built by `data_tensor`, for checks on small sizes.
"""

from __future__ import annotations

import abc
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

Params = tuple[Array, ...]

INIT_KINDS = ("gaussian", "theorem")


def frozen_array(value, name: str, *, ndim: int | None = None) -> np.ndarray:
    """A read-only NumPy copy of `value` (so a spec holding it stays immutable and hashable by content)."""
    try:
        array = np.array(value)
    except Exception as error:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name} must be an array, got {type(value).__name__}") from error
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)
            or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be a numeric array, got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, found NaN or inf")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64)
    array.setflags(write=False)
    return array


def float_dtype() -> np.dtype:
    """The dtype ltn computes in: float64, or float32 when JAX runs without x64 (`LTN_FLOAT32=1`)."""
    return jax.dtypes.canonicalize_dtype(np.float64)


def check_placement(arrays: dict) -> None:
    """Arrays committed to devices (by `jax.device_put`) must share one placement: JAX cannot combine arrays
    committed to different devices and would fail inside the computation. Uncommitted arrays and NumPy arrays
    go wherever the computation runs; traced arrays have no placement of their own. Moving the data silently
    would hide the user's choice of device, so this raises instead."""
    placed = {name: value.sharding.device_set for name, value in arrays.items()
              if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer) and value.committed}
    if len({frozenset(devices) for devices in placed.values()}) > 1:
        where = "; ".join(f"{name} on {sorted(str(d) for d in devices)}" for name, devices in placed.items())
        raise ValueError(f"the arrays are committed to different devices ({where}); put them on the same "
                         f"device(s) with jax.device_put")


def positive_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class Network(abc.ABC):
    """A linear tensor network `f(x; v_1..v_L) = M(x)(v_1, ..., v_L)` (docs/theory.md §2).

    Subclasses are frozen dataclasses; they define `d`, `depth`, `layer_shapes`, `_beta` and `data_tensor`,
    and `odeco` where the network is orthogonally decomposable.
    """

    kind: str = "network"  # short name used in configs and results

    # --- structure -------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def d(self) -> int:
        """Input dimension."""

    @property
    @abc.abstractmethod
    def depth(self) -> int:
        """Number of layers L."""

    @property
    @abc.abstractmethod
    def layer_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Natural shape of each layer's parameter array."""

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """`k_l`: the number of entries of layer l (the size of axis l of the data tensor)."""
        return tuple(math.prod(shape) for shape in self.layer_shapes)

    @property
    def num_params(self) -> int:
        return sum(self.layer_sizes)

    @property
    def odeco(self) -> tuple[np.ndarray, tuple[np.ndarray, ...]] | None:
        """`(S, Us)` when `M(x) = sum_j [Sx]_j u_1^(j) x ... x u_L^(j)` with orthonormal `u_l^(j)`; else None."""
        return None

    # --- the model -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _beta(self, params: Params) -> Float[Array, " d"]:
        """End-to-end predictor for params already checked by `check_params`."""

    @abc.abstractmethod
    def data_tensor(self, x: Float[Array, " d"]) -> Array:
        """The dense data tensor `M(x)` of shape `layer_sizes` (for checks on small sizes only)."""

    def beta(self, params: Params) -> Float[Array, " d"]:
        """End-to-end linear predictor: `beta[m] = M(e_m)(v_1, ..., v_L)`, so `f(x) = x @ beta`."""
        return self._beta(self.check_params(params))

    def apply(self, params: Params, X: Float[Array, "*batch d"]) -> Float[Array, " *batch"]:
        """Network outputs `f(x; params)` for the rows of `X` (any leading batch shape)."""
        X = jnp.asarray(X)
        if X.ndim < 1 or X.shape[-1] != self.d:
            raise ValueError(f"X must have shape (..., {self.d}) for this network (d={self.d}), got {X.shape}")
        return X @ self._beta(self.check_params(params, X=X))

    def check_params(self, params: Sequence[Array], *, X=None) -> Params:
        """Return params as a tuple after checking it has one array per layer, each of its layer's shape, of
        ltn's real float dtype (`float_dtype()`), and, given the data `X`, placed on X's devices."""
        if not isinstance(params, (tuple, list)):
            raise TypeError(f"params must be a tuple of {self.depth} arrays (one per layer), "
                            f"got {type(params).__name__}")
        if len(params) != self.depth:
            raise ValueError(f"params must have {self.depth} layers, got {len(params)}")
        for layer, (value, shape) in enumerate(zip(params, self.layer_shapes)):
            if not hasattr(value, "shape"):
                raise TypeError(f"params[{layer}] must be an array, got {type(value).__name__}")
            if tuple(value.shape) != shape:
                raise ValueError(f"params[{layer}] must have shape {shape}, got {tuple(value.shape)}")
        return self._check_values(params, "params", X)

    @staticmethod
    def _check_values(params, name: str, X) -> Params:
        """Dtype and placement of params already checked for shape (see `check_params`)."""
        expected = float_dtype()
        for layer, value in enumerate(params):
            dtype = np.dtype(value.dtype)
            if not np.issubdtype(dtype, np.floating) or jax.dtypes.canonicalize_dtype(dtype) != expected:
                raise TypeError(f"{name}[{layer}] must be a real array of dtype {expected} (ltn computes in "
                                f"{expected}; convert with .astype), got dtype {dtype}")
        if X is not None:
            check_placement({**{f"{name}[{layer}]": value for layer, value in enumerate(params)}, "X": X})
        return tuple(params)

    def check_batch(self, params: Sequence[Array], name: str = "params", *, X=None) -> Params:
        """Return a batch of params (every layer with one common leading axis) as a tuple, after the checks of
        `check_params` on every layer."""
        if not isinstance(params, (tuple, list)) or len(params) != self.depth:
            raise TypeError(f"{name} must be a tuple of {self.depth} arrays (one per layer), or a batch of them")
        shapes = [tuple(np.shape(p)) for p in params]
        if len({s[:1] for s in shapes}) != 1 or () in shapes or any(
                s[1:] != layer for s, layer in zip(shapes, self.layer_shapes)):
            raise ValueError(f"{name} must have layer shapes {self.layer_shapes}, or these with a common leading "
                             f"batch axis; got {tuple(shapes)}")
        return self._check_values(params, name, X)

    # --- initialisation --------------------------------------------------------------------------------
    def init(self, key: PRNGKeyArray, scale: float = 1.0, kind: str = "gaussian",
             eta_bar: Float[Array, " m"] | None = None) -> Params:
        """Initial parameters.

        - `"gaussian"`: i.i.d. standard normal entries times `scale`.
        - `"theorem"` (odeco networks): `U_l^T v_l = scale * eta_bar` for l < L and `U_L^T v_L = 0` (docs/theory.md §7),
          with the part of each layer outside range(U_l) zero; `eta_bar > 0` defaults to all ones.

        `scale` must be a finite real number >= 0 (0 is the zero initialisation, a stationary point of the flow;
        a negative scale only flips signs the seed already randomises, and is refused as a likely mistake).
        """
        check_scale(scale)
        if kind == "gaussian":
            if eta_bar is not None:
                raise ValueError("eta_bar is only used by kind='theorem'")
            keys = jax.random.split(key, self.depth)
            return tuple(scale * jax.random.normal(k, shape) for k, shape in zip(keys, self.layer_shapes))
        if kind == "theorem":
            return self._theorem_init(scale, eta_bar)
        raise ValueError(f"init kind must be one of {INIT_KINDS}, got {kind!r}")

    def _theorem_init(self, scale, eta_bar) -> Params:
        if self.odeco is None:
            raise ValueError(f"kind='theorem' needs an orthogonally decomposable network; "
                             f"{type(self).__name__} with these sizes is not (its odeco is None)")
        S, Us = self.odeco
        m = S.shape[0]
        if eta_bar is None:
            eta_bar = np.ones(m)
        eta_bar = jnp.asarray(eta_bar)
        if eta_bar.shape != (m,):
            raise ValueError(f"eta_bar must have shape ({m},), got {eta_bar.shape}")
        layers = []
        for layer, (U, shape) in enumerate(zip(Us, self.layer_shapes)):
            if layer == self.depth - 1:
                layers.append(jnp.zeros(shape))
                continue
            # U^T conj(U) = I, so v = conj(U) @ (scale * eta_bar) gives U^T v = scale * eta_bar.
            v = jnp.conj(jnp.asarray(U)) @ (scale * eta_bar.astype(jnp.result_type(U.dtype, eta_bar.dtype)))
            if jnp.iscomplexobj(v):
                imag = float(jnp.max(jnp.abs(v.imag)))
                if imag > 1e-10 * max(float(jnp.max(jnp.abs(v))), 1e-300):
                    raise ValueError("eta_bar gives complex layer parameters for this network; with a DFT "
                                     "decomposition eta_bar must be conjugate-symmetric (eta_bar[-j] = eta_bar[j])")
                v = v.real
            layers.append(v.reshape(shape))
        return tuple(layers)


def check_scale(scale) -> None:
    """Refuse a concrete scale that is not a finite real number >= 0. A traced scale (a batch of inits built
    under `jax.vmap`) cannot be inspected here: the builder of the batch checks its scales."""
    if isinstance(scale, jax.core.Tracer):
        return
    value = np.asarray(scale)
    if value.ndim != 0 or not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
        raise TypeError(f"scale must be a real number, got {scale!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"scale must be finite and >= 0, got {scale!r}")


def contract_all(tensor: Array, vectors: Sequence[Array]) -> Array:
    """Contract the trailing axes of `tensor` with `vectors` (the last vector with the last axis, and so on)."""
    for v in reversed(vectors):
        tensor = tensor @ v
    return tensor


class HashableByContent:
    """Equality and hash of a frozen dataclass by the values of its fields, arrays compared by content."""

    @functools.cached_property
    def _identity(self) -> tuple:
        items = []
        for name in self.__dataclass_fields__:  # type: ignore[attr-defined]
            value = getattr(self, name)
            if isinstance(value, np.ndarray):
                items.append((value.shape, value.dtype.str, value.tobytes()))
            elif isinstance(value, tuple) and value and isinstance(value[0], np.ndarray):
                items.append(tuple((a.shape, a.dtype.str, a.tobytes()) for a in value))
            else:
                items.append(value)
        return (type(self).__name__, *items)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._identity == other._identity

    def __hash__(self) -> int:
        return hash(self._identity)
