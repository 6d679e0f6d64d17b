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

# The initialisations ltn knows, with what each one is (the config reference prints these). `Network.init` draws
# the first three; "file" is read by `load_params` (a file holds parameters, not a rule to draw them).
INIT_KINDS = {
    "gaussian": "i.i.d. standard normal entries times `scale`",
    "theorem": "odeco networks: `U_l^T v_l = scale * eta_bar` (all ones) for l < L and `U_L^T v_L = 0`, the "
               "initialisation of the regression theorem (docs/theory.md §7)",
    "shaped": "depth-2 odeco networks (e.g. diagonal): Azulay et al.'s (2021) initialisation of scale and shape, "
              "`U_1^T v_1 = scale * sqrt((1 - s)/(1 + s))`, `U_2^T v_2 = scale * sqrt((1 + s)/(1 - s))` in every "
              "entry, `s = shape` in [0, 1)",
    "file": "parameters read from an .npz file (arrays `layer0` ... `layer{L-1}`), times `scale`",
}


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
             eta_bar: Float[Array, " m"] | None = None, shape: float | None = None) -> Params:
        """Initial parameters (the kinds of `INIT_KINDS` that are drawn, not read from a file).

        - `"gaussian"`: i.i.d. standard normal entries times `scale`.
        - `"theorem"` (odeco networks): `U_l^T v_l = scale * eta_bar` for l < L and `U_L^T v_L = 0` (docs/theory.md §7),
          with the part of each layer outside range(U_l) zero; `eta_bar > 0` defaults to all ones.
        - `"shaped"` (depth-2 odeco networks): the initialisation of scale and shape of Azulay et al., "On the
          implicit bias of initialization shape: beyond infinitesimal mirror descent" (ICML 2021), as the authors'
          code defines it (github.com/shaharazulay/implicit-bias, `symmetric_init`): every entry of the first
          layer is `u0 = scale * sqrt((1 - s) / (1 + s))` and of the second `v0 = scale * sqrt((1 + s) / (1 - s))`,
          in the coordinates `U_l^T v_l` (the layers themselves for a diagonal network), with `s = shape` in
          [0, 1) (default 0: balanced layers). Their `alpha = u0 * v0` is `scale**2`, and `s = (v0 - u0) /
          (v0 + u0)` measures the imbalance, which the flow conserves (`u^2 - v^2` per entry): `s -> 1` at a
          fixed `alpha` moves the limit from the l1 towards the l2 interpolant. Their "unbiased" model
          `beta = u+ * v+ - u- * v-` is `Odeco(S=[I; -I], (I, I))` with this initialisation.

        `scale` must be a finite real number >= 0 (0 is the zero initialisation, a stationary point of the flow;
        a negative scale only flips signs the seed already randomises, and is refused as a likely mistake).
        """
        check_scale(scale)
        if eta_bar is not None and kind != "theorem":
            raise ValueError("eta_bar is only used by kind='theorem'")
        if shape is not None and kind != "shaped":
            raise ValueError("shape is only used by kind='shaped'")
        if kind == "gaussian":
            keys = jax.random.split(key, self.depth)
            return tuple(scale * jax.random.normal(k, layer) for k, layer in zip(keys, self.layer_shapes))
        if kind == "theorem":
            return self._theorem_init(scale, eta_bar)
        if kind == "shaped":
            return self._shaped_init(scale, 0.0 if shape is None else shape)
        if kind == "file":
            raise ValueError("init kind 'file' reads its parameters: use ltn.networks.load_params(net, path)")
        raise ValueError(f"init kind must be one of {list(INIT_KINDS)}, got {kind!r}")

    def _odeco_or_raise(self, kind: str):
        if self.odeco is None:
            raise ValueError(f"kind={kind!r} needs an orthogonally decomposable network; "
                             f"{type(self).__name__} with these sizes is not (its odeco is None)")
        return self.odeco

    def _theorem_init(self, scale, eta_bar) -> Params:
        S, _ = self._odeco_or_raise("theorem")
        m = S.shape[0]
        if eta_bar is None:
            eta_bar = np.ones(m)
        eta_bar = jnp.asarray(eta_bar)
        if eta_bar.shape != (m,):
            raise ValueError(f"eta_bar must have shape ({m},), got {eta_bar.shape}")
        return self._from_etas([scale * eta_bar] * (self.depth - 1) + [jnp.zeros(m)], "eta_bar")

    def _shaped_init(self, scale, shape) -> Params:
        S, _ = self._odeco_or_raise("shaped")
        if self.depth != 2:
            raise ValueError(f"kind='shaped' is defined for depth-2 networks (Azulay et al. 2021), got depth "
                             f"{self.depth}")
        value = np.asarray(shape)
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.number) or not 0 <= float(value) < 1:
            raise ValueError(f"shape must be a real number in [0, 1), got {shape!r}")
        ones = np.ones(S.shape[0])
        s = float(value)
        return self._from_etas([scale * np.sqrt((1 - s) / (1 + s)) * ones,
                                scale * np.sqrt((1 + s) / (1 - s)) * ones], "the shaped initialisation")

    def _from_etas(self, etas, what: str) -> Params:
        """Layers `v_l` with `U_l^T v_l = eta_l` and no part outside range(U_l): `v_l = conj(U_l) eta_l`
        (`U_l^T conj(U_l) = I`). A complex decomposition must give real layers."""
        _, Us = self.odeco
        layers = []
        for U, eta, shape in zip(Us, etas, self.layer_shapes):
            eta = jnp.asarray(eta)
            v = jnp.conj(jnp.asarray(U)) @ eta.astype(jnp.result_type(U.dtype, eta.dtype))
            if jnp.iscomplexobj(v):
                imag = float(jnp.max(jnp.abs(v.imag)))
                if imag > 1e-10 * max(float(jnp.max(jnp.abs(v))), 1e-300):
                    raise ValueError(f"{what} gives complex layer parameters for this network; with a DFT "
                                     "decomposition the coordinates must be conjugate-symmetric (eta[-j] = eta[j])")
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
