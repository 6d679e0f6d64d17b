"""Shared helpers for the benchmark scripts: timing after compilation and a machine description."""

from __future__ import annotations

import os
import platform
import time

import jax


def machine() -> str:
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"JAX {jax.__version__} on {jax.default_backend()} ({devices})")


def timed(fn, *args, repeat: int = 3, **kwargs):
    """(result, best wall seconds over `repeat` calls) after one warm-up call that compiles."""
    result = jax.block_until_ready(fn(*args, **kwargs))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = jax.block_until_ready(fn(*args, **kwargs))
        best = min(best, time.perf_counter() - start)
    return result, best


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def first_call(fn, *args, **kwargs):
    """(result, wall seconds) of one call, compilation included: the time a user waits for a fresh solve."""
    start = time.perf_counter()
    result = jax.block_until_ready(fn(*args, **kwargs))
    return result, time.perf_counter() - start
