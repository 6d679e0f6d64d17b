"""Initial parameters from a file: the `"file"` init kind.

An `.npz` archive holds one array per layer, named `layer0`, ..., `layer{L-1}`, each of its layer's shape
(`net.layer_shapes`), or all with one leading axis of the same length `B`: then the file holds `B`
initialisations and a sweep run with seed `i` starts from entry `i` (`index`). Arrays must be real and finite;
integers are read as float64.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..data import read_npz
from ._base import Network, Params


def layer_names(depth: int) -> tuple[str, ...]:
    """The array names of an init file for a network of `depth` layers."""
    return tuple(f"layer{layer}" for layer in range(depth))


def load_params(net: Network, path: str | os.PathLike, *, index: int | None = None,
                scale: float = 1.0) -> Params:
    """The initial parameters stored in an `.npz` file, checked against `net`.

    Arguments:
        net: the network the parameters are for (its `layer_shapes` fix the arrays' shapes).
        path: an `.npz` archive with arrays `layer0`, ..., `layer{L-1}` (see the module docstring).
        index: which initialisation of a file holding several (a leading axis on every array); None for a file
            holding one.
        scale: a factor applied to every layer (1 reproduces the file).

    Returns:
        A tuple of float64 arrays, one per layer.

    Raises `ValueError` (`FileNotFoundError` for a missing file) naming the file and the array: a missing or
    surplus layer, a shape that is not the layer's, a complex, non-numeric or non-finite array, an `index`
    outside the file's entries or given for a file that holds one initialisation (or missing for one that
    holds several).
    """
    label = f"init file {os.fspath(path)!r}"
    arrays, entries = _read(net, path)
    if entries is None and index is not None:
        raise ValueError(f"{label}: holds one initialisation (no leading axis), so it has no entry {index}")
    if entries is not None:
        if index is None:
            raise ValueError(f"{label}: holds {entries} initialisations (a leading axis); choose one with index")
        if not 0 <= index < entries:
            raise ValueError(f"{label}: holds {entries} initialisations, so it has no entry {index} (seeds index "
                             f"the entries: 0 to {entries - 1})")
    return tuple(scale * (arrays[name] if index is None else arrays[name][index]) for name in layer_names(net.depth))


def params_in_file(net: Network, path: str | os.PathLike) -> int | None:
    """How many initialisations an init file holds: None for one (arrays of the layer shapes), `B` for `B`
    along a leading axis. Raises as `load_params` does for a file that is not an init file for `net`."""
    return _read(net, path)[1]


def _read(net: Network, path) -> tuple[dict[str, np.ndarray], int | None]:
    """The layer arrays of an init file, checked (names, real, finite, shapes), and the number of entries."""
    label = f"init file {os.fspath(path)!r}"
    names = layer_names(net.depth)
    arrays = read_npz(path, names, what="init file")
    with zipfile.ZipFile(path) as archive:
        stored = sorted(name.removesuffix(".npy") for name in archive.namelist())
    surplus = [name for name in stored if name not in names]
    if surplus:
        raise ValueError(f"{label}: holds array(s) {surplus} besides {list(names)}; a network of depth "
                         f"{net.depth} takes exactly {list(names)}")
    return arrays, _entries(net, arrays, label)


def _entries(net: Network, arrays: dict[str, np.ndarray], label: str) -> int | None:
    """None when every array has its layer's shape; `B` when all have it after one common leading axis of
    length `B`; otherwise a `ValueError` listing every array's shape."""
    names = layer_names(net.depth)
    if all(arrays[name].shape == shape for name, shape in zip(names, net.layer_shapes)):
        return None
    leading = {arrays[name].shape[:1] for name in names}
    if len(leading) == 1 and all(arrays[name].shape[1:] == shape for name, shape in zip(names, net.layer_shapes)):
        (entries,) = leading.pop()
        return entries
    shapes = ", ".join(f"{name} {arrays[name].shape}" for name in names)
    raise ValueError(f"{label}: the arrays have shapes {shapes}, but the network's layers have shapes "
                     f"{net.layer_shapes} (or these after one leading axis shared by every array)")
