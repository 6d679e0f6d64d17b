"""The `ltn` command line.

    ltn run [CONFIG ...] [--out DIR] [--set key=value ...]   run sweeps (default: the packaged quickstart)
    ltn validate CONFIG ...                                  check configs without computing anything
    ltn report DIR                                           summary tables and PNG plots of a results folder

`ltn run` exits with status 1 when any run fails its check (a summary names them), 2 for an invalid config.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys

EXIT_FAILED_CHECKS = 1
EXIT_BAD_CONFIG = 2
QUICKSTART = "quickstart.toml"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ltn",
        description="Linear tensor networks: exact gradient flow and checks of the theory of implicit bias.",
    )
    parser.add_argument("--version", action="version", version=f"ltn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run config-driven sweeps and check them against the theory",
                              description="Run sweeps; exit status 1 if any check fails.")
    run.add_argument("configs", nargs="*", metavar="CONFIG",
                     help="TOML config file(s); default: the packaged quickstart config")
    run.add_argument("--out", metavar="DIR", help="results folder (default: results/<config name>); a folder "
                     "holding finished runs is resumed, not overwritten")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field, e.g. --set flow.rtol=1e-8 --set 'seeds=[0,1]' (repeatable)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-shard", action="store_true", help="solve each group on one device only")
    run.add_argument("--plots", action="store_true", help="also write the report's plots into the folder")

    validate = commands.add_parser("validate", help="validate config files without computing anything")
    validate.add_argument("configs", nargs="+", metavar="CONFIG")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    report = commands.add_parser("report", help="summarise a results folder and write PNG plots")
    report.add_argument("folder", metavar="DIR")
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.add_argument("--worst", type=int, default=5, metavar="K", help="worst cases listed (default 5)")
    report.add_argument("--paper", action="store_true", help="also write the paper figures that apply to the folder "
                        "(docs/reproduction.md); these may re-solve small runs and evaluate predictions (JAX)")
    return parser


def packaged_quickstart():
    """The quickstart config shipped inside the package (a context manager yielding its path)."""
    from importlib import resources

    return resources.as_file(resources.files("ltn") / "configs" / QUICKSTART)


def _load_all(paths, overrides):
    from .sweep import load_config

    return [load_config(path, overrides) for path in paths]


def _describe(sweep) -> str:
    from .sweep import expand, group_runs

    lines = []
    for experiment in sweep.experiments:
        runs = [r for r in expand(sweep) if r.experiment == experiment.name]
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
            status = EXIT_BAD_CONFIG
            continue
        print(f"valid: {path}\n{_describe(sweep)}")
    return status


def _varying(rows, exclude=("seed",)) -> list[str]:
    from .sweep._results import varying_columns

    return varying_columns(rows, exclude)


def _label(row, columns) -> str:
    return " ".join(f"{c.split('.', 1)[-1]}={_short(row.get(c))}" for c in columns)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summarise(rows) -> str:
    """Per experiment: runs, passes, and every failing run with its status and reason."""
    lines = []
    experiments = list(dict.fromkeys(row["experiment"] for row in rows))
    for name in experiments:
        mine = [row for row in rows if row["experiment"] == name]
        passed = sum(bool(row["passed"]) for row in mine)
        kinds = ", ".join(sorted({str(row["check_kind"]) for row in mine}))
        lines.append(f"{name}: {passed}/{len(mine)} passed (check: {kinds})")
        varying = _varying(mine, exclude=())
        for row in mine:
            if not row["passed"]:
                lines.append(f"  FAIL {row['run_id']} {_label(row, varying)}: status={row['status']}; "
                             f"{row['reason']}" + (f" [{row['check_error']}]" if row.get("check_error") else ""))
    return "\n".join(lines)


def command_run(args) -> int:
    from .sweep import ConfigError, run_sweep

    with contextlib.ExitStack() as stack:
        paths = args.configs or [stack.enter_context(packaged_quickstart())]
        try:
            sweeps = _load_all(paths, args.overrides)
        except ConfigError as error:
            print(f"invalid config:\n{error}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        out = args.out or os.path.join("results", "+".join(s.name for s in sweeps))
        for sweep in sweeps:
            print(f"{sweep.source}\n{_describe(sweep)}")
        outcome = run_sweep(sweeps, out, progress=False if args.no_progress else None, shard=not args.no_shard)
    print(f"computed {outcome.runs_computed} of {outcome.runs_total} runs in {outcome.groups_computed} "
          f"group(s); results in {outcome.out_dir}")
    print(summarise(outcome.rows))
    if args.plots:
        from .plots import write_plots

        for path in write_plots(outcome.out_dir):
            print(f"wrote {path}")
    failed = outcome.failed
    if failed:
        print(f"{len(failed)} of {len(outcome.rows)} runs failed their check", file=sys.stderr)
        return EXIT_FAILED_CHECKS
    print(f"all {len(outcome.rows)} runs passed")
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
        table.append([mine[0]["experiment"], _label(mine[0], varying) or "-", len(mine),
                      sum(bool(r["passed"]) for r in mine), ",".join(sorted({str(r["status"]) for r in mine})),
                      mine[0]["prediction"] or "-", _fmt(max(errors) if errors else None),
                      f"{min(cosines):.6f}" if cosines else "-", _fmt(max(certificates) if certificates else None),
                      _fmt(max(r["steps"] for r in mine)), _fmt(mine[0]["group_wall_time"])])
    out.append(_table(["experiment", "group", "runs", "passed", "status", "prediction", "max rel. error",
                       "min cosine", "max certificate", "max steps", "wall s"], table))
    for name in dict.fromkeys(row["experiment"] for row in rows):
        mine = [row for row in rows if row["experiment"] == name]
        regression = mine[0]["task"] == "regression"

        def badness(row):
            value = row["relative_error"] if regression else -(row["cosine"] if row["cosine"] is not None else 0)
            return (bool(row["passed"]), -(value if isinstance(value, float) and not math.isnan(value)
                                           else math.inf))

        varying = _varying(mine)
        worst_rows = sorted(mine, key=badness)[:worst]
        out.append(f"\nworst runs of {name}:")
        out.append(_table(["run", "config", "seed", "status", "rel. error", "cosine", "certificate", "passed"],
                          [[r["run_id"], _label(r, varying) or "-", r["seed"], r["status"],
                            _fmt(r["relative_error"]), _cosine(r["cosine"]), _fmt(r["certificate"]),
                            "yes" if r["passed"] else "no"] for r in worst_rows]))
    return "\n".join(out)


def command_report(args) -> int:
    from .sweep import read_rows

    rows = read_rows(args.folder)
    if not rows:
        print(f"no results in {args.folder!r} (expected {os.path.join(args.folder, 'results.csv')})",
              file=sys.stderr)
        return EXIT_BAD_CONFIG
    print(report_text(rows, args.worst))
    if not args.no_plots:
        from .plots import write_plots

        for path in write_plots(args.folder):
            print(f"wrote {path}")
    if getattr(args, "paper", False):
        from .plots import write_paper_plots

        paths, text = write_paper_plots(args.folder)
        if text:
            print(text)
        for path in paths:
            print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return {"run": command_run, "validate": command_validate, "report": command_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
