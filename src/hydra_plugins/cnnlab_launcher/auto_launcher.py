"""The default launcher of sweeps: joblib where jobs side by side pay, else the basic one."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class AutoLauncher(Launcher):
    def __init__(self, jobs_per_gpu: int = 2, joblib: Any = None) -> None:
        self.jobs_per_gpu, self.joblib = int(jobs_per_gpu), joblib or {}
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        from cnnlab.commands import make_command
        from cnnlab.scale import auto_launch, parallel_stop
        from cnnlab.scale.job_resources import usable_cores, visible_gpus

        assert self.config is not None and self.hydra_context is not None
        loader = self.hydra_context.config_loader
        job_cfgs = [loader.load_sweep_config(self.config, list(o)) for o in job_overrides]
        at_once, why = auto_launch.choose(
            job_cfgs, usable_cores(), len(visible_gpus()), self.jobs_per_gpu
        )
        print(f"[launcher auto] {why} (hydra/launcher=basic: always in sequence)", flush=True)
        launcher: Launcher
        if at_once == 1:
            launcher = BasicLauncher()
        else:
            from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

            launcher = JoblibLauncher(**auto_launch.joblib_settings(self.joblib, at_once))
        launcher.setup(
            hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
        )
        if at_once == 1:
            return launcher.launch(job_overrides, initial_job_idx)
        auto_launch.set_parallel_jobs(at_once)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        with parallel_stop.pass_stop_signals_to_workers(sweep_dir) as stop:
            try:
                return launcher.launch(job_overrides, initial_job_idx)
            except BaseException:
                if not stop.at_once:
                    raise
                print(
                    f"Error: the sweep was stopped at once by {stop.name}; each job's "
                    "metrics.json says where it stopped. Resume it with: "
                    f"{make_command('resume', DIR=sweep_dir)}",
                    file=sys.stderr,
                )
                sys.exit(128 + signal.Signals[stop.name].value)
            finally:
                auto_launch.set_parallel_jobs(None)
