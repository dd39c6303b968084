"""Sweeps a person can read and resume: job folders named by what the sweep varies, a job's
state taken from its own folder when a sweep is run again into it, and fail-fast.

Torch-free: Hydra resolves the job folder's name (`cnnlab_job_dir`) before a job starts.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnlab.commands import path_override, shell_quoted
from cnnlab.config import is_location_key
from cnnlab.errors import CnnlabError
from cnnlab.file_names import (
    FAIL_FAST_FILE,
    METRICS_FILE,
    MULTIRUN_FILE,
    SHOWN_DIR,
    STOPPED_FILE,
)
from cnnlab.results.multirun import parse_overrides, saved_overrides
from cnnlab.results.record import COMPLETED, read_json
from cnnlab.results.text import plain
from cnnlab.trust import override_problem

log = logging.getLogger(__name__)

_MAX_LABEL = 120  # bytes of a job folder's label, well inside file-name limits (255 bytes)


def swept_keys(sweep_dir: Path, sweeper_params: Any = None) -> list[str]:
    """The keys a sweep varies: its sweep overrides (`a,b`, `range(...)`, ...) and the
    sweeper's own parameters (`hydra.sweeper.params`, which Optuna searches)."""
    keys: list[str] = []
    if (sweep_dir / MULTIRUN_FILE).is_file():
        task = saved_overrides(sweep_dir)["task"]
        keys += [o.key_or_group for o in parse_overrides(task) if o.is_sweep_override()]
    keys += [str(k) for k in (sweeper_params or {}) if str(k) not in keys]
    return [k for k in keys if not is_location_key(k)]


def job_label(task_overrides: list[str], keys: list[str]) -> str:
    """`key=value` of the swept keys, in the sweep's order, e.g. `optimizer=adam`."""
    values = {o.key_or_group: o.value() for o in parse_overrides(task_overrides)}
    parts = [f"{key}={values[key]}" for key in keys if key in values]
    return folder_label(",".join(parts))


def folder_label(label: str) -> str:
    """`label` as part of a folder name: `/` as `-`, no control characters, and at most
    _MAX_LABEL bytes: a longer one is cut and ends in a digest of the whole, so that labels
    alike in their first bytes still get folders of their own."""
    label = plain(label).replace("/", "-")
    encoded = label.encode(errors="surrogateescape")  # undecodable bytes from argv too
    if len(encoded) <= _MAX_LABEL:
        return label
    digest = hashlib.sha1(encoded).hexdigest()[:8]
    return f"{encoded[: _MAX_LABEL - 9].decode(errors='ignore')}~{digest}"


def job_dir_name(job_num: Any, sweep_dir: Any, run_label: Any = None) -> str:
    """The job folder's name: `<n>_<what it varies>` (`<n>_<run_label>` when the run has a
    label, spaces as underscores), or `<n>` when nothing varies; labels of any length and
    any characters make a valid name (`folder_label`)."""
    if run_label:
        return f"{job_num}_{folder_label('_'.join(str(run_label).split()))}"
    hydra = HydraConfig.get()
    keys = swept_keys(Path(str(sweep_dir)), OmegaConf.select(hydra, "sweeper.params"))
    label = job_label(list(hydra.overrides.task), keys)
    return f"{job_num}_{label}" if label else str(job_num)


# -- running a sweep again into its folder -------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """What a job folder already holds when its sweep runs again, and what to do about it."""

    action: str  # "keep", "resume", or "run"
    record: dict[str, Any]
    checkpoint: Path | None = None


# A diverged run would diverge again from the same settings: its verdict stands, like a
# completed run's.
_FINAL = (COMPLETED, "diverged")


def job_state(output_dir: Path) -> JobState:
    record = read_json(output_dir / METRICS_FILE)
    if not record:
        return JobState("run", record)
    if record.get("status") in _FINAL:
        return JobState("keep", record)
    last = output_dir / "checkpoints" / "last.ckpt"
    if record.get("status") in ("running", "interrupted") and last.is_file():
        return JobState("resume", record, last)
    return JobState("run", record)


def clear_attempt(output_dir: Path) -> None:
    """A job that runs again from scratch starts without its failed attempt's checkpoints and
    events (which would mix with the new ones); its record is rewritten by the new run."""
    for name in ("checkpoints", "tensorboard", "csv"):
        shutil.rmtree(output_dir / name, ignore_errors=True)
    for events in output_dir.glob("events.out.tfevents.*"):  # TensorBoard's, in the folder
        events.unlink(missing_ok=True)


def fail_fast_marker(cfg: DictConfig) -> Path | None:
    """Where a fail-fast sweep's first failure is recorded (None: not a fail-fast sweep)."""
    if not (HydraConfig.initialized() and OmegaConf.select(cfg, "sweep.fail_fast", default=False)):
        return None
    return Path(HydraConfig.get().sweep.dir) / FAIL_FAST_FILE


def stop_marker(sweep_dir: Path) -> str | None:
    """The signal that stopped this sweep's parallel jobs (None: it was not stopped)."""
    try:
        return (sweep_dir / STOPPED_FILE).read_text().strip() or "a signal"
    except OSError:
        return None


def shown_earlier_in_sweep(what: str) -> str | None:
    """The job of this sweep that already printed `what` (e.g. a model summary's digest), or
    None when this job is the first (it then claims it) or runs outside a sweep. Parallel
    jobs claim with an exclusive create, so exactly one of them prints it."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.sweep.dir) / SHOWN_DIR
    path = folder / hashlib.sha256(what.encode()).hexdigest()[:32]
    job = Path(hydra_cfg.runtime.output_dir).name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with path.open("x") as claim:
            claim.write(job)
    except FileExistsError:
        try:
            return path.read_text().strip() or "an earlier job"
        except OSError:
            return "an earlier job"
    except OSError:  # a sweep folder that cannot be written: print it, as a lone run would
        return None
    return None


def resume_arguments(sweep_dir: Path, conf_dir: Path) -> list[str]:
    """The command line that runs a sweep again into its own folder: its overrides, as saved in
    `multirun.yaml`, and `hydra.sweep.dir=<the folder>`.

    The file is data, not code: each saved override must choose options of the config groups
    in `conf_dir` or set a plain value (`cnnlab.trust.override_problem`); anything else is
    refused, and the user runs the sweep's command again themselves.
    """
    saved = sweep_dir / MULTIRUN_FILE
    if not saved.is_file():
        raise CnnlabError(
            f"{sweep_dir} is not a sweep folder (it has no {MULTIRUN_FILE}): give the folder "
            "under outputs/train/multiruns/ that the sweep printed"
        )
    overrides = saved_overrides(sweep_dir)
    own = ("hydra.sweep.dir", "hydra.mode")
    hydra = [o for o in overrides["hydra"] if o.lstrip("+~").split("=", 1)[0] not in own]
    folder = path_override("hydra.sweep.dir", sweep_dir.resolve())
    with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def group_options(key: str) -> list[str] | None:
            parent, _, name = key.lstrip("+~").rpartition("/")
            return loader.get_group_options(key) if name in loader.list_groups(parent) else None

        checks = [(o, False) for o in overrides["task"]] + [(o, True) for o in hydra]
        for override, is_hydra in checks:
            if problem := override_problem(override, group_options, hydra=is_hydra):
                raise CnnlabError(
                    f"{saved}: the saved override {override!r} is not taken from a file: "
                    f"{problem}. If this sweep is yours, run its command again yourself with "
                    f"{shell_quoted(folder)} (it resumes the same way)"
                )
    return ["-m", *hydra, *overrides["task"], folder]
