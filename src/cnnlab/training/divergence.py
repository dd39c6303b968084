"""Divergence: a run whose training loss turns NaN, infinite or too large stops, unsaved.

The losses stay on the device; they are inspected together every `check_every_n_steps`
steps and before every validation, so the check costs one host sync per N steps rather than
one per step, and a diverged model is never checkpointed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch

from cnnlab.errors import Diverged
from cnnlab.training.checkpoint import progress_record


def _number(value: float) -> float | str:
    """JSON has no NaN or infinity: those are written as strings."""
    return value if math.isfinite(value) else str(value)


@dataclass
class _StepLoss:
    """One training step's loss, still on the device, and where it happened."""

    loss: torch.Tensor
    epoch: int
    step: int
    batch: int
    lr: Any  # the optimizer's lr at that step (a float, or a tensor: read only when reported)


class DivergenceGuard(pl.Callback):
    """Stops a run whose training loss turned NaN or infinite, before its weights are saved.

    Lightning's `EarlyStopping(check_finite=True)` only looks at validation metrics once per
    epoch and ends the run as if it had finished (and the last checkpoint then holds NaN
    weights), so this guard raises `Diverged` instead: the run is recorded as diverged and the
    last checkpoint stays the last good one. It also stops on a non-finite validation loss
    (weights broken by the epoch's last step).
    """

    def __init__(self, check_every_n_steps: int = 50, max_loss: float | None = None) -> None:
        if int(check_every_n_steps) < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = int(check_every_n_steps)
        self.max_loss = math.inf if max_loss is None else float(max_loss)
        self._pending: list[_StepLoss] = []

    def _is_bad(self, loss: float) -> bool:
        return not math.isfinite(loss) or loss > self.max_loss

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # training_step skipped this batch
        lr = trainer.optimizers[0].param_groups[0].get("lr") if trainer.optimizers else None
        self._pending.append(
            _StepLoss(loss.detach(), trainer.current_epoch, trainer.global_step, batch_idx, lr)
        )
        if len(self._pending) >= self.check_every_n_steps:
            self._check_training_losses(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_training_losses(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Runs before ModelCheckpoint's hook (Lightning calls checkpoint callbacks last)."""
        if trainer.sanity_checking:
            return
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val") and name.endswith("loss") and self._is_bad(float(value)):
                where = {"epoch": trainer.current_epoch, "step": trainer.global_step}
                what = f"the validation loss {name} was {float(value)}"
                self._stop(trainer, what, where, float(value), lr=None)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_training_losses(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_training_losses(trainer)

    def _check_training_losses(self, trainer: pl.Trainer) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        losses = torch.stack([entry.loss.float() for entry in pending])
        bad = ~torch.isfinite(losses) | (losses > self.max_loss)
        if not bool(bad.any()):  # the one host sync per check
            return
        first = pending[int(bad.nonzero()[0, 0])]
        loss = float(first.loss)
        where = {"epoch": first.epoch, "step": first.step, "batch": first.batch}
        what = f"the training loss was {loss} at epoch {first.epoch}, step {first.step}"
        self._stop(trainer, what, where, loss, first.lr)

    def _stop(
        self, trainer: pl.Trainer, what: str, where: dict[str, int], loss: float, lr: Any
    ) -> None:
        limit = "" if math.isinf(self.max_loss) else f" (above max_loss={self.max_loss:g})"
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        setting = f" with {type(optimizer).__name__}" if optimizer is not None else ""
        if lr is not None:
            setting += f", lr {float(lr):g}"
        record = progress_record(trainer)
        kept = (
            f"The last checkpoint before it is kept: {record['last_checkpoint']}."
            if record["last_checkpoint"]
            else "No checkpoint had been written yet."
        )
        message = (
            f"Training diverged{setting}: {what}{limit}. Stopped at step {trainer.global_step} "
            f"(the loss is checked every {self.check_every_n_steps} steps and before each "
            f"validation). {kept} Try a smaller learning rate (optimizer.lr) or another optimizer."
        )
        raise Diverged(message, {"diverged_at": {**where, "loss": _number(loss)}, **record})
