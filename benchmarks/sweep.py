"""Grouped, vmapped sweep runner vs the same runs one at a time.

    python benchmarks/sweep.py [--runs-per-scale 64] [--check]

Both sides go through `ltn.sweep.run_sweep` in this process, from a cold compile cache, and include everything
(compilation, solves, theory checks when `--check`, result writing): the grouped side solves all runs in one
`jit(vmap(gradient_flow))` call, the baseline calls the solver once per run (one compile, reused). Solver work
is counted too (solver steps: the same on both sides, since every run in a batch keeps its own steps). Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ltn  # noqa: E402,F401  (float64)
from ltn.flow import _gradient_flow  # noqa: E402
from ltn.sweep import expand, loads_config, run_sweep  # noqa: E402

from _common import markdown_table  # noqa: E402

CONFIG = """
name = "benchmark"
task = "regression"
seeds = {seeds}
data = {{ kind = "sparse_gaussian", n = 10, d = 30, sparsity = 3 }}
network = {{ kind = "diagonal", depth = 2 }}
init = {{ kind = "gaussian", scale = [0.25, 0.5, 0.75, 1.0] }}
check = {{ enabled = {check} }}
"""


def timed(sweep, grouped: bool, cold: bool):
    if cold:
        _gradient_flow._compiled_flow.cache_clear()  # start cold: compile time is part of the cost
    traces = _gradient_flow.TRACE_COUNT["flow"]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        outcome = run_sweep(sweep, folder, progress=False, grouped=grouped)
        wall = time.perf_counter() - start
    rows = outcome.rows
    steps = sum(row["steps"] for row in rows)
    solve = sum(row["group_wall_time"] for row in rows) if not grouped else \
        sum({row["group_id"]: row["group_wall_time"] for row in rows}.values())
    return {"wall": wall, "solve": solve, "compiles": _gradient_flow.TRACE_COUNT["flow"] - traces,
            "steps": steps, "runs": len(rows),
            "passed": sum(bool(r["passed"]) for r in rows), "groups": outcome.groups_computed}


def compare(runs_per_scale: int, check: bool) -> str:
    """Both runners, cold and warm, on the benchmark config: a markdown section with the ratios."""
    sweep = loads_config(CONFIG.format(seeds=list(range(runs_per_scale)), check="true" if check else "false"),
                         source="benchmark")
    results = {}
    for grouped in (True, False):  # cold: compile included (first sweep of a process); warm: compile cached
        for cache in ("cold", "warm"):
            results[cache, grouped] = timed(sweep, grouped=grouped, cold=cache == "cold")
    rows = [[cache, "grouped (batched solve)" if grouped else "one run at a time", r["groups"], r["compiles"],
             f"{r['wall']:.2f}", f"{r['solve']:.2f}", r["steps"]] for (cache, grouped), r in results.items()]
    ratios = "; ".join(f"{cache}: **{results[cache, False]['wall'] / results[cache, True]['wall']:.1f}x** all in, "
                       f"{results[cache, False]['solve'] / results[cache, True]['solve']:.1f}x solver calls only"
                       for cache in ("cold", "warm"))
    return (f"### Sweep runner: {len(expand(sweep))} runs grouped vs one at a time (benchmarks/sweep.py: diagonal "
            f"depth 2, n = 10, d = 30, Gaussian init at 4 scales, default flow options, theory check "
            f"{'on' if check else 'off'})\n\n"
            + markdown_table(["compile cache", "runner", "groups solved", "compiles", "wall s (all in)", "solver s",
                              "solver steps"], rows)
            + f"\n\nSpeed-up of the grouped runner (goal >= 10x): {ratios}.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-scale", type=int, default=64, help="seeds per scale (4 scales)")
    parser.add_argument("--check", action="store_true", help="also run the theory check of every run")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs\n")
    print(compare(args.runs_per_scale, args.check))


if __name__ == "__main__":
    main()
