"""Specs -> the objects the solver takes: networks, problems and batches of initial parameters.

This module owns the registries of the config's data and network kinds (`DATA_KINDS`, `NETWORK_KINDS`: a new
kind is one entry here; the config schema takes its choices and keys from them) and knows which files a run
reads (`input_files`). Builders are cached on the (hashable) specs and on the SHA-256 of the files they read: a
sweep builds each network and each problem once, and a file rewritten between two sweeps of one process is
read again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import data as ltn_data
from .._compile import jit
from ..networks import (Convolutional, Diagonal, FullyConnected, Network, Odeco, TensorNetwork, dft_matrix,
                        load_params, params_in_file)

if TYPE_CHECKING:
    from ._config import DataSpec, NetworkSpec, RunSpec

# Compile time grows with depth: a depth-32 diagonal flow (d = 8, Tsit5) took 42 s to compile and solve on a
# 2-core CPU, depth 8 took 12 s, and depth 100 ran for minutes without a word.
MAX_DEPTH = 32


def resolve_path(path: str, base_dir: str) -> str:
    """A config's path, relative to the config file's folder `base_dir` unless absolute, normalised."""
    return os.path.normpath(os.path.join(base_dir, path))


# --- the kinds ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataKind:
    """A `data.kind`: the task its data are for (None: either, as the file says), the config keys it uses and
    those it needs, what it is, and its builder `(spec, task, base_dir) -> Problem`."""

    task: str | None
    keys: tuple[str, ...]
    required: tuple[str, ...]
    doc: str
    build: Callable[["DataSpec", str, str], ltn_data.Problem]
    reads_file: bool = False


@dataclasses.dataclass(frozen=True)
class NetworkKind:
    """A `network.kind`: the config keys it uses, what it is, and its builder `(spec, d, base_dir) -> Network`
    (`d`: the data's input dimension)."""

    keys: tuple[str, ...]
    doc: str
    build: Callable[["NetworkSpec", int, str], Network]
    reads_file: bool = False


def random_orthogonal(rng: np.random.Generator, size: int) -> np.ndarray:
    """Haar-distributed real orthogonal matrix (QR of a Gaussian with the sign convention fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    return q * np.sign(np.diag(r))


def _odeco(spec: "NetworkSpec", d: int, base_dir: str) -> Odeco:
    if spec.basis == "identity":
        eye = np.eye(d)
        return Odeco(eye, (eye,) * spec.depth)
    if spec.basis == "dft":
        F = dft_matrix(d)
        return Odeco(d ** ((spec.depth - 2) / 2) * F, (np.conj(F) / np.sqrt(d),) * spec.depth)
    rng = np.random.default_rng(spec.seed)
    S = random_orthogonal(rng, d)
    return Odeco(S, tuple(random_orthogonal(rng, d) for _ in range(spec.depth)))


def _tensor(spec: "NetworkSpec", d: int, base_dir: str) -> TensorNetwork:
    path = resolve_path(spec.path, base_dir)
    M = ltn_data.read_npz(path, ("M",), what="tensor file")["M"]
    if M.ndim - 1 > MAX_DEPTH:
        raise ValueError(f"tensor file {path!r}: M of shape {M.shape} has depth {M.ndim - 1}, more than "
                         f"{MAX_DEPTH} (compile time grows with depth)")
    try:
        return TensorNetwork(M)
    except ValueError as error:
        raise ValueError(f"tensor file {path!r}: {error}") from None


DATA_KINDS: dict[str, DataKind] = {
    "sparse_gaussian": DataKind(
        "regression", ("n", "d", "sparsity", "noise", "seed", "n_test"), ("n", "d"),
        "Woodworth et al.'s sparse regression: Gaussian X (n, d), y = X beta* (+ noise), beta* with `sparsity` "
        "non-zero entries",
        lambda spec, task, base_dir: ltn_data.sparse_regression(spec.seed, spec.n, spec.d, spec.sparsity,
                                                                spec.noise, spec.n_test)),
    "separable": DataKind(
        "classification", ("n", "d", "margin", "sparsity", "seed", "n_test"), ("n", "d"),
        "linearly separable classification: labels of a sparse teacher, points pushed to a margin",
        lambda spec, task, base_dir: ltn_data.separable_classification(spec.seed, spec.n, spec.d, spec.margin,
                                                                       spec.sparsity, spec.n_test)),
    "npz": DataKind(
        None, ("path",), ("path",), "X, y (and optionally beta_star) from an .npz file",
        lambda spec, task, base_dir: ltn_data.load_npz(resolve_path(spec.path, base_dir), task), reads_file=True),
}

NETWORK_KINDS: dict[str, NetworkKind] = {
    "diagonal": NetworkKind(("depth",), "beta = v_1 * ... * v_L (entrywise)",
                            lambda spec, d, base_dir: Diagonal(d, spec.depth)),
    "fully_connected": NetworkKind(
        ("depth", "widths", "width"), "f(x) = x^T W_1 ... W_L; hidden widths `widths`, or `width` repeated, or d",
        lambda spec, d, base_dir: FullyConnected(d, spec.widths if spec.widths is not None
                                                 else (d,) * (spec.depth - 1))),
    "convolutional": NetworkKind(("depth", "filter_size"), "circular 1-D convolutions, last layer full length",
                                 lambda spec, d, base_dir: Convolutional(d, spec.depth, spec.filter_sizes)),
    "odeco": NetworkKind(("depth", "basis", "seed"),
                         "a diagonal network on z = S x, with S and the U_l random orthogonal, DFT or identity",
                         _odeco),
    "tensor": NetworkKind(("path",), "a general linear tensor network: M of shape (d, k_1, ..., k_L) from an .npz",
                          _tensor, reads_file=True),
}


# --- input files ----------------------------------------------------------------------------------------------


def input_files(run: "RunSpec") -> dict[str, str]:
    """The files a run reads, as `{section: resolved path}`: the data, network or init of a kind that reads one."""
    files = {}
    if DATA_KINDS[run.data.kind].reads_file:
        files["data"] = resolve_path(run.data.path, run.base_dir)
    if NETWORK_KINDS[run.network.kind].reads_file:
        files["network"] = resolve_path(run.network.path, run.base_dir)
    if run.init.kind == "file":
        files["init"] = resolve_path(run.init.path, run.base_dir)
    return files


def file_sha256(path: str) -> str:
    """SHA-256 of a file's contents, hashed once while its (size, mtime, ctime, inode) stay the same: a sweep
    asks for every run, and rewriting the file changes the key."""
    stat = os.stat(path)
    return _file_sha256(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, *signature) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


# --- builders -------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def build_problem(spec: "DataSpec", task: str, base_dir: str = ".", contents: str | None = None
                  ) -> ltn_data.Problem:
    """The data of a run (deterministic in `spec.seed`). `contents`: the data file's hash (a cache key only)."""
    return DATA_KINDS[spec.kind].build(spec, task, base_dir)


@functools.lru_cache(maxsize=64)
def build_network(spec: "NetworkSpec", d: int, base_dir: str = ".", contents: str | None = None) -> Network:
    """The network of a run on inputs of dimension `d`. `contents`: the tensor file's hash (a cache key only)."""
    return NETWORK_KINDS[spec.kind].build(spec, d, base_dir)


def network_and_problem(run: "RunSpec") -> tuple[Network, ltn_data.Problem]:
    hashes = {section: file_sha256(path) for section, path in input_files(run).items() if section != "init"}
    problem = build_problem(run.data, run.task, run.base_dir, hashes.get("data"))
    return build_network(run.network, problem.d, run.base_dir, hashes.get("network")), problem


def init_params(net: Network, run: "RunSpec"):
    """The initial parameters of one run: its init kind and scale; `PRNGKey(seed)` for a Gaussian init, entry
    `seed` of a file that holds several initialisations."""
    if run.init.kind == "file":
        path = resolve_path(run.init.path, run.base_dir)
        several = params_in_file(net, path) is not None
        return load_params(net, path, index=run.seed if several else None, scale=run.init.scale)
    return net.init(jax.random.PRNGKey(run.seed), scale=run.init.scale, kind=run.init.kind, shape=run.init.shape)


def init_batch(net: Network, runs: list["RunSpec"]):
    """Initial parameters of several runs of one group, stacked along a leading batch axis (Gaussian inits by one
    compiled program per network, called run by run: eager sampling took 2 ms a run; one program for the whole
    batch, vmapped, compiled twice as long and again for every batch size)."""
    if all(run.init.kind == "gaussian" for run in runs):
        sample = _gaussian_init(net)
        singles = [tuple(np.asarray(p) for p in sample(run.seed, float(run.init.scale))) for run in runs]
        return tuple(np.stack([p[layer] for p in singles]) for layer in range(net.depth))
    singles = [init_params(net, run) for run in runs]
    return tuple(jnp.stack([p[layer] for p in singles]) for layer in range(net.depth))


@functools.lru_cache(maxsize=64)
def _gaussian_init(net: Network):
    return jit(lambda seed, scale: net.init(jax.random.PRNGKey(seed), scale=scale, kind="gaussian"), brief=True)
