"""The persistent caches: programs traced and compiled once are kept on disk and reused by later processes.

Most of a small sweep's wall time is XLA compilation of the same few programs (the flow solves, the theory's
dual Newton solves), and a second `ltn run` of the same config compiles exactly the same programs. JAX can keep
compiled executables in a folder keyed by the program, the compile options, the devices and the JAX version, so
a stale entry is never used. This module decides where that folder is and switches JAX's cache on.

Finding a compiled program in that cache still needs the program itself: tracing ltn's functions to a jaxpr and
lowering it, seconds for a flow solve, paid again by every process. `cached_program` keeps the lowered program
too (`jax.export`, in the folder's `programs/`), keyed by everything it was traced from: the program's name and
static arguments (the network by content), the structure, shapes and dtypes of its arguments, ltn's source
files, the versions of JAX and the libraries traced into it, and the JAX settings that change a trace. A process
that finds it neither traces nor lowers; any change to those makes a new entry, never a stale reuse.

The `ltn` command turns the cache on for its own process (`--no-cache` turns it off). Importing ltn as a library
does not: writing into the user's home on import is a side effect a library should not have (read-only homes,
many processes on a cluster, tests that must not touch ~). Library users call `enable_compilation_cache()`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable

from ._compile import jit

ENV_VAR = "LTN_CACHE_DIR"
# The libraries whose code is traced into ltn's programs (a new version may trace differently).
_TRACED_LIBRARIES = ("jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "numpy")
_log = logging.getLogger(__name__)
_programs_dir: list[str | None] = [None]  # the folder of traced programs; None while the cache is off
_UNCHECKED_TARGETS: set[str] = set()  # custom calls exported without JAX's cross-version check (`_exported`)


def cache_dir() -> str | None:
    """The cache folder the environment asks for, or None when it turns the cache off.

    `LTN_CACHE_DIR` when set (the empty string turns the cache off); otherwise `$XDG_CACHE_HOME/ltn`, where
    `XDG_CACHE_HOME` counts only when it is an absolute path (the XDG base directory rule); otherwise
    `~/.cache/ltn`.
    """
    if ENV_VAR in os.environ:
        return os.environ[ENV_VAR] or None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ltn")


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Keep every program JAX compiles in this process in a persistent cache folder, and reuse what is there.

    Every program is written, however small or quick to compile (JAX's defaults skip programs that compile in
    under a second, which are most of them on a small problem). A program that calls back into Python (e.g. a
    runtime check of equinox's `error_if` on a traced value) cannot be cached: JAX compiles it every time. A
    folder that cannot be created or written costs the cache, not the computation: one warning, and every program
    is compiled as usual. The flow's programs are kept traced as well, in the folder's `programs/`
    (`cached_program`).

    **Arguments:**

    - `path`: the cache folder; by default `cache_dir()` (`LTN_CACHE_DIR`, `$XDG_CACHE_HOME/ltn`,
      `~/.cache/ltn`).

    **Returns:**

    The folder in use, or None when the cache stays off: `path` is None and the environment turns it off
    (`LTN_CACHE_DIR=""`), or the folder cannot be used.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    path = cache_dir() if path is None else os.fspath(path)
    if not path:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission for {path!r}")
    except OSError as error:
        # Once, here, rather than JAX's warning for every program it then fails to read or write.
        warnings.warn(f"compilation cache off: cannot use the folder {path!r} ({error}); set {ENV_VAR} to a "
                      f"writable folder, or to the empty string to turn the cache off", stacklevel=2)
        return None
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size threshold, and no overrides
    jax.config.update("jax_compilation_cache_dir", path)
    compilation_cache.reset_cache()  # JAX opens its cache once per process: a new folder needs a reopen
    programs = os.path.join(path, "programs")
    os.makedirs(programs, exist_ok=True)
    _programs_dir[0] = programs
    return path


def cached_program(fun: Callable, name: str, *static, brief: bool = False) -> Callable:
    """`fun` (a function of pytrees of arrays) compiled by `jit` and kept in the traced-program cache (module
    docstring).

    **Arguments:**

    - `fun`: the function, not yet jitted; its results are pytrees of arrays.
    - `name`, `static`: what else determines the program: every Python value it closes over (a network spec,
      a loss name, a solver name, ...), compared by their pickled bytes.
    - `brief`: compiled for a brief run (`ltn._compile.jit`); the traced program is the same either way.

    **Returns:**

    A function with `fun`'s signature. While the cache is off it calls `jit(fun)`; a program that cannot be
    exported (e.g. one that calls back into Python) or whose static values cannot be pickled is called as
    traced.
    """
    program = jit(fun, brief=brief)
    try:
        static_key = hashlib.sha256(pickle.dumps((name, static))).hexdigest()
    except (pickle.PicklingError, TypeError, AttributeError):  # e.g. a user's network holding a lambda
        return program
    entries: dict[tuple, tuple | None] = {}

    @functools.wraps(fun)
    def call(*args):
        import jax

        folder = _programs_dir[0]
        if folder is None or jax.device_count() > 1:  # sharded batches run as traced: their layout varies
            return program(*args)
        leaves, in_tree = jax.tree_util.tree_flatten(args)
        signature = (str(in_tree), tuple(_abstract(leaf) for leaf in leaves))
        if signature not in entries:
            entries[signature] = _load_or_export(fun, name, folder, static_key, signature, in_tree, leaves, brief)
        entry = entries[signature]
        if entry is None:
            return program(*args)
        runner, out_tree = entry
        # Every argument committed to the one device: a call with uncommitted arguments (fresh NumPy or Python
        # values) would otherwise compile the same program a second time.
        device = jax.devices()[0]
        return jax.tree_util.tree_unflatten(out_tree, runner(*(jax.device_put(leaf, device) for leaf in leaves)))

    return call


def _abstract(leaf) -> tuple:
    """Shape, dtype and weak type of an argument: what a trace depends on."""
    import jax.numpy as jnp

    weak = isinstance(leaf, (bool, int, float, complex)) or bool(getattr(leaf, "weak_type", False))
    return tuple(jnp.shape(leaf)), str(jnp.result_type(leaf)), weak


@functools.lru_cache(maxsize=1)
def _environment() -> str:
    """A digest of what every trace depends on beyond a program's own arguments."""
    import jax

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(str(path.relative_to(Path(__file__).parent)).encode())
        digest.update(path.read_bytes())
    for library in _TRACED_LIBRARIES:
        digest.update(f"{library}={importlib.metadata.version(library)}".encode())
    settings = (jax.default_backend(), jax.config.jax_enable_x64, jax.config.jax_default_matmul_precision,
                jax.config.jax_numpy_rank_promotion, jax.config.jax_default_prng_impl)
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def _load_or_export(fun: Callable, name: str, folder: str, static_key: str, signature: tuple, in_tree, leaves,
                    brief: bool):
    """The compiled caller of `fun`'s exported program and the structure of its results, read from `folder` or
    traced and written there; None when `fun` cannot be exported."""
    import jax
    from jax import export

    key = hashlib.sha256(repr((static_key, signature, _environment())).encode()).hexdigest()
    path = os.path.join(folder, key + ".exported")
    try:
        with open(path, "rb") as file:
            skeleton, serialized = pickle.load(file)
        exported = export.deserialize(serialized)
    except FileNotFoundError:
        exported = None
    except Exception as error:  # noqa: BLE001 - a damaged or foreign entry is traced again and replaced
        _log.warning("traced-program cache: entry %s unreadable (%s), traced again", path, error)
        exported = None
    if exported is None:
        structure = []

        def flat(*flat_args):
            results = fun(*jax.tree_util.tree_unflatten(in_tree, flat_args))
            out_leaves, out_tree = jax.tree_util.tree_flatten(results)
            structure.append(out_tree)
            return out_leaves

        flat.__name__ = name
        try:
            serialized = _exported(jax.jit(flat), leaves).serialize()
        except Exception as error:  # noqa: BLE001 - e.g. a host callback: the program runs as traced
            _log.info("traced-program cache: %s not exported (%s)", name, error)
            return None
        skeleton = jax.tree_util.tree_unflatten(structure[-1], list(range(structure[-1].num_leaves)))
        _write_atomically(path, pickle.dumps((skeleton, serialized)))
        # The program read back, as a later process will: its results then have the same types (weak types are
        # not serialized), so the programs they feed are the same too.
        exported = export.deserialize(serialized)

    def run(*flat_args):
        return exported.call(*flat_args)

    run.__name__ = name
    return jit(run, brief=brief), jax.tree_util.tree_structure(skeleton)


def _exported(jitted, leaves):
    """`jitted` exported for `leaves`. A program that calls routines without JAX's promise of a stable interface
    across versions (e.g. LAPACK's `ormqr` in lineax's GMRES) is exported with that check off for them: an entry is
    keyed by the jaxlib version (`_environment`), so only the jaxlib that wrote it ever reads it. Such routines
    met once are allowed from the start for the programs after (one export each, not two)."""
    from jax import export

    try:
        return export.export(jitted, disabled_checks=_unchecked_calls())(*leaves)
    except ValueError as error:
        unchecked = set(re.findall(r"stablehlo\.custom_call @([\w.]+)", str(error)))
        if not unchecked - _UNCHECKED_TARGETS:
            raise
        _UNCHECKED_TARGETS.update(unchecked)
    return export.export(jitted, disabled_checks=_unchecked_calls())(*leaves)


def _unchecked_calls() -> list:
    from jax import export

    return [export.DisabledSafetyCheck.custom_call(target) for target in sorted(_UNCHECKED_TARGETS)]


def _write_atomically(path: str, data: bytes) -> None:
    """Write through a temporary file and a rename, so that a concurrent reader sees all of it or none."""
    try:
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except OSError as error:
        _log.warning("traced-program cache: cannot write %s (%s)", path, error)
