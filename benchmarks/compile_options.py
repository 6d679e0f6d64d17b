"""ltn's XLA options against XLA's defaults, on the flow's own programs, in one process
(run: `python benchmarks/compile_options.py [--quick] [--brief]`).

Per program (a case of benchmarks/reach.py and a method: the explicit probe of `solver="auto"`, 2000 Tsit5 steps;
the implicit method `auto` continues with, from the start to the case's end): the seconds to compile it with each
side's options, each in a fresh process (a process compiles a module once; three rounds, the sides in a rotated
order, median), then in this process the best of three runs of each (rotated), and whether every side reaches the
same point as XLA's defaults (steps; the largest relative difference in beta: the compilers may round
differently). The sides: XLA's defaults, the elemental emitters alone, and `ltn._compile.compiler_options()`.

`--brief`: the explicit probe compiled for speed (ltn's options) against compiled as a brief program (LLVM O0),
on batches of 1 to 256 runs, next to the choice `auto` makes (`_brief_first_round`): compile and run seconds of
each, and their sums.
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
from ltn.flow._gradient_flow import _brief_first_round, _compiled_flow, _origin, round_work  # noqa: E402
from ltn.flow._options import flow_options  # noqa: E402
from ltn.flow._stiffness import EXPLICIT_PROBE_STEPS, implicit_for_auto  # noqa: E402
from ltn.losses import task_of  # noqa: E402

CASES = ("regression, diagonal L = 4", "Woodworth, diagonal", "classification, diagonal L = 2, d = 30",
         "classification, fully connected (30, 30), d = 30")
QUICK_CASES = ("regression, diagonal L = 3, alpha = 0.1", "classification, diagonal L = 2, d = 6")
REPEATS = 3
# Each side's options by name (None: XLA's defaults); "ltn" is what ltn compiles with.
SIDES = {"defaults": lambda: None, "emitters": lambda: {"xla_cpu_use_fusion_emitters": False},
         "ltn": compiler_options}
TIERS = {"ltn": compiler_options, "brief": lambda: compiler_options(brief=True)}
# The probe on batches (case, batch sizes): small problems, a batch where the lockstep loop's O0 code loses, and
# vmapped classification batches.
BRIEF_ROWS = (("regression, diagonal L = 4", (1, 8, 64, 256)), ("regression, diagonal L = 3, alpha = 0.01", (1,)),
              ("Woodworth, diagonal", (1, 2)), ("classification, diagonal L = 2, d = 30", (2, 8, 64)),
              ("classification, fully connected (30, 30), d = 30", (1, 4)))
QUICK_BRIEF_ROWS = (("regression, diagonal L = 3, alpha = 0.1", (1, 2)), ("classification, diagonal L = 2, d = 6",
                                                                          (2,)))
BRIEF_REPEATS = 2


def _program(case: reach.Case, solver: str, batch: int = 1):
    """The flow's solve for `case` and `solver` (not jitted) and its arguments: the case's run, or `batch` runs
    from its initialisation scaled by 1, 1.01, 1.02, ..."""
    options = {**case.options(), "solver": solver, **({"max_steps": EXPLICIT_PROBE_STEPS} if solver == "tsit5" else {})}
    opts = flow_options(options).with_default_target(task_of(case.loss))
    params0, _ = as_batch(case.net, case.params0, jnp.asarray(case.X))
    scales = 1 + 0.01 * jnp.arange(batch)
    params0 = tuple(jnp.repeat(leaf, batch, axis=0) * scales.reshape(-1, *[1] * (leaf.ndim - 1)) for leaf in params0)
    X, y = jnp.asarray(case.X), jnp.asarray(case.y)
    solve = _compiled_flow(case.net, case.loss, solver, opts.checkpoints, opts.reparametrize).__wrapped__
    return solve, (*_origin(case.net, case.loss, opts, params0, X, y), jnp.ones(batch, bool), X, y, opts)


def _compile_s(case: reach.Case, solver: str, side: str, batch: int = 1) -> float:
    """Seconds to compile the program with `side`'s options (a key of SIDES or TIERS), in a fresh process."""
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--compile", case.name, solver, side,
                            str(batch)], capture_output=True, text=True, check=True)
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


def _rotated(i: int, sides=SIDES) -> list[str]:
    """The sides in round `i`'s order: each side goes first once in as many rounds as there are sides."""
    names = list(sides)
    return names[i % len(names):] + names[:i % len(names)]


def compare(quick: bool = False) -> str:
    """The markdown section: one line per program."""
    names = QUICK_CASES if quick else CASES
    chosen = [case for case in reach.cases(quick) if any(case.name.startswith(name) for name in names)]
    rows = []
    for case in chosen:
        for solver in ("tsit5", implicit_for_auto(task_of(case.loss))):
            solve, args = _program(case, solver)
            compile_s = {side: [] for side in SIDES}
            for i in range(REPEATS):
                for side in _rotated(i):
                    compile_s[side].append(_compile_s(case, solver, side))
            compiled = {side: _compiled(solve, args, options())[0] for side, options in SIDES.items()}
            runs = {side: [] for side in SIDES}
            for i in range(REPEATS):
                for side in _rotated(i):
                    runs[side].append(_timed_run(compiled[side], args))
            best = {side: min(runs[side], key=lambda pair: pair[0]) for side in SIDES}
            medians = {side: statistics.median(compile_s[side]) for side in SIDES}
            beta = {side: np.asarray(jax.vmap(case.net.beta)(best[side][1].params)) for side in SIDES}
            scale = np.max(np.abs(beta["defaults"]))
            rows.append([case.name, solver, *(f"{medians[side]:.2f}" for side in SIDES),
                         f"{medians['defaults'] / medians['ltn']:.2f}x", *(f"{best[side][0]:.3f}" for side in SIDES),
                         f"{best['defaults'][0] / best['ltn'][0]:.2f}x",
                         " / ".join(str(int(best[side][1].steps[0])) for side in SIDES),
                         " / ".join(f"{np.max(np.abs(beta[side] - beta['defaults'])) / scale:.1e}"
                                    for side in list(SIDES)[1:])])
            print(rows[-1], file=sys.stderr)
    header = ["case", "program", "compile, XLA defaults (s)", "compile, emitters (s)", "compile, ltn (s)",
              "compile ratio", "run, XLA defaults (s)", "run, emitters (s)", "run, ltn (s)", "run ratio",
              "steps (defaults / emitters / ltn)", "max |beta difference| / max |beta| (emitters / ltn)"]
    return ("### Compiler options: XLA's defaults vs ltn's, on the flow's programs (`benchmarks/compile_options.py`)"
            f"\n\nltn's options: {compiler_options()}; \"emitters\": the elemental emitters alone "
            f"({SIDES['emitters']()}). Tsit5: `auto`'s explicit probe ({EXPLICIT_PROBE_STEPS} steps); the implicit "
            "method: the one `auto` continues with (kvaerno5 for regression, bdf for classification), from the start "
            f"to the case's end. Compile: median of {REPEATS} fresh processes per side, in rotated order. Run: best "
            f"of {REPEATS} in one process, rotated. Ratios: XLA's defaults / ltn's (above 1: ltn's is faster). Beta: "
            "each side against XLA's defaults at the program's end (the probe stops on its step budget, so there "
            "the sides compare points at slightly different times).\n\n"
            + markdown_table(header, rows) + "\n")


def compare_brief(quick: bool = False) -> str:
    """The markdown section of `--brief`: one line per case and batch size."""
    rows = []
    for name, batches in QUICK_BRIEF_ROWS if quick else BRIEF_ROWS:
        case = next(case for case in reach.cases(quick) if case.name.startswith(name))
        for batch in batches:
            solve, args = _program(case, "tsit5", batch)
            compile_s = {tier: [] for tier in TIERS}
            for i in range(BRIEF_REPEATS):
                for tier in _rotated(i, TIERS):
                    compile_s[tier].append(_compile_s(case, "tsit5", tier, batch))
            compiled = {tier: _compiled(solve, args, options())[0] for tier, options in TIERS.items()}
            runs = {tier: [] for tier in TIERS}
            for i in range(BRIEF_REPEATS):
                for tier in _rotated(i, TIERS):
                    runs[tier].append(_timed_run(compiled[tier], args)[0])
            seconds = {tier: (statistics.median(compile_s[tier]), min(runs[tier])) for tier in TIERS}
            brief = _brief_first_round(case.net, case.X, batch, task_of(case.loss))
            rows.append([case.name, str(batch), f"{round_work(case.net, case.X, batch):.1e}",
                         *(f"{c:.2f} / {r:.3f} / {c + r:.2f}" for c, r in seconds.values()),
                         "brief" if brief else "for speed"])
            print(rows[-1], file=sys.stderr)
    header = ["case", "batch", "work: batch x max(n x parameters, 1000)", "compiled for speed: compile / run / sum (s)",
              "brief: compile / run / sum (s)", "auto compiles it"]
    return ("### Brief programs: `auto`'s explicit probe compiled for speed or as a brief program "
            "(`benchmarks/compile_options.py --brief`)\n\n"
            f"The probe ({EXPLICIT_PROBE_STEPS} Tsit5 steps) of `batch` runs. For speed: {TIERS['ltn']()}; brief: "
            f"{TIERS['brief']()}. Compile: median of {BRIEF_REPEATS} fresh processes per side, rotated; run: best "
            f"of {BRIEF_REPEATS} in this process.\n\n" + markdown_table(header, rows) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny cases: a smoke test, not the reported numbers")
    parser.add_argument("--brief", action="store_true", help="the probe compiled for speed or as a brief program")
    parser.add_argument("--compile", nargs=4, metavar=("CASE", "SOLVER", "SIDE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.compile:  # a child of _compile_s
        name, solver, side, batch = args.compile
        case = next(case for quick in (False, True) for case in reach.cases(quick) if case.name == name)
        print(_compiled(*_program(case, solver, int(batch)), {**SIDES, **TIERS}[side]())[1])
        return
    print(f"Machine: {machine()}.\n\n" + (compare_brief(args.quick) if args.brief else compare(args.quick)))


if __name__ == "__main__":
    main()
