"""The Hydra callback that closes a sweep: its report, then its verdict on the jobs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnlab.file_names import FAIL_FAST_FILE, METRICS_FILE, STOPPED_FILE
from cnnlab.results.record import COMPLETED, job_order, read_checked, record_problem
from cnnlab.results.report import ReportStopped, report_after_sweep
from cnnlab.results.runs import UNREADABLE
from cnnlab.results.text import plain

log = logging.getLogger(__name__)


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


class SweepSummary(Callback):
    """After a multirun: write the sweep report (failed jobs included), then say which jobs
    did not complete, and exit non-zero if any did not or the report could not be built."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A sweep run again into its folder (a resume) starts without the last run's stops.
        (Path(config.hydra.sweep.dir) / FAIL_FAST_FILE).unlink(missing_ok=True)
        (Path(config.hydra.sweep.dir) / STOPPED_FILE).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report_error = report_after_sweep(sweep_dir)  # first: the exit below ends the process
        except ReportStopped as stop:  # Ctrl-C or SIGTERM while the report was written
            print(f"Error: {plain(stop.message)}", file=sys.stderr)
            sys.exit(stop.exit_code)
        fail_fast = sweep_dir / FAIL_FAST_FILE
        if fail_fast.is_file():
            print(
                f"Error: stopped at the first failed job (sweep.fail_fast): "
                f"{plain(fail_fast.read_text().strip())}",
                file=sys.stderr,
            )
        failed = [plain(line) for line in jobs_not_completed(sweep_dir)]
        if failed:
            log.error("%d job(s) of %s did not complete:\n  %s", len(failed), sweep_dir,
                      "\n  ".join(failed))  # fmt: skip
            print(f"Error: {len(failed)} job(s) of the sweep did not complete:", file=sys.stderr)
            for line in failed:
                print(f"  {line}", file=sys.stderr)
            sys.exit(1)
        if report_error:
            print(f"Error: the sweep report could not be built: {report_error}", file=sys.stderr)
            sys.exit(1)
