"""DDP inside sweeps: ranks > 0 re-create the current job, and Lightning's sampler stays off."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cnnlab.errors import ConfigError
from cnnlab.lightning_internals import relaunches_script
from cnnlab.scale.auto_launch import parallel_jobs_now


@contextlib.contextmanager
def ddp_children_run_this_job(trainer: pl.Trainer) -> Iterator[None]:
    """Around `trainer.fit`: make DDP's ranks > 0 run this sweep job, not the whole sweep.

    Lightning starts them as `python <script> <sys.argv[1:]> hydra.run.dir=<run.dir>`. In a
    sweep that would be the whole `-m` command, in another folder. For the duration of the
    launch, argv becomes this job's own overrides and run.dir this job's folder. Jobs of the
    joblib or submitit launchers do not run the script itself, so they cannot be relaunched.
    """
    if not (HydraConfig.initialized() and relaunches_script(trainer)):
        yield
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield  # a single run: Lightning's own relaunch is right
        return
    launcher_target = str(hydra_cfg.launcher.get("_target_", ""))
    in_sequence = launcher_target.endswith("BasicLauncher") or (
        launcher_target.endswith("AutoLauncher") and parallel_jobs_now() is None
    )
    if not in_sequence:
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
