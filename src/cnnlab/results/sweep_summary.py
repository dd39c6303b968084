"""The Hydra callback that closes a sweep: its report, a table of its jobs with the best one
marked, then its verdict on the jobs."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnlab.file_names import FAIL_FAST_FILE, METRICS_FILE, SHOWN_DIR, STOPPED_FILE
from cnnlab.results.markdown import chosen_by, fmt
from cnnlab.results.record import COMPLETED, job_order, read_checked, record_problem
from cnnlab.results.report import ReportStopped, report_after_sweep
from cnnlab.results.runs import UNREADABLE, Run, best_run, find_runs
from cnnlab.results.text import plain


def job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: those Hydra wrote a `.hydra/` into, in job order."""
    folders = [p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")]
    return sorted(folders, key=job_order)


def jobs_not_completed(sweep_dir: Path) -> list[str]:
    """`<job>: <status> (<why>)` for each job that did not complete; a record of the wrong
    shape is `unreadable`, as in the report, and the field that is wrong is named."""
    failed = []
    for job in job_folders(sweep_dir):
        record, problem = read_checked(job / METRICS_FILE, record_problem)
        if problem:
            failed.append(f"{job.name}: {UNREADABLE} (its {METRICS_FILE} {problem})")
            continue
        status = record.get("status", "no metrics.json")
        if status != COMPLETED:
            failed.append(f"{job.name}: {status} ({record.get('error') or 'no error recorded'})")
    return failed


def jobs_table(runs: list[Run], missing: Sequence[str] = ()) -> str:
    """The sweep's closing table, one row per job: status, best value of the monitored
    metric, test accuracy and training time; the best job (`best_run`, as the report
    chooses it) marked `*`."""
    best = best_run(runs)
    monitor = (best or runs[0]).monitor[0] if runs else "val/acc"
    header = ["job", "status", f"best {monitor}", "test acc", "train time"]
    rows = [
        [
            plain(run.name),
            plain(run.status),
            fmt(run.best_score, ".4f"),
            fmt(run.test.get("test/acc"), ".4f"),
            fmt(run.train_s, ".1f") + (" s" if run.train_s is not None else ""),
        ]
        for run in runs
    ]
    rows += [[plain(name), "missing", "-", "-", "-"] for name in missing]  # `job 2 (...)`
    marks = ["*" if run is best else " " for run in runs] + [" "] * len(missing)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(mark: str, cells: list[str]) -> str:
        # names on the left, numbers on the right
        padded = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return f"{mark} {'  '.join(padded)}".rstrip()

    lines = [line(" ", header), *(line(m, r) for m, r in zip(marks, rows, strict=True))]
    if best is None:
        lines.append("No job completed with a score, so none is marked best.")
    else:
        lines.append(f"* best by {chosen_by(best)}: {plain(best.name)}")
    return "\n".join(lines)


def _runs_without_report(sweep_dir: Path) -> list[Run]:
    """The jobs as the report would read them, for the table when the report failed."""
    try:
        return find_runs(sweep_dir)
    except Exception:  # what broke the report may break this too: its error is said below
        return []


class SweepSummary(Callback):
    """After a multirun: write the sweep report (failed jobs included), then say which jobs
    did not complete, and exit non-zero if any did not or the report could not be built."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A sweep run again into its folder (a resume) starts without the last run's stops.
        (Path(config.hydra.sweep.dir) / FAIL_FAST_FILE).unlink(missing_ok=True)
        (Path(config.hydra.sweep.dir) / STOPPED_FILE).unlink(missing_ok=True)
        # Whatever a job printed for the whole sweep (a model summary) is printed afresh.
        shutil.rmtree(Path(config.hydra.sweep.dir) / SHOWN_DIR, ignore_errors=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        shutil.rmtree(sweep_dir / SHOWN_DIR, ignore_errors=True)  # the jobs' claims: done
        try:
            report, report_error = report_after_sweep(sweep_dir)  # first: the exit below ends
        except ReportStopped as stop:  # Ctrl-C or SIGTERM while the report was written
            print(f"Error: {plain(stop.message)}", file=sys.stderr)
            sys.exit(stop.exit_code)
        if report is not None:
            runs = report.runs
            missing = [g.job_name(n) for g in report.groups for n in g.missing]
        else:
            runs, missing = _runs_without_report(sweep_dir), []
        if runs or missing:
            print(f"\nSweep results ({plain(sweep_dir.name)}):\n{jobs_table(runs, missing)}")
        if report is not None:
            print(plain(f"Sweep report: {report.path} (built in {report.seconds:.1f} s)"))
        fail_fast = sweep_dir / FAIL_FAST_FILE
        if fail_fast.is_file():
            print(
                f"Error: stopped at the first failed job (sweep.fail_fast): "
                f"{plain(fail_fast.read_text().strip())}",
                file=sys.stderr,
            )
        failed = [plain(line) for line in jobs_not_completed(sweep_dir)]
        if failed:
            print(f"Error: {len(failed)} job(s) of the sweep did not complete:", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
            sys.exit(1)
        if report_error:
            print(f"Error: the sweep report could not be built: {report_error}", file=sys.stderr)
            sys.exit(1)
