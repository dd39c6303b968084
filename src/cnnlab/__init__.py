"""cnnlab: the assignment's CNN experiments as a PyTorch Lightning + Hydra research template."""

import os
from typing import Any

from omegaconf import OmegaConf

__version__ = "0.1.0"

# Used by conf/hydra/default.yaml so that two runs started in the same instant get distinct
# folders; cached so every process that receives the config sees the same value.
OmegaConf.register_new_resolver("cnnlab_pid", os.getpid, use_cache=True, replace=True)


def _job_dir(job_num: Any, sweep_dir: Any, run_label: Any = None) -> str:
    from cnnlab.scale.sweeps import job_dir_name  # imported when a sweep job starts

    return job_dir_name(job_num, sweep_dir, run_label)


# A sweep job's folder, `<n>_<what the sweep varies>` (conf/hydra/default.yaml).
OmegaConf.register_new_resolver("cnnlab_job_dir", _job_dir, replace=True)
