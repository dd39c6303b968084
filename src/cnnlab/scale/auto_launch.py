"""The default launcher's choice: jobs side by side (joblib) where that pays, else in sequence.

One job alone, or DDP jobs (each starts processes of its own), run in sequence, in this
process. Otherwise jobs run side by side: on CPU as many as the usable cores, one torch
thread each at least (jobs x threads = cores); on GPUs `jobs_per_gpu` per GPU, each worker
pinned to its GPU before CUDA starts (`cnnlab.scale.job_resources`). The launcher itself is
`hydra_plugins.cnnlab_launcher.AutoLauncher`: Hydra loads launchers only from that package.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Set for the jobs of a parallel sweep: how many run at once (read by the jobs themselves).
PARALLEL_JOBS_ENV = "CNNLAB_PARALLEL_JOBS"


# On CPU, up to this many one-thread jobs per core run at once: a sweep of 3 jobs on 2 cores
# then runs in one round instead of two rounds whose second leaves a core idle.
CPU_JOBS_PER_CORE = 2


def jobs_at_once(jobs: int, cores: int, gpus: int, jobs_per_gpu: int) -> int:
    """How many of `jobs` to run side by side on `cores` CPU cores and `gpus` GPUs."""
    if gpus:
        return max(1, min(jobs, gpus * max(jobs_per_gpu, 1)))
    if cores <= 1:
        return 1
    return max(1, jobs if jobs <= CPU_JOBS_PER_CORE * cores else cores)


def runs_ddp(job_cfg: DictConfig) -> bool:
    """A job whose trainer starts several processes (DDP) cannot run inside a worker."""
    trainer = OmegaConf.select(job_cfg, "trainer") or {}
    devices = trainer.get("devices", 1)
    several = devices in (-1, "auto") or (str(devices).isdigit() and int(devices) > 1)
    nodes = int(trainer.get("num_nodes", 1) or 1)
    return "ddp" in str(trainer.get("strategy", "")) and (several or nodes > 1)


def choose(
    job_cfgs: Sequence[DictConfig], cores: int, gpus: int, jobs_per_gpu: int
) -> tuple[int, str]:
    """(jobs at once, the one line that says why): 1 means in sequence."""
    jobs = len(job_cfgs)
    if jobs <= 1:
        return 1, "one job: it runs here"
    if any(runs_ddp(cfg) for cfg in job_cfgs):
        return 1, f"{jobs} DDP jobs run one after another (each starts its own processes)"
    at_once = jobs_at_once(jobs, cores, gpus, jobs_per_gpu)
    if at_once == 1:
        return 1, f"{jobs} jobs in sequence: one core and no GPU leave nothing to share"
    where = f"{gpus} GPU(s), {jobs_per_gpu} per GPU" if gpus else f"{cores} cores"
    threads = max(cores // at_once, 1)
    return at_once, f"{jobs} jobs, {at_once} at a time side by side (joblib) on {where}, " + (
        f"{threads} torch thread(s) each"
    )


def joblib_settings(overrides: Any, at_once: int) -> dict[str, Any]:
    """The joblib launcher's settings for `at_once` jobs: its own defaults, then `overrides`
    (`hydra.launcher.joblib`)."""
    from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf

    settings = OmegaConf.to_container(OmegaConf.structured(JobLibLauncherConf), resolve=True)
    settings.pop("_target_")
    settings.update(dict(overrides or {}))
    settings["n_jobs"] = at_once
    return settings


def set_parallel_jobs(at_once: int | None) -> None:
    if at_once is None:
        os.environ.pop(PARALLEL_JOBS_ENV, None)
    else:
        os.environ[PARALLEL_JOBS_ENV] = str(at_once)


def parallel_jobs_now() -> int | None:
    """How many jobs run side by side with this one (None: not a parallel job of `auto`)."""
    value = os.environ.get(PARALLEL_JOBS_ENV)
    return int(value) if value and value.isdigit() else None
