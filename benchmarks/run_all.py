"""Every benchmark in one command: `python benchmarks/run_all.py` writes benchmarks/RESULTS.md.

Sections (each figure a ratio of two things measured on this machine, in this one process; the sweep runner's
two sides each in a fresh process of their own, so that cold compiles are honest):
1. gradient flow vs gradient descent to the flow's limit (benchmarks/flow.py: gradient evaluations and time);
2. a batch of runs in one batched call vs one call per run (benchmarks/flow.py), and the grouped sweep
   runner vs the same sweep run one at a time, without and with theory checks (benchmarks/sweep.py);
3. the exact regression prediction: damped Newton on the dual vs SciPy SLSQP on the primal (benchmarks/theory.py);
4. a reference GD loop written the way published implicit-bias code does it (benchmarks/reference_gd.py: Python
   loop, NumPy, one run at a time) vs ltn's compiled GD and ltn's flow, on the same problem;
5. classification: direction to the l1 max-margin solution and log-loss reached, flow vs GD (benchmarks/flow.py);
6. reach: the stiff cases of issue 13 (small scales at depth 3-4, Woodworth at alpha = 1e-4, classification far
   out in log-loss), ltn vs scipy LSODA and Radau with the exact Jacobian (benchmarks/reach.py);
7. cold start: the quick start's `ltn run` in fresh processes, with an empty and a warm compilation cache, split
   into import, tracing, lowering, compilation and solves (benchmarks/cold_start.py);
8. compiler options: the flow's programs compiled with XLA's defaults vs ltn's options, compile and run time
   (benchmarks/compile_options.py);
9. Kvaerno5's stage solves on one run, the dense chord vs Newton-GMRES by network size
   (benchmarks/linear_algebra.py).
Sections 1-5 take about 3 minutes on 2 CPU cores; section 6 up to the scipy cap (`--scipy-cap`, 300 s) per
unfinished scipy solve, so it can take half an hour; section 9 about 8 minutes. `--quick` shrinks every section
(for a smoke test).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import ltn  # noqa: E402
from _common import machine, markdown_table, timed  # noqa: E402


def section_flow_vs_descent() -> str:
    import flow

    return flow.regression_flow_vs_descent()


def section_batching(runs_per_scale: int, quick: bool) -> str:
    import flow
    import sweep

    batching = flow.batch_throughput(sizes=flow.BATCH_SIZES[:1], runs=8) if quick else flow.batch_throughput()
    stepped = flow.stepped_batches(2, 4, quick=True) if quick else flow.stepped_batches()
    return (batching + "\n" + stepped + "\n" + sweep.compare(runs_per_scale, check=False) + "\n"
            + sweep.compare(runs_per_scale, check=True))


def section_theory(d: int, n: int, alpha: float, maxiter: int) -> str:
    import theory

    from ltn.data import sparse_regression
    from ltn.theory import odeco_regression_limit

    problem = sparse_regression(0, n, d, 5)
    X, y = problem.X, problem.y
    net = ltn.Diagonal(d, 2)
    params0 = net.init(None, alpha, kind="theorem")
    solution, newton = timed(lambda: odeco_regression_limit(net, X, y, params0).beta, repeat=3)
    beta = np.asarray(solution)
    start = time.perf_counter()
    result = theory.slsqp(X, y, alpha, maxiter)
    slsqp_time = time.perf_counter() - start
    residual = lambda b: np.linalg.norm(X @ b - y) / np.linalg.norm(y)  # noqa: E731
    gap = np.linalg.norm(beta - result.x) / np.linalg.norm(beta)
    rows = [["damped Newton on the dual (JAX, compiled)", f"{newton:.4f}", f"{residual(beta):.1e}", "-"],
            [f"SciPy SLSQP on the primal ({result.nit} iterations, {'converged' if result.success else result.message})",
             f"{slsqp_time:.2f}", f"{residual(result.x):.1e}", f"{gap:.1e}"]]
    return (f"### Exact regression prediction: Newton vs SLSQP (Diagonal depth 2, theorem init alpha = {alpha:g}, "
            f"d = {d}, n = {n}, 5-sparse)\n\n"
            + markdown_table(["solver", "wall s", "interpolation residual", "rel. gap to Newton"], rows)
            + f"\n\nSLSQP / Newton time: **{slsqp_time / newton:.0f}x**.\n")


def section_reference(steps_cap: int) -> str:
    import reference_gd

    from ltn.data import sparse_regression
    from ltn.theory import predict

    problem = sparse_regression(seed=0, n=20, d=100, sparsity=3)
    X, y = problem.X, problem.y
    net = ltn.Diagonal(100, 2)
    alpha = 0.1
    params0 = net.init(None, alpha, kind="theorem")
    limit = np.asarray(predict(net, X, y, init=params0).beta)
    error = lambda b: float(np.linalg.norm(np.asarray(b) - limit) / np.linalg.norm(limit))  # noqa: E731
    step = 0.5 / np.linalg.norm(X, 2) ** 2
    start = time.perf_counter()
    ref_beta, ref_evals = reference_gd.reference_gd(X, y, alpha, step, steps_cap)
    ref_time = time.perf_counter() - start
    gd, gd_time = timed(lambda: ltn.gradient_descent(net, params0, X, y, learning_rate=step, max_steps=ref_evals,
                                                     gtol=1e-300), repeat=2)
    fl, fl_time = timed(lambda: ltn.gradient_flow(net, params0, X, y), repeat=2)
    rows = [[f"reference GD loop (NumPy, step 0.5/||X||^2, {ref_evals} steps)", ref_evals, f"{ref_time:.2f}",
             f"{error(ref_beta):.1e}"],
            [f"ltn.gradient_descent (compiled, same step, {int(gd.stats.steps)} steps)", int(gd.stats.grad_evals),
             f"{gd_time:.2f}", f"{error(gd.beta):.1e}"],
            ["ltn.gradient_flow (tsit5, rtol 1e-11)", int(fl.stats.grad_evals), f"{fl_time:.3f}",
             f"{error(fl.beta):.1e}"]]
    return ("### Reference GD loop vs ltn (Diagonal depth 2, d = 100, n = 20, theorem init alpha = 0.1)\n\n"
            + markdown_table(["method", "gradient evaluations", "wall s (compiled)", "rel. error to the flow's limit"],
                             rows)
            + f"\n\nSame steps, reference loop / compiled GD: **{ref_time / gd_time:.1f}x** wall time. Reference loop / "
              f"flow: **{ref_time / fl_time:.0f}x** wall time, and the flow lands {error(ref_beta) / max(error(fl.beta), 1e-300):.0e}"
              f" times closer to the limit (GD's step-size bias, docs/theory.md §9).\n")


def section_classification() -> str:
    import flow

    return flow.classification_direction()


def section_reach(quick: bool, cap_s: float) -> str:
    import reach

    return reach.reach(quick=quick, cap_s=cap_s)


def section_cold_start(repeats: int) -> str:
    from cold_start import cold_start

    return "### Cold start: `ltn run configs/quickstart.toml` in a fresh process, empty cache then warm\n\n" + \
        cold_start(repeats=repeats) + "\n"


def section_compile_options(quick: bool) -> str:
    import compile_options

    return compile_options.compare(quick)


def section_linear_algebra(quick: bool) -> str:
    import linear_algebra

    return linear_algebra.compare(quick)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not the reported numbers")
    parser.add_argument("--scipy-cap", type=float, default=300.0, help="seconds per scipy solve in section 6")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    gpu = any(d.platform == "gpu" for d in jax.devices())
    header = (f"# Benchmark results\n\nWritten by `python benchmarks/run_all.py` on "
              f"{datetime.date.today().isoformat()}.\n\nMachine: {machine()}.\n"
              + ("" if gpu else "No GPU was available in this session: every number below is CPU-only.\n"))
    sections = []
    steps = [("flow vs GD", lambda: section_flow_vs_descent() if not args.quick else ""),
             ("batching", lambda: section_batching(4 if args.quick else 64, args.quick)),
             ("theory", lambda: section_theory(200, 20, 0.1, 200) if args.quick else section_theory(400, 40, 0.1, 300)),
             ("reference", lambda: section_reference(20_000 if args.quick else 200_000)),
             ("classification", lambda: "" if args.quick else section_classification()),
             ("reach", lambda: section_reach(args.quick, args.scipy_cap)),
             ("cold start", lambda: section_cold_start(1 if args.quick else 3)),
             ("compiler options", lambda: section_compile_options(args.quick)),
             ("linear algebra", lambda: section_linear_algebra(args.quick))]
    for name, run in steps:
        t0 = time.perf_counter()
        text = run()
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
        if text:
            sections.append(text)
            print(text)
    text = header + "\n" + "\n".join(sections) + f"\nTotal wall time of run_all: {time.perf_counter() - started:.0f} s.\n"
    with open(args.out, "w") as handle:
        handle.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
