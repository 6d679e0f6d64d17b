"""The `ltn` command line.

    ltn run [CONFIG ...] [--out DIR] [--set key=value ...]   run sweeps (default: the packaged quickstart)
    ltn validate CONFIG ...                                  check configs without computing anything
    ltn report DIR                                           summary tables, and the figures of the configs'
                                                             [report] tables as PNGs in the folder

Every command takes `--debug` (before or after the command name), and `--no-cache`: without it, compiled programs
are kept in a persistent cache for later runs (`ltn._cache`: `$LTN_CACHE_DIR`, else `$XDG_CACHE_HOME/ltn`, else
`~/.cache/ltn`). Exit status:

    0  success; for `ltn run`, no judged run failed its check (each passed, or is "consistent": not yet within
       tolerance but converging at the theory's rate, docs/theory.md §12)
    1  some run failed its check (the summary names each one)
    2  bad input: a config, data file, argument or results folder that cannot be used; one message names the
       file, the field and the cause (no traceback; argparse's usage errors are 2 as well)
    3  an internal error, i.e. a bug in ltn: one line, and the traceback with --debug
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import traceback
import warnings

EXIT_FAILED_CHECKS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 3
EXIT_CODES = """exit status:
  0  success (ltn run: no judged run failed its check; each passed or is consistent)
  1  some run failed its check
  2  bad input: config, data file, arguments or results folder (the message names file, field and cause)
  3  internal error (a bug in ltn; --debug prints the traceback)"""
QUICKSTART = "quickstart.toml"
NO_CACHE_HELP = ("do not use the persistent compilation cache (default folder: $LTN_CACHE_DIR, else "
                 "$XDG_CACHE_HOME/ltn, else ~/.cache/ltn; LTN_CACHE_DIR=\"\" turns it off too)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ltn", epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Linear tensor networks: exact gradient flow and checks of the theory of implicit bias.",
    )
    parser.add_argument("--version", action="version", version=f"ltn {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    parser.add_argument("--no-cache", action="store_true", help=NO_CACHE_HELP)
    # Also accepted after the command; SUPPRESS keeps a subcommand from resetting a flag given before it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="print the traceback of an error")
    debug.add_argument("--no-cache", action="store_true", default=argparse.SUPPRESS, help=NO_CACHE_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, **kwargs):
        return commands.add_parser(name, parents=[debug], epilog=EXIT_CODES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    run = command("run", help="run config-driven sweeps and check them against the theory",
                  description="Run sweeps; the exit status says whether every judged run passed.")
    run.add_argument("configs", nargs="*", metavar="CONFIG",
                     help="TOML config file(s); default: the packaged quickstart config")
    run.add_argument("--out", metavar="DIR", help="results folder (default: results/<config name>); a folder "
                     "holding finished runs is resumed, not overwritten")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set flow.rtol=1e-8 --set 'seeds=[0,1]' (repeatable)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-shard", action="store_true", help="solve each group on one device only")
    run.add_argument("--plots", action="store_true", help="also write the report's plots into the folder")
    run.add_argument("--progress", choices=("bar", "lines"), default=None,
                     help="a progress bar, or one line per finished batch (default: a bar on a terminal, lines "
                          "otherwise)")
    run.add_argument("--executor", choices=("local", "ray", "slurm"), default=None,
                     help="where groups are solved: this process (default), one Ray task per group, or one SLURM "
                          "job per group through submitit (default: the config's [executor] table)")
    run.add_argument("--address", metavar="ADDR", help="ray: the cluster's address (default: RAY_ADDRESS, else a "
                     "local Ray started for this sweep)")
    run.add_argument("--partition", metavar="NAME", help="slurm: the partition")
    run.add_argument("--time", type=int, metavar="MINUTES", help="slurm: the time limit of one job")
    run.add_argument("--gpus", type=int, metavar="N", help="GPUs per group (ray: default 1 when the cluster has "
                     "GPUs; slurm: default 0)")

    validate = command("validate", help="validate config files without computing anything")
    validate.add_argument("configs", nargs="+", metavar="CONFIG")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    report = command("report", help="summarise a results folder and write its figures as PNGs",
                     description="Summary tables, and the figures the configs' [report] tables ask for (per "
                                 "experiment defaults where a config has none), as PNGs in the folder.")
    report.add_argument("folder", metavar="DIR")
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.add_argument("--worst", type=int, default=5, metavar="K", help="worst cases listed (default 5)")
    return parser


def packaged_quickstart():
    """The quickstart config shipped inside the package (a context manager yielding its path)."""
    from importlib import resources

    return resources.as_file(resources.files("ltn") / "configs" / QUICKSTART)


def _load_all(paths, overrides):
    from .sweep import load_config

    return [load_config(path, overrides) for path in paths]


def _check_distinct_paths(paths) -> None:
    """Each config once: the same file twice would put every run of it twice into one results folder."""
    from .sweep import ConfigError

    seen: dict[str, str] = {}
    problems = []
    for path in map(os.fspath, paths):
        real = os.path.realpath(path)
        if real in seen:
            problems.append(f"{path}: this config is given twice (also as {seen[real]!r}); give each config once")
        seen.setdefault(real, path)
    if problems:
        raise ConfigError(problems)


def _check_distinct_experiments(sweeps) -> None:
    """Experiments of different configs share one results folder: equal names (or names equal in file names,
    `file_stem`) would mix their rows and overwrite each other's plots."""
    from .sweep import ConfigError, file_stem

    owner: dict[str, tuple[str, str]] = {}
    problems = []
    for sweep in sweeps:
        for experiment in sweep.experiments:
            source, name = owner.setdefault(file_stem(experiment.name), (sweep.source, experiment.name))
            if source != sweep.source:
                problems.append(f"{sweep.source}: experiment {experiment.name!r} clashes with experiment {name!r} "
                                f"of {source} (one results folder would hold the rows and plots of both); rename "
                                f"one, or run the configs into separate --out folders")
    if problems:
        raise ConfigError(problems)


def _describe(sweep) -> str:
    from .sweep import expand, group_runs

    lines = []
    runs_of: dict[str, list] = {}
    for run in expand(sweep):
        runs_of.setdefault(run.experiment, []).append(run)
    for experiment in sweep.experiments:
        runs = runs_of[experiment.name]
        axes = ", ".join(f"{name} x{len(values)}" for name, values in experiment.axes) or "no axes"
        lines.append(f"  {experiment.name}: {runs[0].task}, {len(runs)} runs in {len(group_runs(runs))} "
                     f"compiled group(s); seeds x{len(experiment.seeds)}; {axes}")
    return "\n".join(lines)


def command_validate(args) -> int:
    from .sweep import ConfigError

    status = 0
    for path in args.configs:
        try:
            (sweep,) = _load_all([path], args.overrides)
        except ConfigError as error:
            print(f"invalid: {path}\n{error}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        print(f"valid: {path}\n{_describe(sweep)}")
    return status


def _varying(rows, exclude=("seed",)) -> list[str]:
    from .sweep import varying_columns

    return varying_columns(rows, exclude)


def _label(row, columns) -> str:
    return " ".join(f"{c.split('.', 1)[-1]}={_short(row.get(c))}" for c in columns)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _verdict_counts(rows) -> str:
    """E.g. "3/5 passed, 1 consistent, 1 failed" or "none judged, 2 not judged": passes count among the judged
    runs only."""
    from .sweep import CONSISTENT, FAILED, NOT_JUDGED, PASSED, VERDICTS

    counts = {verdict: sum(row["verdict"] == verdict for row in rows) for verdict in VERDICTS}
    judged = len(rows) - counts[NOT_JUDGED]
    parts = [f"{counts[PASSED]}/{judged} passed" if judged else "none judged"]
    parts += [f"{counts[v]} {v}" for v in (CONSISTENT, FAILED, NOT_JUDGED) if counts[v]]
    return ", ".join(parts)


def summarise(rows) -> str:
    """Per experiment: verdict counts, then every run that did not pass (failed, consistent or not judged), with
    status and reason."""
    from .sweep import CONSISTENT, FAILED, PASSED

    lines = []
    experiments = list(dict.fromkeys(row["experiment"] for row in rows))
    for name in experiments:
        mine = [row for row in rows if row["experiment"] == name]
        kinds = ", ".join(sorted({str(row["check_kind"]) for row in mine}))
        lines.append(f"{name}: {_verdict_counts(mine)} (check: {kinds})")
        varying = _varying(mine, exclude=())
        for row in mine:
            if row["verdict"] != PASSED:
                tag = {FAILED: "FAIL", CONSISTENT: "CONSISTENT"}.get(row["verdict"], "NOT JUDGED")
                lines.append(f"  {tag} {row['run_id']} {_label(row, varying)}: status={row['status']}; "
                             f"{row['reason']}" + (f" [{row['check_error']}]" if row.get("check_error") else ""))
    return "\n".join(lines)


def _executor(args, sweeps, out: str):
    """The executor of the configs' `[executor]` table (one table for all configs), with the flags winning."""
    from .sweep import ConfigError, ExecutorSpec
    from .sweep._executors import make_executor

    tables = {sweep.executor for sweep in sweeps if sweep.executor is not None}
    if len(tables) > 1:
        raise ConfigError([f"{', '.join(sweep.source for sweep in sweeps)}: these configs have different [executor] "
                           f"tables; run them separately, or keep one table"])
    spec = next(iter(tables), ExecutorSpec())
    flags = {"kind": args.executor, "address": args.address, "partition": args.partition, "time": args.time,
             "gpus": args.gpus}
    spec = dataclasses.replace(spec, **{key: value for key, value in flags.items() if value is not None})
    options = dataclasses.asdict(spec)
    return make_executor(options.pop("kind"), out, **options)


def command_run(args) -> int:
    from ._cache import cache_dir
    from .sweep import run_sweep

    with contextlib.ExitStack() as stack:
        paths = args.configs or [stack.enter_context(packaged_quickstart())]
        _check_distinct_paths(paths)
        sweeps = _load_all(paths, args.overrides)
        _check_distinct_experiments(sweeps)
        out = args.out or os.path.join("results", "+".join(s.name for s in sweeps))
        for sweep in sweeps:
            print(f"{sweep.source}\n{_describe(sweep)}")
        outcome = run_sweep(sweeps, out, progress=False if args.no_progress else args.progress,
                            shard=not args.no_shard, executor=_executor(args, sweeps, out),
                            cache=None if args.no_cache else cache_dir())
    print(f"computed {outcome.runs_computed} of {outcome.runs_total} runs in {outcome.groups_computed} "
          f"group(s); results in {outcome.out_dir}")
    print(summarise(outcome.rows))
    if args.plots:
        write_figures(outcome.out_dir)
    failed, not_judged, consistent = outcome.failed, outcome.not_judged, outcome.consistent
    if failed:
        print(f"{len(failed)} of {len(outcome.rows)} runs failed their check", file=sys.stderr)
        return EXIT_FAILED_CHECKS
    judged = len(outcome.rows) - len(not_judged)
    passed = judged - len(consistent)
    print((f"all {judged} judged runs passed" if not consistent else
           f"no judged run failed: {passed} passed, {len(consistent)} consistent (not yet within tolerance, "
           "converging at the theory's rate)")
          + (f"; {len(not_judged)} not judged (no theory applies to them)" if not_judged else ""))
    return 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3g}"
    return str(value)


def _table(header, rows) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, rule, *body])


def _cosine(value) -> str:
    return f"{value:.6f}" if isinstance(value, float) and not math.isnan(value) else "-"


def _finite(values):
    return [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]


def report_text(rows, worst: int = 5) -> str:
    """Summary per group (one compiled solve) and the worst runs of each experiment."""
    from .sweep import FAILED

    out = []
    groups = list(dict.fromkeys(row["group_id"] for row in rows))
    table = []
    for gid in groups:
        mine = [row for row in rows if row["group_id"] == gid]
        experiment_rows = [row for row in rows if row["experiment"] == mine[0]["experiment"]]
        varying = [c for c in _varying(experiment_rows) if c != "init.scale"]
        errors = _finite(row["relative_error"] for row in mine)
        cosines = _finite(row["cosine"] for row in mine)
        certificates = _finite(row["certificate"] for row in mine)
        # Rows carry their batch's wall time and size (a group is solved in one or more batches).
        wall = sum(r["group_wall_time"] / r["group_size"] for r in mine)
        table.append([mine[0]["experiment"], _label(mine[0], varying) or "-", len(mine),
                      _verdict_counts(mine), ",".join(sorted({str(r["status"]) for r in mine})),
                      mine[0]["prediction"] or "-", _fmt(max(errors) if errors else None),
                      f"{min(cosines):.6f}" if cosines else "-", _fmt(max(certificates) if certificates else None),
                      _fmt(max(r["steps"] for r in mine)), _fmt(wall)])
    out.append(_table(["experiment", "group", "runs", "verdicts", "status", "prediction", "max rel. error",
                       "min cosine", "max certificate", "max steps", "wall s"], table))
    for name in dict.fromkeys(row["experiment"] for row in rows):
        mine = [row for row in rows if row["experiment"] == name]
        regression = mine[0]["task"] == "regression"

        def badness(row):
            value = row["relative_error"] if regression else -(row["cosine"] if row["cosine"] is not None else 0)
            return (row["verdict"] != FAILED, -(value if isinstance(value, float) and not math.isnan(value)
                                           else math.inf))

        varying = _varying(mine)
        worst_rows = sorted(mine, key=badness)[:worst]
        out.append(f"\nworst runs of {name}:")
        out.append(_table(["run", "config", "seed", "status", "rel. error", "cosine", "certificate", "verdict"],
                          [[r["run_id"], _label(r, varying) or "-", r["seed"], r["status"],
                            _fmt(r["relative_error"]), _cosine(r["cosine"]), _fmt(r["certificate"]),
                            r["verdict"]] for r in worst_rows]))
    return "\n".join(out)


def command_report(args) -> int:
    from .sweep import read_rows

    rows = read_rows(args.folder)
    if not rows:
        print(f"no results in {args.folder!r} (expected {os.path.join(args.folder, 'results.csv')})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report_text(rows, args.worst))
    if not args.no_plots:
        write_figures(args.folder)
    return 0


def write_figures(folder: str) -> list[str]:
    """Save the figures of a results folder (`ltn.plots.report_figures`) as PNGs in it; returns their paths."""
    from .plots import report_figures

    paths = []
    for name, figure in report_figures(folder):
        path = os.path.join(folder, name)
        figure.savefig(path, dpi=100)
        print(f"wrote {path}")
        paths.append(path)
    return paths


def _one_line_warning(command: str):
    """Warnings (e.g. a results file set aside and recomputed) as one line naming the command, not Python's
    file:line form pointing into ltn's source."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"ltn {command}: warning: {message}", file=sys.stderr if file is None else file)

    return show


def main(argv: list[str] | None = None) -> int:
    """Run one command; every error becomes an exit status and a message (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    command = {"run": command_run, "validate": command_validate, "report": command_report}[args.command]
    from .sweep import ConfigError, ResultsError

    try:
        with warnings.catch_warnings():  # restores the default display on the way out
            warnings.showwarning = _one_line_warning(args.command)
            if not args.no_cache:
                from ._cache import enable_compilation_cache

                enable_compilation_cache()
            return command(args)
    # Input that cannot be used: a config, a results folder (unreadable, corrupt, locked), or a path the system
    # refuses (a file where a folder belongs, a read-only or full disk).
    except (ConfigError, ResultsError, OSError) as error:
        if args.debug:
            traceback.print_exc()
        print(f"invalid config:\n{error}" if isinstance(error, ConfigError) else f"ltn {args.command}: {error}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 - anything else is a bug in ltn: one line, not a traceback
        if args.debug:
            traceback.print_exc()
        first_line = (str(error).strip().splitlines() or [""])[0]
        print(f"ltn {args.command}: internal error ({type(error).__name__}: {first_line})"
              + ("" if args.debug else "; run with --debug for the traceback"), file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
