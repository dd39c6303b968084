"""Speed tricks applied to a run's LightningModule from outside it, each behind one switch of
`conf/train.yaml`: the module a researcher copies stays plain PyTorch Lightning.

- `channels_last`: NHWC weights and inputs (`cnnlab.speed.layout` says where that pays);
- `compile_net`: `torch.compile` of the module's forward, in place, so checkpoints keep
  the plain module's keys;
- `cuda_graph`: the training step captured as one CUDA graph (`cnnlab.speed.cuda_graph`).

Both are callbacks, applied once the Trainer says where the run is (their `setup`), and
neither changes what is computed beyond the summation order.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from cnnlab.errors import ConfigError
from cnnlab.speed.cuda_graph import CudaGraphStep
from cnnlab.speed.layout import CHANNELS_LAST_CHOICES, use_channels_last

log = logging.getLogger(__name__)


def _to_nhwc(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """A forward pre-hook: a 4-d image batch in, the same batch in NHWC memory."""
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def has_convolutions(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in module.modules())


class ChannelsLast(pl.Callback):
    """Convolutions in NHWC: the module's 4-d weights and its forward's image batches.

    `setting` is the run's `channels_last`: true, false, or auto (NHWC where it measured
    faster, and only for a module with convolutions). Decided once per module, on the device
    the Trainer runs it on; fitting and testing the same module apply it once.
    """

    def __init__(self, setting: bool | str = "auto") -> None:
        if setting not in CHANNELS_LAST_CHOICES:
            raise ConfigError(f"channels_last={setting!r} is invalid: use auto, true or false")
        self.setting = setting
        self._decided: weakref.WeakKeyDictionary[torch.nn.Module, bool] = (
            weakref.WeakKeyDictionary()
        )

    def enabled_for(self, module: torch.nn.Module, device: torch.device) -> bool:
        if self.setting == "auto" and not has_convolutions(module):
            return False
        return use_channels_last(self.setting, device)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if pl_module in self._decided:
            return
        enabled = self.enabled_for(pl_module, trainer.strategy.root_device)
        self._decided[pl_module] = enabled
        if enabled:
            pl_module.to(memory_format=torch.channels_last)
            pl_module.register_forward_pre_hook(_to_nhwc)
            log.debug("channels_last: NHWC weights and inputs")


class CompileNet(pl.Callback):
    """`torch.compile` of the module's forward (`nn.Module.compile`: in place, so the
    state_dict, and so checkpoints, keep the plain module's keys)."""

    def __init__(self) -> None:
        self._compiled: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if pl_module not in self._compiled:
            self._compiled.add(pl_module)
            pl_module.compile()


def net_speedups(cfg: DictConfig) -> list[pl.Callback]:
    """The callbacks the run's speed switches (`channels_last`, `compile_net`, `cuda_graph`)
    ask for."""
    callbacks: list[pl.Callback] = []
    if cfg.get("channels_last", False) is not False:
        callbacks.append(ChannelsLast(cfg.channels_last))
    if cfg.get("compile_net"):
        callbacks.append(CompileNet())
    if cfg.get("cuda_graph", False) is not False:
        callbacks.append(CudaGraphStep(cfg.cuda_graph))
    return callbacks
