"""The runs a sweep report is about: each run folder read as a `Run`, and the runs that share
a parent folder (one sweep) as a `Group`. `cnnlab.results.report` builds them and draws the
figures; `cnnlab.results.markdown` renders them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnlab.config import is_location_key
from cnnlab.file_names import CONFUSION_FILE, METRICS_FILE
from cnnlab.results.record import (
    COMPLETED,
    confusion_problem,
    job_order,
    read_checked,
    record_problem,
)

UNREADABLE = "unreadable"  # a job whose metrics.json exists but cannot be read as a record


@dataclass
class Run:
    """One run folder as the report sees it: its record, its matrices and a short label."""

    folder: Path
    record: dict[str, Any]
    confusion: dict[str, Any]
    overrides: dict[str, str]
    label: str = ""
    confusion_error: str | None = None  # what is wrong with its confusion.json, if anything

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def status(self) -> str:
        return str(self.record.get("status", "no metrics.json"))

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    @property
    def best_val_acc(self) -> float | None:
        return finite((self.record.get("best") or {}).get("val/acc"))

    @property
    def best_epoch(self) -> int | None:
        return (self.record.get("best") or {}).get("epoch")

    @property
    def monitor(self) -> tuple[str, str]:
        """The metric and mode that chose the run's best epoch (records before `monitor`
        existed chose by val/acc, highest)."""
        best = self.record.get("best") or {}
        return str(best.get("monitor") or "val/acc"), str(best.get("mode") or "max")

    @property
    def best_score(self) -> float | None:
        """The best epoch's value of the monitored metric."""
        return finite((self.record.get("best") or {}).get(self.monitor[0]))

    @property
    def test(self) -> dict[str, Any]:
        return self.record.get("test") or {}

    @property
    def train_s(self) -> float | None:
        return finite((self.record.get("time") or {}).get("train_s"))

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.record.get("history") or [])

    @property
    def reason(self) -> str:
        """Why a run did not complete, in one line (status, divergence point, error)."""
        parts = []
        diverged_at = self.record.get("diverged_at")
        if isinstance(diverged_at, dict):
            parts.append(
                f"diverged at epoch {diverged_at.get('epoch')}, step {diverged_at.get('step')}"
            )
        if self.record.get("error"):
            parts.append(str(self.record["error"]))
        if not parts:
            parts.append(
                {
                    "no metrics.json": "no metrics.json: the job stopped before training started",
                    "running": "still running, or killed before it could record how it ended",
                    "interrupted": "stopped before the end (Ctrl-C or a signal)",
                }.get(self.status, "no reason recorded")
            )
        return " ".join("; ".join(parts).split())


@dataclass
class Group:
    """Runs that share a parent folder: one sweep (or a folder of single runs)."""

    folder: Path
    runs: list[Run]
    figure_stem: Path  # e.g. <folder>/report_ or <folder>/report_<sweep>_
    figures: dict[str, Path] = field(default_factory=dict)
    figure_errors: dict[str, str] = field(default_factory=dict)  # figures that could not be drawn
    missing: list[int] = field(default_factory=list)  # sweep jobs without a run folder
    # What each job of the sweep varies, by job number (`optimizer=adam`), from multirun.yaml.
    job_labels: list[str] = field(default_factory=list)

    def job_name(self, number: int) -> str:
        """`job 2 (optimizer=adagrad)`: a job by its number and what it varies."""
        label = self.job_labels[number] if number < len(self.job_labels) else ""
        return f"job {number} ({label})" if label else f"job {number}"

    @property
    def problems(self) -> list[str]:
        """What keeps this group's results from being whole: missing and unreadable jobs."""
        gone = [f"{self.job_name(n)} has no folder" for n in self.missing]
        unreadable = [f"{r.name}: {r.reason}" for r in self.runs if r.status == UNREADABLE]
        return (
            gone
            + unreadable
            + [
                f"{r.name}: its {CONFUSION_FILE} {r.confusion_error}"
                for r in self.runs
                if r.confusion_error
            ]
        )

    @property
    def best(self) -> Run | None:
        return best_run(self.runs)


def best_run(runs: list[Run]) -> Run | None:
    """The completed run whose best epoch scored best by the runs' `monitor` (never by test);
    the first completed run's monitor decides, and runs chosen by another are not compared."""
    completed = [r for r in runs if r.completed and r.best_score is not None]
    if not completed:
        return None
    monitor = completed[0].monitor
    scored = [r for r in completed if r.monitor == monitor]
    pick = max if monitor[1] == "max" else min
    return pick(scored, key=lambda r: r.best_score)  # first on ties


def finite(value: Any) -> float | None:
    """A number from a record, or None where it is missing, not a number or not finite: what
    tables and figures then leave out."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None  # plain values
    except Exception:  # a damaged file makes the run look like one without it
        return None


def _is_training_run(folder: Path, record: dict[str, Any]) -> bool:
    """Training runs have a model in their config (evaluation runs do not)."""
    config = _load_yaml(folder / ".hydra" / "config.yaml")
    if isinstance(config, dict):
        return "model" in config
    return bool(record) and ("history" in record or record.get("status") != COMPLETED)


def _parse_overrides(items: Any) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items or []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if not is_location_key(key):
            parsed[key] = value
    return parsed


def find_runs(folder: Path) -> list[Run]:
    """Every training run folder under `folder` (itself included), sorted by sweep and job."""
    candidates = {p.parent for p in folder.rglob(METRICS_FILE)}
    candidates |= {p.parent.parent for p in folder.rglob(".hydra/config.yaml")}
    runs = []
    for run_dir in candidates:
        # Records are checked field by field (cnnlab.results.record): one of the wrong shape
        # makes its run "unreadable", named in the report, never a traceback.
        record, problem = read_checked(run_dir / METRICS_FILE, record_problem)
        if problem:
            record = {"status": UNREADABLE, "error": f"its {METRICS_FILE} {problem}"}
        if not _is_training_run(run_dir, record):
            continue
        overrides = record.get("overrides")
        if overrides is None:
            overrides = _load_yaml(run_dir / ".hydra" / "overrides.yaml")
        confusion, confusion_error = read_checked(run_dir / CONFUSION_FILE, confusion_problem)
        runs.append(
            Run(
                folder=run_dir,
                record=record,
                confusion=confusion,
                overrides=_parse_overrides(overrides if isinstance(overrides, list) else []),
                confusion_error=confusion_error,
            )
        )
    return sorted(runs, key=lambda r: (str(r.folder.parent), *job_order(r.folder)))


def label_runs(runs: list[Run]) -> None:
    """Label each run by its own `label` (run_label) if it has one, else by the overrides that
    differ across `runs` (all of them for one run); the folder name where that leaves nothing
    or two runs alike."""
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.overrides if k not in keys]
    if len(runs) > 1:
        keys = [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]
    for run in runs:
        run.label = str(run.record.get("label") or "") or ",".join(
            f"{k}={run.overrides[k]}" for k in keys if k in run.overrides
        )
    labels = [r.label for r in runs]
    for run in runs:
        if not run.label or labels.count(run.label) > 1:
            run.label = run.name
