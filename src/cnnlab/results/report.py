"""The sweep report: the assignment's whole "Resultados" section, from the run folders' files alone.

`build_report(folder)` reads every training run under `folder` (its `metrics.json` and
`confusion.json`; Hydra's `.hydra/overrides.yaml` when a job left no record) and writes
`report.md` plus its figures (`report_*.png`) into it. Nothing else is needed, so the report can be
rebuilt later, elsewhere, for sweeps made by any launcher, for one run folder, or for a folder
holding several sweeps (one section per sweep: the folder that holds its runs).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from matplotlib.figure import Figure

from cnnlab.commands import make_command, python_command
from cnnlab.errors import CnnlabError
from cnnlab.file_names import CONFUSION_FILE, FIGURE_PREFIX, METRICS_FILE, REPORT_FILE
from cnnlab.results.figures import (
    confusion_figure,
    confusion_grid_figure,
    save_png,
    sweep_curves_figure,
    times_figure,
)
from cnnlab.results.markdown import fmt, relative, render_group
from cnnlab.results.multirun import expected_job_labels
from cnnlab.results.record import job_order, write_text_atomic
from cnnlab.results.runs import Group, Run, find_runs, label_runs
from cnnlab.results.text import code, markdown, plain
from cnnlab.signals import stop_signals_handled_by

log = logging.getLogger(__name__)


@dataclass
class Report:
    path: Path
    groups: list[Group]
    seconds: float

    @property
    def runs(self) -> list[Run]:
        return [run for group in self.groups for run in group.runs]

    @property
    def problems(self) -> list[str]:
        return [problem for group in self.groups for problem in group.problems]


def _matrix_panels(runs: list[Run], split: str) -> list[tuple[str, Any, list[str]]]:
    panels = []
    for run in runs:
        counts = run.confusion.get(split)
        if counts:
            names = run.confusion.get("class_names") or [str(i) for i in range(len(counts))]
            panels.append((f"{run.label} (epoch {run.confusion.get('epoch')})", counts, names))
    return panels


def draw_group_figures(group: Group) -> None:
    """The assignment's Figs. 5-11 for one sweep, as PNG files under the group's figures folder.

    A figure that cannot be drawn is named in the report and the log; the others and the
    report's text still come."""

    def draw(key: str, name: str, make: Callable[[], Figure]) -> None:
        path = group.figure_stem.with_name(f"{group.figure_stem.name}{name}.png")
        try:
            group.figures[key] = save_png(make(), path)
        except Exception as err:
            group.figure_errors[key] = f"{type(err).__name__}: {err}"
            log.warning("The report figure %s could not be drawn: %s", path.name, plain(err))

    timed = [r for r in group.runs if r.train_s is not None]
    if timed:
        labels, seconds = [r.label for r in timed], [r.train_s for r in timed]
        draw("times", "train_times", lambda: times_figure(labels, seconds))
    curves = [(r.label, r.history) for r in group.runs if r.history]
    if curves:
        draw("curves", "curves", lambda: sweep_curves_figure(curves))
    for split, title in (("train", "Training set"), ("val", "Validation set")):
        panels = _matrix_panels(group.runs, split)
        if panels:
            heading = f"{title}: normalised confusion matrices"
            draw(
                f"confusion_{split}",
                f"confusion_{split}",
                lambda panels=panels, heading=heading: confusion_grid_figure(panels, heading),
            )
    best = group.best
    if best is not None and best.confusion.get("test"):
        counts = best.confusion["test"]
        names = best.confusion.get("class_names") or [str(i) for i in range(len(counts))]
        accuracy = fmt(best.test.get("test/acc"), ".4f")
        title = f"Best run {best.label}: test accuracy {accuracy}"
        draw(
            "best_test",
            "best_test_confusion",
            lambda: confusion_figure(counts, names, title),
        )


def build_report(folder: Path) -> Report:
    """Write `report.md` and its figures into `folder`; raises CnnlabError when it has no runs."""
    start = time.perf_counter()
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise CnnlabError(f"{folder} is not a folder: pass a run or sweep folder under outputs/")
    runs = find_runs(folder)
    if not runs:
        raise CnnlabError(
            f"No training runs in {folder}: a run folder holds the metrics.json written by "
            "src/train.py. Pass a sweep (outputs/train/multiruns/<sweep>), a run or a folder "
            "holding them."
        )
    by_parent: dict[Path, list[Run]] = {}
    for run in runs:
        by_parent.setdefault(run.folder.parent, []).append(run)
    several = len(by_parent) > 1
    groups = []
    for parent, members in by_parent.items():
        label_runs(members)
        slug = f"{relative(parent, folder).replace('/', '__')}_" if several else ""
        group = Group(parent, members, folder / f"{FIGURE_PREFIX}{slug}")
        if (labels := expected_job_labels(parent)) is not None:
            numbers = {job_order(run.folder)[0] for run in members}
            group.missing = [n for n in range(len(labels)) if n not in numbers]
            group.job_labels = labels
        draw_group_figures(group)
        groups.append(group)

    completed = sum(r.completed for r in runs)
    problems = [p for group in groups for p in group.problems]
    warning = (
        [
            f"**Incomplete:** {markdown('; '.join(problems))}. The best runs below are chosen "
            "among the "
            "complete records only.",
            "",
        ]
        if problems
        else []
    )
    lines = [
        f"# Results: {markdown(folder.name)}",
        "",
        *warning,
        f"{len(runs)} run(s), {completed} completed, {len(runs) - completed} did not"
        f"{f', in {len(groups)} sweeps' if several else ''}. Built "
        f"{datetime.now():%Y-%m-%d %H:%M} from the run folders' `{METRICS_FILE}` and "
        f"`{CONFUSION_FILE}`; rebuild with {code(rebuild_command(folder))}.",
        "",
        "Epochs count from 0, as in metrics.json and checkpoint names. The training-set "
        "matrices come from the training steps' own predictions during that epoch (the "
        "weights change as it goes); validation and test matrices from the weights the test "
        "scored: those of the best epoch by the run's monitor, validation accuracy unless "
        "set otherwise (the last epoch when a run "
        "kept no checkpoint). Matrices "
        "are normalised per true class (rows sum to 1; a class absent from a split is a row "
        "of zeros).",
        "",
    ]
    for group in groups:
        if several:
            lines += [f"## Sweep {code(relative(group.folder, folder))}", ""]
        lines += render_group(group, folder, level=3 if several else 2)
    path = folder / REPORT_FILE
    write_text_atomic(path, "\n".join(lines))  # whole or not at all, whatever stops it
    return Report(path=path, groups=groups, seconds=time.perf_counter() - start)


def rebuild_command(folder: Path) -> str:
    """The command that builds `folder`'s report again, ready to paste."""
    return python_command("src/report.py", folder)


# -- a signal while the report is written ---------------------------------------------------------


class ReportStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while a report was written; `message` says what was kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.message = f"Interrupted by {signal.Signals(signum).name} while writing the report"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention, as for an interrupted run


@contextlib.contextmanager
def _signals_stop_the_report() -> Iterator[None]:
    """SIGINT and SIGTERM raise ReportStopped inside (once; a second signal while stopping is
    ignored), in place of a traceback or a kill that would leave a temporary file behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not received:
            received.append(signum)
            raise ReportStopped(signum)

    with stop_signals_handled_by(on_signal):
        yield


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def build_report_or_stop(folder: Path) -> Report:
    """`build_report`, stopped cleanly by SIGINT or SIGTERM: `report.md` is then written whole
    or not at all, no temporary file is left, and the ReportStopped raised carries the one
    line to show: whether the report was written, and how to build it again."""
    folder = Path(folder).expanduser().resolve()
    path = folder / REPORT_FILE
    before = _file_identity(path)
    try:
        with _signals_stop_the_report():
            return build_report(folder)
    except ReportStopped as stop:
        if _file_identity(path) not in (before, None):
            stop.message += f", after {path} was written whole."
        else:
            kept = "the previous one is kept" if before else "nothing half-written is left"
            stop.message += (
                f": {path} was not written ({kept}). Build it with: {rebuild_command(folder)} "
                f"(or {make_command('report', DIR=folder)})"
            )
        raise


def newest_sweep(log_dir: Path) -> Path:
    """The most recently started sweep under `log_dir` (`<task>/multiruns/<sweep>`)."""
    sweeps = [p for p in log_dir.glob("*/multiruns/*") if p.is_dir()]
    if not sweeps:
        raise CnnlabError(
            f"No sweep under {log_dir}/*/multiruns/: run one (make sweep) or pass a folder, "
            f"e.g. {python_command('src/report.py', 'outputs/train/runs/<run>')}"
        )
    return max(sweeps, key=lambda p: p.stat().st_mtime)


def report_after_sweep(sweep_dir: Path) -> tuple[Report | None, str | None]:
    """Build the report at the end of a multirun: the report, or None and the error instead
    of raising, so the sweep's own verdict on its jobs still comes. A stop signal raises
    ReportStopped."""
    try:
        return build_report_or_stop(sweep_dir), None
    except Exception as err:  # ReportStopped is no Exception: it goes up
        log.exception("The sweep report of %s could not be built", sweep_dir)
        return None, plain(f"{type(err).__name__}: {err}")
