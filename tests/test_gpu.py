"""The GPU path, on a real GPU (`make gpu-check`; skipped where CUDA is absent)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from cnnlab.training.run import train
from conftest import metrics_of, run_cli

pytestmark = pytest.mark.gpu


def _gpu_run(data_dir: Path, *overrides: str) -> list[str]:
    return [
        f"paths.data_dir={data_dir}",
        "trainer.accelerator=gpu",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=20",
        "callbacks.progress_bar.enabled=false",
        "logger=csv",
        *overrides,
    ]


class _BatchWatch(pl.Callback):
    """Where each training batch is when the step gets it, and the host-to-device copies the
    profiler saw over steps `first` to `last` of the second epoch.

    Only steps are watched: an epoch's boundaries copy a few small tensors once (metric
    resets, Lightning's logged values, the epoch's index order), which is not per step.
    """

    def __init__(self, first: int = 2, last: int = 17) -> None:
        self.first, self.last = first, last
        self.devices: list[str] = []
        self.copies = 0
        self.steps = 0
        self._profiler: Any = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, i: int) -> None:
        self.devices.append(batch[0].device.type)
        if trainer.current_epoch == 1 and i == self.first:
            torch.cuda.synchronize()
            self._profiler = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CUDA]
            )
            self._profiler.__enter__()

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, out: Any, b: Any, i: int
    ) -> None:
        if self._profiler is None:
            return
        self.steps += 1
        if i == self.last:
            torch.cuda.synchronize()
            self._profiler.__exit__(None, None, None)
            events = self._profiler.key_averages()
            self.copies = sum(e.count for e in events if "Memcpy HtoD" in e.key)
            self._profiler = None


def test_the_data_lives_on_the_gpu_and_no_batch_is_copied_from_the_host(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    watch = _BatchWatch()
    summary = train(compose_cfg(_gpu_run(synthetic_data_dir, "test=false")), [watch])
    assert summary["status"] == "completed"
    assert set(watch.devices) == {"cuda"}
    # Steps 2 to 17 of 20: no copy from the host inside them.
    assert watch.steps == 16 and watch.copies < watch.steps / 4, watch.copies


@pytest.mark.parametrize(
    "switches",
    [["trainer.precision=bf16-mixed"], ["channels_last=true"], ["compile_net=true"]],
)
def test_fast_switches_train_to_finite_sensible_losses(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, switches: list[str]
) -> None:
    summary = train(compose_cfg(_gpu_run(synthetic_data_dir, *switches)))
    losses = [e["train/loss"] for e in summary["history"]]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_deterministic_runs_with_one_seed_give_the_same_metrics(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    records = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = _gpu_run(synthetic_data_dir, "trainer.deterministic=true", f"paths.log_dir={out}")
        result = run_cli("train.py", *args, env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
        assert result.returncode == 0, result.stderr[-3000:]
        records.append(metrics_of(next(out.glob("train/runs/*"))))
    assert records[0]["history"][-1]["train/loss"] == records[1]["history"][-1]["train/loss"]
    assert records[0]["test"]["test/acc"] == records[1]["test"]["test/acc"]


def test_a_checkpoint_trained_on_the_gpu_evaluates_on_the_cpu(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    trained = run_cli("train.py", *_gpu_run(synthetic_data_dir, f"paths.log_dir={tmp_path}"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = metrics_of(next(tmp_path.glob("train/runs/*")))
    evaluated = run_cli(
        "evaluate.py",
        f"ckpt_path={record['best']['checkpoint']}",
        "accelerator=cpu",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={synthetic_data_dir}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scored = metrics_of(next(tmp_path.glob("eval/runs/*")))
    assert scored["test"]["test/acc"] == pytest.approx(record["test"]["test/acc"], abs=2e-3)
