"""Progress of a sweep on stderr: a tqdm bar on a terminal, and one plain line per finished batch elsewhere (a log
file, a batch job's output, a pipe), where a bar would print nothing useful until the end."""

from __future__ import annotations

import sys
import time

from ._theory import FAILED

MODES = ("bar", "lines", "off")


def progress_mode(progress: bool | str | None, stream=None) -> str:
    """`None`: a bar on a terminal, lines otherwise; `True`: a bar; `False`: nothing; or a mode of `MODES`."""
    if progress is None:
        stream = sys.stderr if stream is None else stream
        return "bar" if stream.isatty() else "lines"
    if isinstance(progress, bool):
        return "bar" if progress else "off"
    if progress not in MODES:
        raise ValueError(f"progress must be None, a bool or one of {MODES}, got {progress!r}")
    return progress


class Progress:
    """Counts finished runs, per experiment and overall, and shows them in the chosen mode.

    A line reads, e.g.::

        ltn: diag-regression: 4/8 runs (sweep: 4/14), 12.5 s elapsed; +2 runs at init.scale 0.5, up to 1234 steps,
        1 failed, 0 not converged
    """

    def __init__(self, runs_by_experiment: dict[str, int], done_by_experiment: dict[str, int], mode: str,
                 stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.mode = mode
        self.total = dict(runs_by_experiment)
        self.done = {name: done_by_experiment.get(name, 0) for name in self.total}
        self.started = time.perf_counter()
        self._bar = None
        if mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=sum(self.total.values()), initial=sum(self.done.values()), unit="run",
                             file=self.stream, dynamic_ncols=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()

    def finished(self, rows: list[dict]) -> None:
        """A batch of runs (rows of one experiment) has been written."""
        experiment = rows[0]["experiment"]
        self.done[experiment] += len(rows)
        if self._bar is not None:
            self._bar.set_description(experiment)
            self._bar.update(len(rows))
        if self.mode != "lines":
            return
        scales = sorted({row.get("init.scale") for row in rows if row.get("init.scale") is not None})
        at = (f" at init.scale {scales[0]:g}" if len(scales) == 1
              else f" at init.scale {scales[0]:g} to {scales[-1]:g}" if scales else "")
        failed = sum(row["verdict"] == FAILED for row in rows)
        unconverged = sum(row["status"] != "converged" for row in rows)
        steps = max(int(row["steps"]) for row in rows)
        print(f"ltn: {experiment}: {self.done[experiment]}/{self.total[experiment]} runs (sweep: "
              f"{sum(self.done.values())}/{sum(self.total.values())}), {time.perf_counter() - self.started:.1f} s "
              f"elapsed; +{len(rows)} runs{at}, up to {steps} steps, {failed} failed, {unconverged} not converged",
              file=self.stream, flush=True)
