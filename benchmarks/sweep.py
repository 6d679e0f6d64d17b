"""Grouped, vmapped sweep runner vs the same runs one at a time.

    python benchmarks/sweep.py [--runs-per-scale 64] [--check]

Both sides go through `ltn.sweep.run_sweep` in this process, from a cold compile cache, and include everything
(compilation, solves, theory checks when `--check`, result writing): the grouped side solves all runs in one
`jit(vmap(gradient_flow))` call, the baseline calls the solver once per run (one compile, reused). Solver work
is counted too: the steps each run needed, and the steps a vmapped batch executes (every member runs until the
slowest one stops). Prints a markdown table.
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

CONFIG = """
name = "benchmark"
task = "regression"
seeds = {seeds}
data = {{ kind = "sparse_gaussian", n = 4, d = 8, sparsity = 2 }}
network = {{ kind = "diagonal", depth = 2 }}
init = {{ kind = "gaussian", scale = [0.6, 0.8, 1.0, 1.2] }}
flow = {{ solver = "tsit5", rtol = 1e-10, atol = 1e-12, checkpoints = 32 }}
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
    needed = sum(row["steps"] for row in rows)
    if grouped:
        # one stacked solve per (group, initial scale): every member pays the batch's step count
        batches = {(r["group_id"], r["init.scale"]) for r in rows}
        executed = sum(max(r["steps"] for r in rows if (r["group_id"], r["init.scale"]) == b) * sum(
            1 for r in rows if (r["group_id"], r["init.scale"]) == b) for b in batches)
    else:
        executed = needed
    solve = sum(row["group_wall_time"] for row in rows) if not grouped else \
        sum({row["group_id"]: row["group_wall_time"] for row in rows}.values())
    return {"wall": wall, "solve": solve, "compiles": _gradient_flow.TRACE_COUNT["flow"] - traces,
            "needed": needed, "executed": executed, "runs": len(rows),
            "passed": sum(bool(r["passed"]) for r in rows), "groups": outcome.groups_computed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-scale", type=int, default=64, help="seeds per scale (4 scales)")
    parser.add_argument("--check", action="store_true", help="also run the theory check of every run")
    args = parser.parse_args()
    sweep = loads_config(CONFIG.format(seeds=list(range(args.runs_per_scale)),
                                       check="true" if args.check else "false"), source="benchmark")
    total = len(expand(sweep))
    results = {}
    for grouped in (True, False):  # cold: compile included (first sweep of a process); warm: compile cached
        for cache in ("cold", "warm"):
            results[cache, grouped] = timed(sweep, grouped=grouped, cold=cache == "cold")
    print(f"\n{total} runs: diagonal depth-2 regression (n=4, d=8), gaussian init at 4 scales, tsit5 rtol=1e-10, "
          f"theory check {'on' if args.check else 'off'}; {os.cpu_count()} CPUs\n")
    print("| compile cache | runner | groups solved | compiles | wall s (all in) | solver s | steps needed | "
          "steps executed |")
    print("|---|---|---|---|---|---|---|---|")
    for (cache, grouped), r in results.items():
        name = "grouped (batched solve)" if grouped else "one run at a time"
        print(f"| {cache} | {name} | {r['groups']} | {r['compiles']} | {r['wall']:.2f} | {r['solve']:.2f} | "
              f"{r['needed']} | {r['executed']} |")
    for cache in ("cold", "warm"):
        grouped, single = results[cache, True], results[cache, False]
        print(f"\n{cache}: speed-up all in {single['wall'] / grouped['wall']:.1f}x, solver calls only "
              f"{single['solve'] / grouped['solve']:.1f}x (goal: 10x)")


if __name__ == "__main__":
    main()
