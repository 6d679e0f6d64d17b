"""`jit`: `jax.jit` with the XLA options that suit ltn's programs on the backend in use.

ltn's programs are hundreds of small fused kernels inside while loops (a flow solve, a dual Newton solve), and on
a small problem compiling them takes longer than running them. Almost all of that time is LLVM optimising and
emitting machine code for each kernel. Two options cut it:
- `xla_cpu_use_fusion_emitters=False`: XLA's CPU fusion emitters (its default) make a kernel of its own of every
  scalar operation in a loop; its elemental emitters do not.
- `xla_backend_optimization_level=2`: LLVM's O2 pipeline instead of O3. O3 spends more of LLVM's effort (more
  inlining, more aggressive loop transformations) for speed that kernels this small do not show.
Both are measured on the flow's own programs by benchmarks/compile_options.py (benchmarks/RESULTS.md): faster
compiles, run times within the machine's noise, and the same results up to the solvers' tolerances (the
pipelines round differently, so an adaptive solve may take a few steps more or fewer). ltn asks for them where
this XLA has the options; other backends get XLA's defaults.

A program that runs briefly (`brief=True`: a one-off test, the summaries at the ends of a flow's legs, the flow's
first explicit round on a small problem, the theory's checks, whose time goes to dense linear algebra that LLVM's
pipeline does not touch) is compiled with LLVM's O0 instead: about 2x faster to compile and 3x slower to run (up to
6x vmapped), which wins wherever its run is short next to its compile (benchmarks/compile_options.py --brief). A
program is brief or not by what it is, never by timing, so its results do not depend on the machine's load.

The options are chosen at a program's first call, not at import: asking which backend is in use starts it, and
importing ltn must not.
"""

from __future__ import annotations

import functools
from typing import Callable

_CPU_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 2}
_BRIEF_LEVEL = 0  # the LLVM pipeline of a brief program


def compiler_options(brief: bool = False) -> dict | None:
    """The XLA options of ltn's programs in this process: `_CPU_OPTIONS` (at LLVM's O0 for a `brief` program) on
    CPU where this XLA accepts them (a version without the option rejects it), else None (XLA's defaults)."""
    options = _checked_options()
    if options is None or not brief:
        return options
    return {**options, "xla_backend_optimization_level": _BRIEF_LEVEL}


@functools.lru_cache(maxsize=1)
def _checked_options() -> dict | None:
    """`_CPU_OPTIONS` where this XLA accepts them (one small compile per process), else None."""
    import jax

    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_OPTIONS).lower(0.0).compile()
    except Exception:  # noqa: BLE001 - JAX or XLA without the option: its defaults
        return None
    return dict(_CPU_OPTIONS)


def jit(fun: Callable | None = None, *, brief: bool = False, **kwargs) -> "_Jit":
    """`jax.jit(fun, **kwargs)` compiled with `compiler_options(brief)`, decided at the first use (usable as a
    decorator, with or without arguments)."""
    if fun is None:
        return functools.partial(jit, brief=brief, **kwargs)
    return _Jit(fun, brief, kwargs)


class _Jit:
    """A `jax.jit` function made at its first use; every attribute (`lower`, ...) is the jitted function's."""

    def __init__(self, fun: Callable, brief: bool, kwargs: dict):
        functools.update_wrapper(self, fun)
        self._brief = brief
        self._kwargs = kwargs

    @functools.cached_property
    def jitted(self):
        import jax

        return jax.jit(self.__wrapped__, compiler_options=compiler_options(self._brief), **self._kwargs)

    def __call__(self, *args, **kwargs):
        return self.jitted(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_brief", "_kwargs"):  # not set yet (a copy, an unpickling): not the jit's
            raise AttributeError(name)
        return getattr(self.jitted, name)
