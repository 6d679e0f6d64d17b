"""Specs -> the objects the solver takes: networks, problems and batches of initial parameters.

Builders are cached on the (hashable) specs and on the SHA-256 of the files they read: a sweep builds each
network and each problem once, and a file rewritten between two sweeps of one process is read again.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as ltn_data
from ..networks import Convolutional, Diagonal, FullyConnected, Network, Odeco, TensorNetwork, dft_matrix
from ._config import MAX_DEPTH, DataSpec, NetworkSpec, RunSpec
from ._grid import file_sha256, input_files


def resolve_path(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


@functools.lru_cache(maxsize=64)
def build_problem(spec: DataSpec, task: str, base_dir: str = ".", contents: str | None = None) -> ltn_data.Problem:
    """The data of a run (deterministic in `spec.seed`). `contents`: the data file's hash (a cache key only)."""
    if spec.kind == "sparse_gaussian":
        return ltn_data.sparse_regression(spec.seed, spec.n, spec.d, spec.sparsity, spec.noise)
    if spec.kind == "separable":
        return ltn_data.separable_classification(spec.seed, spec.n, spec.d, spec.margin, spec.sparsity)
    if spec.kind == "npz":
        return ltn_data.load_npz(resolve_path(spec.path, base_dir), task)
    raise ValueError(f"unknown data kind {spec.kind!r}")


def random_orthogonal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Haar-distributed real orthogonal matrix (QR of a Gaussian with the sign convention fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    return q * np.sign(np.diag(r))


@functools.lru_cache(maxsize=64)
def build_network(spec: NetworkSpec, d: int, base_dir: str = ".", contents: str | None = None) -> Network:
    """The network of a run on inputs of dimension `d`. `contents`: the tensor file's hash (a cache key only)."""
    if spec.kind == "diagonal":
        return Diagonal(d, spec.depth)
    if spec.kind == "fully_connected":
        return FullyConnected(d, spec.widths if spec.widths is not None else (d,) * (spec.depth - 1))
    if spec.kind == "convolutional":
        return Convolutional(d, spec.depth, spec.filter_sizes)
    if spec.kind == "odeco":
        if spec.basis == "identity":
            eye = np.eye(d)
            return Odeco(eye, (eye,) * spec.depth)
        if spec.basis == "dft":
            F = dft_matrix(d)
            return Odeco(d ** ((spec.depth - 2) / 2) * F, (np.conj(F) / np.sqrt(d),) * spec.depth)
        rng = np.random.default_rng(spec.seed)
        S = random_orthogonal(rng, d)
        return Odeco(S, tuple(random_orthogonal(rng, d) for _ in range(spec.depth)))
    if spec.kind == "tensor":
        path = resolve_path(spec.path, base_dir)
        M = ltn_data.read_npz(path, ("M",), what="tensor file")["M"]
        if M.ndim - 1 > MAX_DEPTH:
            raise ValueError(f"tensor file {path!r}: M of shape {M.shape} has depth {M.ndim - 1}, more than "
                             f"{MAX_DEPTH} (compile time grows with depth)")
        try:
            return TensorNetwork(M)
        except ValueError as error:
            raise ValueError(f"tensor file {path!r}: {error}") from None
    raise ValueError(f"unknown network kind {spec.kind!r}")


def network_and_problem(run: RunSpec) -> tuple[Network, ltn_data.Problem]:
    hashes = {section: file_sha256(path) for section, path in input_files(run).items()}
    problem = build_problem(run.data, run.task, run.base_dir, hashes.get("data"))
    return build_network(run.network, problem.d, run.base_dir, hashes.get("network")), problem


def init_params(net: Network, run: RunSpec):
    """The initial parameters of one run: `PRNGKey(seed)`, the init kind and scale of its spec."""
    return net.init(jax.random.PRNGKey(run.seed), scale=run.init.scale, kind=run.init.kind)


def init_batch(net: Network, runs: list[RunSpec]):
    """Initial parameters of several runs of one group, stacked along a leading batch axis (Gaussian inits in one
    compiled call: eager sampling, run by run, took 2 ms a run)."""
    if all(run.init.kind == "gaussian" for run in runs):
        seeds = np.asarray([run.seed for run in runs])
        scales = np.asarray([run.init.scale for run in runs], dtype=float)
        return _gaussian_init_batch(net)(seeds, scales)
    singles = [init_params(net, run) for run in runs]
    return tuple(jnp.stack([p[layer] for p in singles]) for layer in range(net.depth))


@functools.lru_cache(maxsize=64)
def _gaussian_init_batch(net: Network):
    return jax.jit(jax.vmap(lambda seed, scale: net.init(jax.random.PRNGKey(seed), scale=scale, kind="gaussian")))
