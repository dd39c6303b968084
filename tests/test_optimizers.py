"""Every optimizer config trains where the project runs: speed flags are settled when the
optimizer is built, from the device and the torch at hand."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.models.optimizers import build_optimizer, flag_works
from cnnlab.training.run import train
from conftest import ROOT

OPTIMIZERS = sorted(path.stem for path in (ROOT / "conf" / "optimizer").glob("*.yaml"))


def _few_steps(data_dir: Path, optimizer: str, *extra: str) -> list[str]:
    return [
        f"optimizer={optimizer}",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.num_sanity_val_steps=0",
        "test=false",
        "logger=csv",
        "callbacks.progress_bar.enabled=false",
        "callbacks.model_checkpoint.enabled=false",
        *extra,
    ]


def _trained(summary: dict[str, Any]) -> list[float]:
    assert summary["status"] == "completed" and summary["steps"] == 8
    losses = [epoch["train/loss"] for epoch in summary["history"]]
    assert all(math.isfinite(loss) for loss in losses), losses
    return losses


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_config_trains_on_the_cpu(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, optimizer: str
) -> None:
    cfg = compose_cfg(_few_steps(synthetic_data_dir, optimizer, "trainer.accelerator=cpu"))
    _trained(train(cfg))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_config_trains_on_the_gpu(
    compose_cfg: Callable[..., DictConfig],
    synthetic_data_dir: Path,
    optimizer: str,
    precision: str,
) -> None:
    overrides = ["trainer.accelerator=gpu", f"trainer.precision={precision}"]
    _trained(train(compose_cfg(_few_steps(synthetic_data_dir, optimizer, *overrides))))


class _FusedOnlyElsewhere(torch.optim.SGD):
    """An optimizer whose fused kernel exists, but not for CPU parameters: as Adagrad's was
    CPU-only in torch 2.11, failing at the first step."""

    def __init__(self, params: Any, lr: float = 0.1, fused: bool | None = None) -> None:
        super().__init__(params, lr=lr)
        self.defaults["fused"] = fused

    def step(self, closure: Any = None) -> Any:
        if self.defaults["fused"]:
            raise RuntimeError("'fused=True' requires all the params to be on supported devices")
        return super().step(closure)


class _NoSpeedFlags(torch.optim.SGD):
    """An optimizer that takes neither flag (as Adadelta takes no `fused`)."""

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, lr=lr)


def _parameter() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(3))


def test_a_fused_kernel_this_torch_lacks_is_dropped_with_one_line_when_asked_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    asked = functools.partial(_FusedOnlyElsewhere, lr=0.1, fused=True)
    with caplog.at_level(logging.INFO, logger="cnnlab.models.optimizers"):
        optimizer = build_optimizer(asked, [_parameter()])
    assert optimizer.defaults["fused"] is None
    assert [r.getMessage() for r in caplog.records] == [
        "_FusedOnlyElsewhere: fused=True is not available for cpu torch.float32 parameters "
        f"with torch {torch.__version__.split('+')[0]}; using its default"
    ]
    caplog.clear()
    auto = functools.partial(_FusedOnlyElsewhere, lr=0.1, fused="auto")
    with caplog.at_level(logging.INFO, logger="cnnlab.models.optimizers"):
        assert build_optimizer(auto, [_parameter()]).defaults["fused"] is None
    assert not caplog.records  # auto: the fastest that works, silently


def test_auto_uses_the_fused_kernel_where_it_works_and_omits_a_flag_an_optimizer_lacks() -> None:
    adam = build_optimizer(functools.partial(torch.optim.Adam, fused="auto"), [_parameter()])
    assert adam.defaults["fused"] is flag_works(
        torch.optim.Adam, "fused", torch.device("cpu"), torch.float32
    )
    no_flag = functools.partial(_NoSpeedFlags, fused="auto", foreach="auto")
    assert isinstance(build_optimizer(no_flag, [_parameter()]), _NoSpeedFlags)
    both = functools.partial(torch.optim.SGD, lr=0.1, fused=True, foreach=True)
    built = build_optimizer(both, [_parameter()])
    if built.defaults["fused"]:
        assert built.defaults["foreach"] is None  # one or the other


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_no_optimizer_config_hard_codes_a_flag_that_may_crash(
    compose_cfg: Callable[..., DictConfig], optimizer: str
) -> None:
    config = compose_cfg([f"optimizer={optimizer}"]).optimizer
    assert config.get("fused", "auto") in ("auto", False, None)
    assert config.get("foreach", "auto") in ("auto", False, None)
    assert isinstance(build_optimizer(instantiate(config), [_parameter()]), torch.optim.Optimizer)
