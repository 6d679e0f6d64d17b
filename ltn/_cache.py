"""The persistent compilation cache: XLA programs compiled once are kept on disk and reused by later processes.

Most of a small sweep's wall time is XLA compilation of the same few programs (the flow solves, the theory's
dual Newton solves), and a second `ltn run` of the same config compiles exactly the same programs. JAX can keep
compiled executables in a folder keyed by the program, the compile options, the devices and the JAX version, so
a stale entry is never used. This module decides where that folder is and switches JAX's cache on.

The `ltn` command turns the cache on for its own process (`--no-cache` turns it off). Importing ltn as a library
does not: writing into the user's home on import is a side effect a library should not have (read-only homes,
many processes on a cluster, tests that must not touch ~). Library users call `enable_compilation_cache()`.
"""

from __future__ import annotations

import os
import warnings

ENV_VAR = "LTN_CACHE_DIR"


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
    is compiled as usual.

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
    return path
