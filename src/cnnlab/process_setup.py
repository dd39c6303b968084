"""What a process that runs cnnlab sets once, for all of it: the config's resolvers, and the
warnings and log lines that say nothing about a run.

Importing cnnlab changes nothing: the entry points call `set_up_process` before Hydra composes
their config (conf/hydra/default.yaml needs the resolvers to name the run folder), and
`cnnlab.training.entry.run_entry` calls it again in job processes that never ran a script
(joblib and submitit workers, which receive the resolvers from Hydra with their job).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

_LIGHTNING_TIP_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


class _NoAdvertisements(logging.Filter):
    """Lightning's tips about its cloud products ("💡 Tip: ...") say nothing about the run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡")


_NO_ADVERTISEMENTS = _NoAdvertisements()


def _job_dir(job_num: Any, sweep_dir: Any, run_label: Any = None) -> str:
    from cnnlab.scale.sweeps import job_dir_name  # imported when a sweep job starts

    return job_dir_name(job_num, sweep_dir, run_label)


def _run_name(label: Any, folder: Any) -> str:
    return str(label) if label else Path(str(folder)).name


def _direction(mode: Any) -> str:
    return "minimize" if str(mode) == "min" else "maximize"


def set_up_process(root: Path | None = None) -> None:
    """Idempotent. `root`: the project folder, the default of `CNNLAB_ROOT` (paths.root_dir)."""
    if root is not None:
        os.environ.setdefault("CNNLAB_ROOT", str(root))
    # Two runs started in the same instant get distinct folders; cached so every process
    # that receives the config sees the same value.
    OmegaConf.register_new_resolver("cnnlab_pid", os.getpid, use_cache=True, replace=True)
    # A sweep job's folder, `<n>_<what the sweep varies>`.
    OmegaConf.register_new_resolver("cnnlab_job_dir", _job_dir, replace=True)
    # An Optuna search's direction from monitor.mode (conf/hparams_search/optuna.yaml).
    OmegaConf.register_new_resolver("cnnlab_direction", _direction, replace=True)
    # A run's name in MLflow and W&B: its run_label, else its folder's name (0_optimizer=adam).
    OmegaConf.register_new_resolver("cnnlab_run_name", _run_name, replace=True)
    # In-memory tensors need no worker processes; Lightning's hint about workers does not apply.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # Lightning 2.6 on torch 2.14 warns about its own use of a deprecated pytree API.
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    for name in _LIGHTNING_TIP_LOGGERS:
        logging.getLogger(name).addFilter(_NO_ADVERTISEMENTS)
