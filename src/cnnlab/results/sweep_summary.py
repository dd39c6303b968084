"""The Hydra callback that closes a sweep: its report, then its verdict on the jobs."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnlab.results.record import COMPLETED, METRICS_FILE, job_order, read_json
from cnnlab.results.report import report_after_sweep
from cnnlab.scale.sweeps import FAIL_FAST_FILE, STOPPED_FILE

log = logging.getLogger(__name__)


def job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep: those Hydra wrote a `.hydra/` into, in job order."""
    folders = [p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")]
    return sorted(folders, key=job_order)


class SweepSummary(Callback):
    """After a multirun: write the sweep report (failed jobs included), then say which jobs
    did not complete, and exit non-zero if any did not or the report could not be built."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A sweep run again into its folder (a resume) starts without the last run's stops.
        (Path(config.hydra.sweep.dir) / FAIL_FAST_FILE).unlink(missing_ok=True)
        (Path(config.hydra.sweep.dir) / STOPPED_FILE).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        report_error = report_after_sweep(sweep_dir)  # first: the exit below ends the process
        fail_fast = sweep_dir / FAIL_FAST_FILE
        if fail_fast.is_file():
            print(
                f"Error: stopped at the first failed job (sweep.fail_fast): "
                f"{fail_fast.read_text().strip()}",
                file=sys.stderr,
            )
        failed = []
        for job in job_folders(sweep_dir):
            record = read_json(job / METRICS_FILE)
            status = record.get("status", "no metrics.json")
            if status != COMPLETED:
                failed.append(f"{job.name}: {status} ({record.get('error', 'no error recorded')})")
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
