"""Kvaerno5's stage solves on a single run: the dense chord against Newton-GMRES, by network size
(run: `python benchmarks/linear_algebra.py [--quick]`).

The dense chord (`ltn/flow/_chord.py`) forms the Jacobian (one Hessian-vector product per parameter) and inverts
`I - h gamma J` where the iteration asks for it, then pays a matrix-vector product per stage iteration;
Newton-GMRES forms nothing and pays a few Hessian-vector products per GMRES iteration. Which is cheaper depends
on the network's size and on how often the path makes the chord refresh. Per case and side, a fresh process runs
`ltn.gradient_flow` at default options (`solver="auto"`: the Tsit5 probe, then Kvaerno5) with the linear algebra
forced: first call (compilation included, ltn's persistent caches off) and a second call ("warm"); steps, status
and the relative distance of beta to the exact limit (`ltn.predict`). The rule these numbers set is
`ltn.flow._solvers.dense_max_parameters`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

import ltn
from ltn.data import sparse_regression
from ltn.flow import _solvers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, markdown_table  # noqa: E402

# (depth, d, n, alpha, sparsity): diagonal networks, theorem initialisation, sparse regression (seed 0).
CASES = [(4, 64, 20, 0.01, 10), (3, 100, 30, 0.01, 16), (3, 130, 40, 0.01, 3), (4, 100, 30, 0.01, 16),
         (3, 160, 40, 0.01, 3), (5, 100, 30, 0.02, 16), (3, 200, 40, 0.01, 3), (3, 300, 60, 0.01, 50)]
QUICK_CASES = [(3, 50, 10, 0.05, 3)]
SIDES = ("dense", "gmres")


def _problem(depth, d, n, alpha, sparsity):
    problem = sparse_regression(seed=0, n=n, d=d, sparsity=sparsity)
    net = ltn.Diagonal(d, depth)
    return net, net.init(None, alpha, kind="theorem"), problem.X, problem.y


def _child(case: tuple, side: str) -> dict:
    """In a fresh process: the case with the side's linear algebra, first and second call."""
    limit = 10**9 if side == "dense" else 0
    _solvers.CHORD_MAX_PARAMETERS = _solvers.DENSE_MAX_PARAMETERS = limit
    net, params0, X, y = _problem(*case)
    exact = np.asarray(ltn.predict(net, X, y, init=params0).beta)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        flow = jax.block_until_ready(ltn.gradient_flow(net, params0, X, y))
        times.append(time.perf_counter() - start)
    error = float(np.linalg.norm(np.asarray(flow.beta) - exact) / np.linalg.norm(exact))
    return {"first": times[0], "warm": times[1], "steps": int(flow.stats.steps), "status": flow.status_name,
            "solver": flow.stats.solver_name, "error": error}


def _measure(case: tuple, side: str) -> dict:
    output = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps([case, side])],
                            check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])


def compare(quick: bool = False) -> str:
    rows = []
    for case in QUICK_CASES if quick else CASES:
        depth, d, n, alpha, sparsity = case
        dense, gmres = (_measure(case, side) for side in SIDES)
        cell = lambda m: (f"{m['first']:.2f} / {m['warm']:.2f} s, {m['steps']} steps, {m['status']}, "  # noqa: E731
                          f"{m['error']:.1e}")
        rows.append([f"L = {depth}, d = {d}, n = {n}, alpha = {alpha:g}, {sparsity}-sparse", depth * d,
                     cell(dense), cell(gmres), f"{gmres['first'] / dense['first']:.2f}x",
                     f"{gmres['warm'] / dense['warm']:.2f}x"])
    header = ["case (diagonal, theorem init)", "parameters", "dense chord: first / warm, steps, status, error",
              "Newton-GMRES: first / warm, steps, status, error", "GMRES / dense: first", "GMRES / dense: warm"]
    return (f"### Kvaerno5's stage solves on one run: dense chord vs Newton-GMRES (`benchmarks/linear_algebra.py`)\n\n"
            f"Machine: {machine()}. Each side in a fresh process; first call with compilation, then warm.\n\n"
            + markdown_table(header, rows) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case: a smoke test")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        case, side = json.loads(args.child)
        print(json.dumps(_child(tuple(case), side)))
        return
    print(compare(args.quick))


if __name__ == "__main__":
    main()
