"""Parallel sweep jobs share one machine: torch threads per job, one GPU per job worker.

`ParallelJobResources` is a Hydra callback: in each job of a joblib sweep it sets torch's
threads to cores / parallel jobs and, with GPUs, the worker's own CUDA_VISIBLE_DEVICES. After
the DDP jobs of a sequential sweep it undoes what Lightning's launcher set.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnlab.console import label_console_handlers, set_job_label
from cnnlab.scale.auto_launch import parallel_jobs_now
from cnnlab.scale.parallel_stop import become_worker

log = logging.getLogger(__name__)


def _is_joblib(launcher: Any) -> bool:
    return "JoblibLauncher" in str(launcher.get("_target_", "")) if launcher else False


def _may_run_parallel(launcher: Any) -> bool:
    """joblib, or the default `auto` launcher that may choose it."""
    target = str(launcher.get("_target_", "")) if launcher else ""
    return _is_joblib(launcher) or target.endswith("AutoLauncher")


def _jobs_at_once(launcher: Any, cores: int) -> int | None:
    """How many jobs run side by side with this one; None when it runs alone in sequence."""
    if (at_once := parallel_jobs_now()) is not None:
        return at_once
    return parallel_jobs(launcher.get("n_jobs"), cores) if _is_joblib(launcher) else None


def parallel_jobs(n_jobs: int | None, cores: int) -> int:
    """How many jobs joblib runs at once: its n_jobs semantics (-1 = one per core)."""
    if n_jobs is None or n_jobs == 0:
        return 1
    if n_jobs < 0:
        return max(cores + 1 + n_jobs, 1)
    return n_jobs


def threads_per_job(parallel: int, cores: int) -> int:
    """Torch threads for each of `parallel` jobs sharing `cores`: no oversubscription."""
    return max(cores // max(parallel, 1), 1)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs a sweep may hand out: CUDA_VISIBLE_DEVICES if set, else all of them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


# This worker process's GPU slot, per sweep folder, held (locked) for the process's life.
_held_slots: dict[Path, tuple[int, IO[str]]] = {}


def claim_slot(folder: Path, slots: int) -> int | None:
    """A slot number in [0, slots) that no other live process holds, kept by this process.

    joblib reuses its worker processes across jobs, and a process cannot change GPU once CUDA
    is initialised, so a GPU goes with the worker, not with the job number: each worker
    locks one slot file for its lifetime (the lock goes when the process ends).
    """
    if folder in _held_slots:
        return _held_slots[folder][0]
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        handle = open(folder / f"slot-{slot}.lock", "w")  # noqa: SIM115 (held for life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held_slots[folder] = (slot, handle)
        return slot
    return None


# Variables Lightning's DDP launcher sets in the launching process (and reads back).
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


class ParallelJobResources(Callback):
    """Shares the machine between parallel jobs, and cleans up after DDP jobs.

    joblib sweeps: in the sweep's process it notes the GPUs to hand out; in each job it sets
    torch's threads to cores / parallel jobs and, with GPUs, CUDA_VISIBLE_DEVICES to the job
    worker's own GPU (GPU slot i of n_jobs gets GPU i mod the number of GPUs).

    DDP jobs of a sequential sweep run in one process: after each, the process group and the
    variables Lightning's launcher set are undone, or the next job would join the dead ranks.
    """

    def __init__(self) -> None:
        self.gpus: list[str] | None = None
        self._env_at_start: dict[str, str | None] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _may_run_parallel(config.hydra.get("launcher")):
            self.gpus = visible_gpus()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._env_at_start = {name: os.environ.get(name) for name in _DDP_ENV}
        hydra_cfg = HydraConfig.get()
        cores = usable_cores()
        parallel = _jobs_at_once(hydra_cfg.get("launcher"), cores)
        if self.gpus is None or parallel is None:
            return
        if parallel_jobs_now() is not None:  # a worker of `auto`: its stop signals come from
            become_worker(Path(hydra_cfg.sweep.dir))  # the sweep's process, once each
        # Its console lines and tables start with its folder's name (cnnlab.console).
        set_job_label(Path(hydra_cfg.runtime.output_dir).name)
        label_console_handlers()
        threads = threads_per_job(parallel, cores)
        torch.set_num_threads(threads)
        gpu = "none"
        if self.gpus:
            slot = claim_slot(Path(hydra_cfg.sweep.dir) / ".gpu_slots", parallel)
            if slot is None:  # more live workers than n_jobs: should not happen
                slot = int(hydra_cfg.job.num)
            gpu = self.gpus[slot % len(self.gpus)]
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        log.info(
            "Parallel job %s (joblib, %d at a time on %d cores): %d torch thread(s), GPU %s",
            hydra_cfg.job.num,
            parallel,
            cores,
            threads,
            gpu,
        )

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        set_job_label(None)  # a worker may run another job next
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in self._env_at_start.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def quiet_for_parallel_jobs(callbacks: list[pl.Callback]) -> list[pl.Callback]:
    """In a job running side by side with others: no progress bar (bars of several processes
    interleave); its lines carry its label instead (`ParallelJobResources.on_job_start`)."""
    if not HydraConfig.initialized():
        return callbacks
    hydra_cfg = HydraConfig.get()
    if (_jobs_at_once(hydra_cfg.get("launcher"), usable_cores()) or 1) <= 1:
        return callbacks
    return [c for c in callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
