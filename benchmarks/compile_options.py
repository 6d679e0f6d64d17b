"""ltn's XLA options against XLA's defaults, on the flow's own programs, in one process
(run: `python benchmarks/compile_options.py [--quick]`).

Per program (a case of benchmarks/reach.py and a method: the explicit probe of `solver="auto"`, 2000 Tsit5 steps;
the implicit method from the start, to the case's end): the seconds to compile it with XLA's defaults and with
`ltn._compile.compiler_options()`, each in a fresh process (a process compiles a module once; three pairs,
alternated, median), then in this process the best of three runs of each (alternated), and whether both reach the
same point (steps; the largest relative difference in beta: the two compilers may round differently).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import reach  # noqa: E402
from _common import machine, markdown_table  # noqa: E402

from ltn._compile import compiler_options  # noqa: E402
from ltn.flow._batching import as_batch  # noqa: E402
from ltn.flow._gradient_flow import _compiled_flow  # noqa: E402
from ltn.flow._options import flow_options  # noqa: E402
from ltn.flow._stiffness import EXPLICIT_PROBE_STEPS  # noqa: E402
from ltn.losses import task_of  # noqa: E402

CASES = ("regression, diagonal L = 4", "Woodworth, diagonal", "classification, diagonal L = 2, d = 30",
         "classification, fully connected (30, 30), d = 30")
QUICK_CASES = ("regression, diagonal L = 3, alpha = 0.1", "classification, diagonal L = 2, d = 6")
REPEATS = 3


def _program(case: reach.Case, solver: str):
    """The flow's solve for `case` and `solver` (not jitted) and its arguments."""
    options = {**case.options(), "solver": solver, **({"max_steps": EXPLICIT_PROBE_STEPS} if solver == "tsit5" else {})}
    opts = flow_options(options).with_default_target(task_of(case.loss))
    params0, _ = as_batch(case.net, case.params0, jnp.asarray(case.X))
    batch = params0[0].shape[0]
    solve = _compiled_flow(case.net, case.loss, solver, opts.checkpoints, opts.reparametrize).__wrapped__
    return solve, (params0, params0, jnp.zeros(batch), jnp.ones(batch, bool), jnp.asarray(case.X),
                   jnp.asarray(case.y), opts)


def _compile_s(case: reach.Case, solver: str, side: str) -> float:
    """Seconds to compile the program with `side`'s options ("defaults" or "ltn"), in a fresh process."""
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--compile", case.name, solver, side],
                           capture_output=True, text=True, check=True)
    return float(child.stdout.split()[-1])


def _compiled(solve, args, options):
    lowered = jax.jit(solve, compiler_options=options).lower(*args)
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, time.perf_counter() - start


def _timed_run(compiled, args) -> tuple[float, object]:
    start = time.perf_counter()
    leg = jax.block_until_ready(compiled(*args))
    return time.perf_counter() - start, leg


def compare(quick: bool = False) -> str:
    """The markdown section: one line per program."""
    names = QUICK_CASES if quick else CASES
    chosen = [case for case in reach.cases(quick) if any(case.name.startswith(name) for name in names)]
    ours = compiler_options()
    rows = []
    for case in chosen:
        for solver in ("tsit5", "kvaerno5"):
            solve, args = _program(case, solver)
            compile_s, runs = {"defaults": [], "ltn": []}, {"defaults": [], "ltn": []}
            for i in range(REPEATS):
                for side in (("defaults", "ltn"), ("ltn", "defaults"))[i % 2]:
                    compile_s[side].append(_compile_s(case, solver, side))
            compile_default, compile_tuned = (statistics.median(compile_s[side]) for side in ("defaults", "ltn"))
            compiled = {"defaults": _compiled(solve, args, None)[0], "ltn": _compiled(solve, args, ours)[0]}
            for i in range(REPEATS):
                for side in (("defaults", "ltn"), ("ltn", "defaults"))[i % 2]:
                    runs[side].append(_timed_run(compiled[side], args))
            run_default, leg_default = min(runs["defaults"], key=lambda pair: pair[0])
            run_tuned, leg_tuned = min(runs["ltn"], key=lambda pair: pair[0])
            beta_default, beta_tuned = np.asarray(leg_default.beta), np.asarray(leg_tuned.beta)
            difference = np.max(np.abs(beta_tuned - beta_default)) / np.max(np.abs(beta_default))
            steps = f"{int(leg_default.steps[0])} / {int(leg_tuned.steps[0])}"
            rows.append([case.name, solver, f"{compile_default:.2f}", f"{compile_tuned:.2f}",
                         f"{compile_default / compile_tuned:.2f}x", f"{run_default:.3f}", f"{run_tuned:.3f}",
                         f"{run_default / run_tuned:.2f}x", steps, f"{difference:.1e}"])
            print(rows[-1], file=sys.stderr)
    header = ["case", "program", "compile, XLA defaults (s)", "compile, ltn (s)", "compile ratio",
              "run, XLA defaults (s)", "run, ltn (s)", "run ratio", "steps (defaults / ltn)",
              "max |beta difference| / max |beta|"]
    return ("### Compiler options: XLA's defaults vs ltn's, on the flow's programs (`benchmarks/compile_options.py`)"
            f"\n\nltn's options: {ours}. Tsit5: `auto`'s explicit probe ({EXPLICIT_PROBE_STEPS} steps); "
            f"kvaerno5: the implicit method from the start to the case's end. Compile: median of {REPEATS} fresh "
            f"processes per side, alternated. Run: best of {REPEATS} in one process, alternated. Ratios: XLA's "
            "defaults / ltn's (above 1: ltn's is faster).\n\n"
            + markdown_table(header, rows) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny cases: a smoke test, not the reported numbers")
    parser.add_argument("--compile", nargs=3, metavar=("CASE", "SOLVER", "SIDE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile:  # a child of _compile_s
        name, solver, side = args.compile
        case = next(case for quick in (False, True) for case in reach.cases(quick) if case.name == name)
        print(_compiled(*_program(case, solver), compiler_options() if side == "ltn" else None)[1])
        return
    print(f"Machine: {machine()}.\n\n" + compare(args.quick))


if __name__ == "__main__":
    main()
