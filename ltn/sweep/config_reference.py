"""The config reference, docs/config.md, generated from the schema of `ltn/sweep/_config.py`.

`python -m ltn.sweep.config_reference` rewrites docs/config.md (or the file given as argument);
tests/sweep/test_config_reference.py fails when the committed file differs from what this prints.
"""

from __future__ import annotations

import math
import os
import sys

from ._build import DATA_KINDS, MAX_DEPTH, NETWORK_KINDS
from ._config import (EXECUTOR, INIT_KEYS, MAX_CHECKPOINTS, MAX_RUNS, REPORT_FIGURE, REQUIRED, SCHEMA, SEED_LIMIT,
                      SECTIONS, TOP_LEVEL, Field)

COMMAND = "python -m ltn.sweep.config_reference"
_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean", "int_list": "list of integers",
          "int_or_list": "integer or list of integers", "str_or_list": "string or list of strings",
          "str_list": "list of strings"}


def _default(field: Field) -> str:
    if field.default is REQUIRED:
        return "required"
    if field.default is None:
        return "none"
    if isinstance(field.default, dict):  # a default that depends on another key (the loss on the task)
        return ", ".join(f"`{value}` ({key})" for key, value in field.default.items())
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    if isinstance(field.default, str):
        return f'`"{field.default}"`'
    return f"`{field.default!r}`"


def _allowed(field: Field) -> str:
    parts = []
    if field.choices is not None:
        parts.append(", ".join(f"`{choice}`" for choice in field.choices))
    if field.positive:
        parts.append("> 0")
    if field.minimum is not None:
        parts.append(f">= {field.minimum:g}")
    if field.maximum is not None:
        parts.append(f"<= {field.maximum:g}")
    if field.below is not None:
        parts.append(f"< {field.below:g}")
    if field.max_items is not None:
        parts.append(f"at most {field.max_items} entries")
    return "; ".join(parts) or "any"


def _axis(field: Field) -> str:
    if not field.sweep:
        return "no"
    return "yes (a list of lists)" if field.kind in ("int_list", "int_or_list") else "yes (a list)"


def _table(fields: dict[str, Field], prefix: str) -> list[str]:
    lines = ["| key | type | default | allowed | sweep axis | meaning |", "|---|---|---|---|---|---|"]
    for key, field in fields.items():
        if not field.doc:
            raise ValueError(f"config field {prefix}{key} has no doc (the `doc` of its Field in ltn/sweep/_config.py)")
        meaning = field.doc.replace("|", "\\|")
        lines.append(f"| `{prefix}{key}` | {_TYPES[field.kind]} | {_default(field)} | {_allowed(field)} | "
                     f"{_axis(field)} | {meaning} |")
    return lines


def _uses(registry: dict[str, tuple[str, ...]], section: str) -> list[str]:
    return [f"- `{kind}`: " + ", ".join(f"`{section}.{key}`" for key in keys) for kind, keys in registry.items()]


def config_reference() -> str:
    """docs/config.md as text: every section, key, type, default, allowed values and bounds, whether it can be a
    sweep axis, and its meaning."""
    lines = [
        "# Config reference",
        "",
        f"<!-- Generated from the schema in ltn/sweep/_config.py by `{COMMAND}`; do not edit by hand. -->",
        "",
        "A config is a TOML file describing one experiment, or several as `[[experiment]]` tables; top-level keys are",
        "shared defaults that each experiment table is merged over, section by section. `ltn validate CONFIG` checks",
        "a file against this reference and reports every problem at once, naming the file, key and reason.",
        "",
        "A list given for a key that can be a sweep axis sweeps it: the runs of an experiment are the Cartesian",
        "product of its axes, times its seeds (for list-valued keys, such as `network.widths`, a list of lists is",
        "the axis). Runs that differ only in `init.scale` and the seed share one compiled, batched solve.",
        "",
        f"Limits: at most {MAX_RUNS:,} runs per file, depth at most {MAX_DEPTH}, at most {MAX_CHECKPOINTS:,} "
        f"checkpoints, seeds in [0, 2**{int(math.log2(SEED_LIMIT))}).",
        "",
        "## Top level",
        "",
        *_table(TOP_LEVEL, ""),
    ]
    uses = {
        "data": {kind: entry.keys for kind, entry in DATA_KINDS.items()},
        "network": {kind: entry.keys for kind, entry in NETWORK_KINDS.items()},
        "init": INIT_KEYS,
    }
    for section in SECTIONS:
        lines += ["", f"## `{section}`", "", *_table(SCHEMA[section], f"{section}.")]
        if section in uses:
            lines += ["", f"Keys each `{section}.kind` uses (setting another is an error):", "",
                      *_uses(uses[section], section)]
    lines += ["", "## `[report]`", "",
              "The figures `ltn report` draws (the file's, not an experiment's: one `[[report.figure]]` table per",
              "figure, after the experiments). Without it, `ltn report` draws the distance to the prediction along",
              "the path and against the initial scale for each experiment.", "",
              *_table(REPORT_FIGURE, "report.figure[].")]
    lines += ["", "## `[executor]`", "",
              "Where `ltn run` solves the groups (flags of `ltn run` override these keys). A table of the file, at its",
              "top level: it is shared by all experiments and never enters a run id.", "",
              *_table(EXECUTOR, "executor.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else os.path.join(os.path.dirname(__file__), "..", "..", "docs", "config.md")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(config_reference())
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
