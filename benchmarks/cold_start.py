"""Cold and warm start of `ltn run`: where the seconds of the quick start go.

    python benchmarks/cold_start.py [--config configs/quickstart.toml] [--repeats 3] [--no-cache] [--programs]

Each repeat runs the `ltn run` command twice, each time in a fresh Python process and into a fresh results
folder: first with an empty compilation cache (cold), then with the cache the first process left behind (warm).
`--no-cache` runs both with the cache off (`LTN_CACHE_DIR=""`): the warm side then measures a second run without
the cache. Prints a markdown table of the median over the repeats (and the range), split into phases:

- process: the whole `ltn run` process, interpreter start to exit (what a user waits for); process CPU: its
  user + system CPU seconds (less sensitive than wall time to other load on a shared machine);
- import: `import ltn` and the sweep machinery (JAX, diffrax, cvxpy, ...);
- solve / checks / write: the sweep runner's phases (flow solves per group, theory checks, result files);
- trace, lower, compile: JAX's own event durations (`jax.monitoring`) summed over every program: tracing to a
  jaxpr, lowering to MLIR, and XLA compilation (a persistent-cache hit counts its retrieval here);
- programs: XLA compilations requested, of which cache hits, and programs not written to the cache (a reason
  from JAX's log, e.g. host callbacks); `--programs` lists every program with its trace/lower/compile seconds.

Every warm run's results must equal its cold run's (all columns but timings): a cached program has to give the
results a fresh compile gives. The machine running this is usually shared: compare the cold, warm and no-cache columns of one invocation.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "quickstart.toml")
PHASES = ("process", "process CPU", "import", "solve", "checks", "write", "trace", "lower", "compile")


def worker(config: str, out: str) -> dict:
    """Run `ltn run CONFIG --out OUT` in this process and time its phases (see the module docstring)."""
    started = time.perf_counter()
    import jax  # noqa: F401  (its import is part of ltn's)

    import ltn  # noqa: F401
    import ltn.cli
    import ltn.sweep._runner as runner
    from jax import monitoring
    from ltn.sweep._results import ResultsStore

    imported = time.perf_counter()
    seconds: dict[str, float] = defaultdict(float)
    events: dict[str, int] = defaultdict(int)
    programs: dict[str, dict[str, list[float]]] = defaultdict(dict)  # name -> phase -> seconds of each
    names = {"/jax/core/compile/jaxpr_trace_duration": "trace",
             "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
             "/jax/core/compile/backend_compile_duration": "compile"}

    def on_duration(event, duration, **kwargs):
        if event in names:
            # Tracing names a program `f`, lowering and compiling name it `jit(f)`.
            name = str(kwargs.get("fun_name", "?")).removeprefix("jit(").removesuffix(")")
            seconds[names[event]] += duration
            programs[name].setdefault(names[event], []).append(duration)

    def on_event(event, **kwargs):
        events[event.rsplit("/", 1)[-1]] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(on_event)

    not_cached: list[str] = []

    class NotWritten(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Not writing persistent cache entry"):
                not_cached.append(message)

    compiler_log = logging.getLogger("jax._src.compiler")
    compiler_log.setLevel(logging.DEBUG)
    compiler_log.addHandler(NotWritten(logging.DEBUG))

    def timed(phase, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[phase] += time.perf_counter() - start
        return wrapper

    runner._solve_part = timed("solve", runner._solve_part)
    runner.check_group = timed("checks", runner.check_group)
    runner.write_manifest = timed("write", runner.write_manifest)
    ResultsStore.append = timed("write", ResultsStore.append)
    ResultsStore.merge_trajectories = timed("write", ResultsStore.merge_trajectories)
    status = ltn.cli.main(["run", config, "--out", out, "--no-progress"])
    return {"status": status, "import": imported - started, "run": time.perf_counter() - imported,
            **seconds, "events": dict(events), "not_cached": not_cached,
            "programs": dict(programs)}


def run_process(config: str, out: str, cache_dir: str) -> dict:
    """One `ltn run` in a fresh interpreter, timed from outside (interpreter start to exit)."""
    env = {**os.environ, "LTN_CACHE_DIR": cache_dir}
    report = os.path.join(out + ".json")
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--worker", config, out, report], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(report) as file:
        result = json.load(file)
    if result["status"] != 0:
        raise SystemExit(f"ltn run exited with status {result['status']} ({out})")
    result["process"] = wall
    result["process CPU"] = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    result["out"] = out
    return result


def same_results(first: str, second: str) -> list[str]:
    """Result columns that differ between two results folders of the same config (a cached program must give
    the results a fresh compile gives): everything but timings and run-time bookkeeping."""
    from ltn.sweep import read_rows

    ignore = {"wall_time", "group_wall_time"}
    rows_a = {row["run_id"]: row for row in read_rows(first)}
    rows_b = {row["run_id"]: row for row in read_rows(second)}
    if rows_a.keys() != rows_b.keys():
        return ["run ids"]
    return sorted({column for rid, row in rows_a.items() for column, value in row.items()
                   if column not in ignore and repr(value) != repr(rows_b[rid][column])})


def _cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def table(sides: dict[str, list[dict]]) -> str:
    header = "| phase (s) | " + " | ".join(sides) + " |"
    lines = [header, "|---|" + "---|" * len(sides)]
    for phase in PHASES:
        lines.append(f"| {phase} | " + " | ".join(_cell([r.get(phase, 0.0) for r in runs]) for runs in sides.values())
                     + " |")
    for label, key in (("XLA compilations", "compile_requests_use_cache"), ("cache hits", "cache_hits"),
                       ("cache misses", "cache_misses")):
        lines.append(f"| {label} | " + " | ".join(
            _cell([float(r["events"].get(key, 0)) for r in runs]).replace(".0", "") for runs in sides.values()) + " |")
    for label, phase in (("programs compiled", "compile"), ("programs traced", "trace")):
        lines.append(f"| {label} | " + " | ".join(
            _cell([float(sum(len(p.get(phase, [])) for p in r["programs"].values())) for r in runs]).replace(".0", "")
            for runs in sides.values()) + " |")
    return "\n".join(lines)


def program_table(result: dict) -> str:
    """Every program of one run: how often it was traced, lowered and compiled, with the seconds of each."""
    def cell(values):
        each = f" ({', '.join(f'{v:.2f}' for v in values)})" if 1 < len(values) <= 4 else ""
        return f"{sum(values):.2f}{each}"

    rows = sorted(result["programs"].items(), key=lambda item: -sum(map(sum, item[1].values())))
    lines = ["| program | traced | trace s | lowered | lower s | compiled | compile s |", "|---|---|---|---|---|---|---|"]
    for name, phases in rows:
        lines.append(f"| {name} | " + " | ".join(f"{len(phases.get(phase, []))} | {cell(phases.get(phase, []))}"
                                                  for phase in ("trace", "lower", "compile")) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-cache", action="store_true", help="both runs with the compilation cache off")
    parser.add_argument("--programs", action="store_true", help="list every program of the last cold/warm run")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        config, out, report = args.worker
        result = worker(config, out)
        with open(report, "w") as file:
            json.dump(result, file)
        return
    print(cold_start(args.config, args.repeats, args.no_cache, args.programs))


def cold_start(config: str = DEFAULT_CONFIG, repeats: int = 3, no_cache: bool = False, programs: bool = False
               ) -> str:
    """The markdown report of `repeats` cold/warm pairs of `ltn run CONFIG` (see the module docstring)."""
    cold, warm = [], []
    with tempfile.TemporaryDirectory(prefix="ltn-cold-start-") as scratch:
        for repeat in range(repeats):
            cache = "" if no_cache else os.path.join(scratch, f"cache{repeat}")
            cold.append(run_process(config, os.path.join(scratch, f"cold{repeat}"), cache))
            warm.append(run_process(config, os.path.join(scratch, f"warm{repeat}"), cache))
            print(f"repeat {repeat}: cold {cold[-1]['process']:.1f} s, warm {warm[-1]['process']:.1f} s",
                  file=sys.stderr)
            differing = same_results(cold[-1]["out"], warm[-1]["out"])
            if differing:
                raise SystemExit(f"the warm run's results differ from the cold run's in {differing}")
    labels = ("first run, no cache", "second run, no cache") if no_cache else ("cold (empty cache)",
                                                                               "warm (second run)")
    out = [f"`ltn run {os.path.relpath(config, ROOT)}`, {repeats} repeat(s), median (range), seconds\n",
           table({labels[0]: cold, labels[1]: warm})]
    for label, runs in zip(labels, (cold, warm)):
        missing = Counter(f"{message.split(' because ')[1].split(' (')[0]}: {message.split(chr(39))[1]}"
                          for message in runs[-1]["not_cached"])
        if missing and not no_cache:
            out.append(f"\n{label}, last repeat: programs not written to the cache\n"
                       + "\n".join(f"- {count} x {reason}" for reason, count in sorted(missing.items())))
    if programs:
        for label, runs in zip(labels, (cold, warm)):
            out.append(f"\n{label}, last repeat, per program:\n\n{program_table(runs[-1])}")
    return "\n".join(out)


if __name__ == "__main__":
    main()
