"""Scale-out glue: parallel sweep jobs, DDP inside sweeps, and the optional plugins' extra.

The engines are the ecosystem's: Hydra's joblib/submitit launchers and Optuna sweeper,
Lightning's DDP strategy. This module only fits them to cnnlab:

* `ParallelJobResources` (a Hydra callback) gives each job of a joblib sweep its share of
  the machine: torch threads = cores / parallel jobs, and one GPU of its own when there are
  GPUs.
* `ddp_children_run_this_job` makes Lightning's DDP relaunch of ranks > 0 re-create the
  current sweep job instead of the whole sweep.
* `missing_plugin_message` names the extra to install when a launcher or sweeper is absent.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cnnlab.errors import ConfigError

log = logging.getLogger(__name__)

SWEEP_EXTRA = 'pip install -e ".[sweep]"'

# Command-line choice -> (what it is, the modules it needs). The launchers and the sweeper are
# Hydra plugins from cnnlab's `sweep` extra.
_PLUGINS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("hydra/launcher", "joblib"): (
        "Hydra's joblib launcher",
        ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    ),
    ("hydra/launcher", "submitit_local"): (
        "Hydra's submitit launcher",
        ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ),
    ("hydra/launcher", "submitit_slurm"): (
        "Hydra's submitit launcher",
        ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ),
    ("hydra/launcher", "slurm"): (
        "Hydra's submitit launcher",
        ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ),
    ("hydra/sweeper", "optuna"): (
        "Hydra's Optuna sweeper",
        ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ),
    ("hparams_search", "optuna"): (
        "Hydra's Optuna sweeper",
        ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ),
}
_CHOICE = re.compile(r"^[+~]*(?P<group>[\w/]+)=(?P<option>[\w]+)$")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_plugin_message(
    argv: Sequence[str], installed: Callable[[str], bool] = _installed
) -> str | None:
    """A message naming the extra to install if `argv` picks a plugin that is not installed.

    Hydra alone would only say that 'hydra/launcher/joblib' is not among the options.
    """
    for arg in argv:
        match = _CHOICE.match(arg)
        if not match:
            continue
        plugin = _PLUGINS.get((match["group"], match["option"]))
        if plugin is None:
            continue
        what, modules = plugin
        missing = [m for m in modules if not installed(m)]
        if missing:
            return (
                f"{arg} needs {what}, which is not installed (missing: {', '.join(missing)}).\n"
                f"Install cnnlab's scale-out extra: {SWEEP_EXTRA}  (or: make install)"
            )
    return None


# -- parallel jobs on one machine (joblib) ----------------------------------------------------


def _is_joblib(launcher: Any) -> bool:
    return "JoblibLauncher" in str(launcher.get("_target_", "")) if launcher else False


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
        if _is_joblib(config.hydra.get("launcher")):
            self.gpus = visible_gpus()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._env_at_start = {name: os.environ.get(name) for name in _DDP_ENV}
        hydra_cfg = HydraConfig.get()
        if self.gpus is None or not _is_joblib(hydra_cfg.get("launcher")):
            return
        cores = usable_cores()
        parallel = parallel_jobs(hydra_cfg.launcher.get("n_jobs"), cores)
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
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in self._env_at_start.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- DDP inside a sweep -------------------------------------------------------------------------


def _relaunches_script(trainer: pl.Trainer) -> bool:
    """True if Lightning will start ranks > 0 by re-running the command line (strategy=ddp)."""
    from lightning_fabric.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher as FabricLauncher,
    )
    from pytorch_lightning.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher,
    )

    strategy = trainer.strategy
    launcher = getattr(strategy, "launcher", None)
    if not isinstance(launcher, (_SubprocessScriptLauncher, FabricLauncher)):
        return False
    environment = getattr(strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    return trainer.world_size > 1 and not external


@contextlib.contextmanager
def ddp_children_run_this_job(trainer: pl.Trainer) -> Iterator[None]:
    """Around `trainer.fit`: make DDP's ranks > 0 run this sweep job, not the whole sweep.

    Lightning starts them as `python <script> <sys.argv[1:]> hydra.run.dir=<run.dir>`. In a
    sweep that would be the whole `-m` command, in another folder. For the duration of the
    launch, argv becomes this job's own overrides and run.dir this job's folder. Jobs of the
    joblib or submitit launchers do not run the script itself, so they cannot be relaunched.
    """
    if not (HydraConfig.initialized() and _relaunches_script(trainer)):
        yield
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield  # a single run: Lightning's own relaunch is right
        return
    launcher_target = str(hydra_cfg.launcher.get("_target_", ""))
    if not launcher_target.endswith("BasicLauncher"):
        raise ConfigError(
            f"trainer.strategy=ddp with {trainer.world_size} processes cannot start inside a job "
            f"of {launcher_target.rsplit('.', 1)[-1]}: Lightning restarts the script for each "
            "rank. Use DDP in single runs or sequential sweeps (the basic launcher), or on "
            "SLURM with hydra/launcher=slurm, which starts one task per device."
        )
    saved_argv = sys.argv
    saved_run_dir = OmegaConf.to_container(hydra_cfg.run, resolve=False)["dir"]
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg), open_dict(hydra_cfg):
            hydra_cfg.run.dir = saved_run_dir


def check_ddp_settings(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """cnnlab's datamodules shard their own batches; Lightning's sampler would shard again."""
    if trainer.world_size > 1 and cfg.trainer.get("use_distributed_sampler", True):
        raise ConfigError(
            "trainer.use_distributed_sampler=true is invalid with several processes: cnnlab's "
            "datamodules give each rank its own shard. Set trainer.use_distributed_sampler=false "
            "(as conf/trainer/default.yaml does)."
        )
