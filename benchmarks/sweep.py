"""Grouped, vmapped sweep runner vs the same runs one at a time.

    python benchmarks/sweep.py [--runs-per-scale 64] [--no-check]

Each side runs in a fresh Python process (so "cold" is honest: every compile of the process is included, and
neither side inherits the other's compiled functions), through `ltn.sweep.run_sweep`, twice: the first sweep is
cold, the second (into a new folder, same process) is warm. Both include everything: data, inits, solves,
theory checks, result writing. The grouped side solves all runs of a group in one `gradient_flow` call; the
baseline solves each run in a call of its own (one compile, reused). Solver work is counted too (solver steps:
the same on both sides, since every run in a batch keeps its own steps). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIG = """
name = "benchmark"
task = "regression"
seeds = {seeds}
data = {{ kind = "sparse_gaussian", n = 10, d = 30, sparsity = 3 }}
network = {{ kind = "diagonal", depth = 2 }}
init = {{ kind = "gaussian", scale = [0.25, 0.5, 0.75, 1.0] }}
check = {{ enabled = {check} }}
"""


def worker(runs_per_scale: int, check: bool, grouped: bool) -> dict:
    """Run in a fresh process: the same sweep twice (cold, then warm); wall and solver seconds of each."""
    import ltn  # noqa: F401  (float64)
    from ltn.sweep import loads_config, run_sweep

    sweep = loads_config(CONFIG.format(seeds=list(range(runs_per_scale)), check="true" if check else "false"),
                         source="benchmark")
    out = {}
    for cache in ("cold", "warm"):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            rows = run_sweep(sweep, folder, progress=False, grouped=grouped).rows
            wall = time.perf_counter() - start
        # Each run carries its batch's wall time and size: every batch is counted once.
        solve = sum(row["group_wall_time"] / row["group_size"] for row in rows)
        out[cache] = {"wall": wall, "solve": solve, "steps": sum(row["steps"] for row in rows), "runs": len(rows),
                      "groups": len({row["group_id"] for row in rows}) if grouped else len(rows),
                      "passed": sum(bool(row["passed"]) for row in rows)}
    return out


def measure(runs_per_scale: int, check: bool, grouped: bool) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", "grouped" if grouped else "single",
               "--runs-per-scale", str(runs_per_scale)] + ([] if check else ["--no-check"])
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(runs_per_scale: int, check: bool) -> str:
    """Both runners, cold and warm, on the benchmark config: a markdown section with the ratios."""
    from _common import markdown_table

    results = {grouped: measure(runs_per_scale, check, grouped) for grouped in (True, False)}
    rows = [[cache, "grouped (batched solve)" if grouped else "one run at a time", r[cache]["groups"],
             f"{r[cache]['wall']:.2f}", f"{r[cache]['solve']:.2f}", r[cache]["steps"], r[cache]["passed"]]
            for cache in ("cold", "warm") for grouped, r in results.items()]
    ratios = "; ".join(
        f"{cache}: **{results[False][cache]['wall'] / results[True][cache]['wall']:.1f}x** all in, "
        f"{results[False][cache]['solve'] / results[True][cache]['solve']:.1f}x solver calls only"
        for cache in ("cold", "warm"))
    runs = results[True]["cold"]["runs"]
    return (f"### Sweep runner: {runs} runs grouped vs one at a time (benchmarks/sweep.py: diagonal depth 2, n = 10, "
            f"d = 30, Gaussian init at 4 scales, default flow options, theory check {'on' if check else 'off'})\n\n"
            + markdown_table(["compile cache", "runner", "groups solved", "wall s (all in)", "solver s",
                              "solver steps", "runs passed"], rows)
            + f"\n\nSpeed-up of the grouped runner (goal >= 10x): {ratios}. Each side in a fresh process; cold is "
              "its first sweep (every compile included), warm its second.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-scale", type=int, default=64, help="seeds per scale (4 scales)")
    parser.add_argument("--no-check", action="store_true", help="skip the theory check of every run")
    parser.add_argument("--worker", choices=("grouped", "single"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.runs_per_scale, not args.no_check, args.worker == "grouped")))
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    print(f"{os.cpu_count()} CPUs\n")
    print(compare(args.runs_per_scale, check=not args.no_check))


if __name__ == "__main__":
    main()
