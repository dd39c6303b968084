"""A run's machine-readable record (`metrics.json`) and how a run ends: status and exit code.

Statuses: running, completed, failed, diverged, interrupted. A failed job of a sweep is
recorded in its own folder and the sweep goes on; the sweep exits non-zero at the end
(see `cnnlab.hydra_callbacks.SweepSummary`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnlab.config import as_user_error, full_error_requested
from cnnlab.errors import CnnlabError
from cnnlab.stopping import Interrupted, stop_on_signals

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
COMPLETED = "completed"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write: a reader (the sweep report) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def hydra_choices() -> dict[str, Any]:
    """Which option of each config group this run uses, and the overrides that made it."""
    if not HydraConfig.initialized():
        return {"choices": {}, "overrides": []}
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    return {"choices": choices, "overrides": list(hydra_cfg.overrides.task)}


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_status(cfg: DictConfig, status: str, **fields: Any) -> None:
    """Merge `status` and `fields` into the run folder's metrics.json, keeping what is there."""
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if not output_dir:
        return
    path = Path(output_dir) / METRICS_FILE
    summary = read_json(path)
    summary.update({"status": status, **fields})
    for key, value in hydra_choices().items():
        summary.setdefault(key, value)
    write_json(path, summary)


def run_entry(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task`, turning any failure into a recorded status and a clear message.

    Single run: a user error (CnnlabError) prints one message and exits non-zero; other
    errors keep their traceback. Multirun: the failure is recorded in the job's folder and
    logged, and None is returned so the other jobs (and the sweep report) still run.
    A diverged or interrupted run (`cnnlab.guards`) is recorded with that status; once a sweep
    got SIGINT/SIGTERM, its remaining jobs are recorded as interrupted without running.
    """
    with stop_on_signals(keep_request=in_multirun()) as stop:
        if stop.signum is not None:
            record_status(
                cfg, "interrupted", error=f"not started: the sweep was stopped by {stop.name}"
            )
            return None
        try:
            return task(cfg)
        except Exception as raised:
            err = as_user_error(raised)
            status = getattr(err, "status", "failed")
            # A diverged or interrupted run's status already says what happened.
            error = str(err) if status != "failed" else f"{type(err).__name__}: {err}"
            record_status(cfg, status, error=error, **getattr(err, "record", {}))
            if full_error_requested():
                raise
            if in_multirun():
                if isinstance(err, CnnlabError):
                    log.error("Job %s: %s", status, err)
                else:
                    log.error("Job failed:\n%s", "".join(traceback.format_exception(err)))
                return None
            if isinstance(err, CnnlabError):
                print(f"Error: {err}", file=sys.stderr)
                sys.exit(err.exit_code)
            raise
        except (KeyboardInterrupt, SystemExit) as err:
            # Lightning's own SIGTERM handling (graceful), or a second signal (at once).
            if stop.signum is None and not isinstance(err, KeyboardInterrupt):
                raise
            stopped = stop.stopped or Interrupted(
                stop.signum or signal.SIGINT,
                f"Stopped at once by {stop.name or 'SIGINT'}; resume from the last checkpoint in "
                "the run folder's checkpoints/ with ckpt_path=<file>.",
            )
            record_status(cfg, stopped.status, error=str(stopped), **stopped.record)
            if in_multirun():
                if not stop.at_once:  # Lightning's own graceful SIGTERM handling
                    log.error("Job interrupted: %s", stopped)
                    return None
                raise  # a second signal stops the whole sweep at once
            print(f"Error: {stopped}", file=sys.stderr)
            sys.exit(stopped.exit_code)
