"""Guards that end a run early without losing what it has done: divergence and interruption.

* `DivergenceGuard` stops training once the training loss is NaN or infinite (or above an
  optional `max_loss`). The losses stay on the device; they are inspected together every
  `check_every_n_steps` steps and before every validation, so the check costs one host sync
  per N steps rather than one per step, and a diverged model is never checkpointed.
* `cnnlab.stopping.stop_on_signals` (entered by `cnnlab.runs.run_entry`) turns the first
  SIGINT or SIGTERM into a request; `StopOnSignal` honours it at the next batch boundary.
  The run then ends with its last epoch-end checkpoint intact, so resuming from it repeats
  the interrupted epoch exactly. A second signal stops at once.

Both raise a `cnnlab.stopping.RunStopped` error that carries the run's status and what it
kept; `run_entry` records it in `metrics.json` and turns it into the exit code.
"""

from __future__ import annotations

import logging
import math
import shlex
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cnnlab.callbacks import RunHistory
from cnnlab.stopping import Diverged, Interrupted, stop_request

log = logging.getLogger(__name__)


# -- what a stopped run keeps ------------------------------------------------------------------
def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint to resume from: this run's last one, else the one it resumed from."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") if callback is not None else ""
    if path and Path(path).is_file():
        return str(path)
    return str(trainer.ckpt_path) if trainer.ckpt_path else None


def progress_record(trainer: pl.Trainer) -> dict[str, Any]:
    """The finished epochs and the checkpoint of a run that stops early, for metrics.json."""
    history = next((c for c in trainer.callbacks if isinstance(c, RunHistory)), None)
    epochs = list(history.epochs) if history is not None else []
    return {
        "epochs": len(epochs),
        "steps": trainer.global_step,
        "history": epochs,
        "last_checkpoint": last_checkpoint(trainer),
    }


def resume_command(checkpoint: str) -> str:
    """The command that resumes this run: its own overrides plus `ckpt_path`."""
    overrides: list[str] = []
    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    overrides = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != "ckpt_path"]
    script = sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "src/train.py"
    return shlex.join(["python", script, *overrides, f"ckpt_path={checkpoint}"])


# -- divergence --------------------------------------------------------------------------------
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


# -- interruption ------------------------------------------------------------------------------
def interruption(trainer: pl.Trainer, signum: int) -> Interrupted:
    """The error that ends an interrupted run: where it stopped and how to resume it."""
    name = signal.Signals(signum).name
    record = progress_record(trainer)
    record["interrupted_at"] = {
        "epoch": trainer.current_epoch,
        "step": trainer.global_step,
        "signal": name,
    }
    stage = getattr(getattr(trainer, "state", None), "fn", None) or TrainerFn.FITTING
    if stage == TrainerFn.FITTING:
        where = (
            f"at epoch {trainer.current_epoch}, step {trainer.global_step}; "
            f"{record['epochs']} epoch(s) finished"
        )
    else:
        where = f"during {stage.value}"  # e.g. testing after training, or src/evaluate.py
    checkpoint = record["last_checkpoint"]
    if checkpoint:
        record["resume_command"] = resume_command(checkpoint)
        advice = f"Resume it with:\n  {record['resume_command']}"
    elif stage == TrainerFn.FITTING:
        advice = "No epoch had finished, so there is no checkpoint: run the same command again."
    else:
        advice = "Run the same command again."
    return Interrupted(signum, f"Interrupted by {name} {where}. {advice}", record)


class StopOnSignal(pl.Callback):
    """Ends training at a batch boundary once a stop signal arrived (see `stop_on_signals`).

    Raising between batches, never inside an optimizer step or a checkpoint write, leaves the
    last epoch-end checkpoint intact; resuming from it replays the interrupted epoch exactly.
    """

    def _stop_if_requested(self, trainer: pl.Trainer) -> None:
        signum = stop_request().signum
        if signum is not None:
            raise interruption(trainer, signum)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Lightning stopped the run itself: keep what `run_entry` needs to record it."""
        request = stop_request()
        if isinstance(exception, (KeyboardInterrupt, SystemExit)):
            request.stopped = interruption(trainer, request.signum or signal.SIGINT)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_requested(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_requested(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested(trainer)


# -- resumption --------------------------------------------------------------------------------
class ResumableModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose resumed run, in its own new folder, keeps the best so far.

    Lightning forgets the best score when a run resumes into another folder, so a resumed run
    would take its next epoch as the best and test a different checkpoint than the
    uninterrupted run. Here the best checkpoints are copied into the new folder (the old
    run's folder is never written to) and their scores kept.
    """

    @property
    def state_key(self) -> str:
        # Saved under ModelCheckpoint's key, so checkpoints of either class resume with either.
        # Cached: Lightning formats it for every hook of every step (its profiler's label), and
        # ModelCheckpoint builds it from the repr of its settings, fixed once constructed.
        key = self.__dict__.get("_cnnlab_state_key")
        if key is None:
            key = super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)
            self.__dict__["_cnnlab_state_key"] = key
        return key

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath", self.dirpath)
        best_k = state_dict.get("best_k_models") or {}
        if old_dir == self.dirpath or self.dirpath is None or not best_k:
            super().load_state_dict(state_dict)
            return
        if not all(Path(path).is_file() for path in best_k):
            log.warning("The best checkpoints of the resumed run are gone; best restarts here.")
            super().load_state_dict(state_dict)
            return
        moved = {path: str(Path(self.dirpath) / Path(path).name) for path in best_k}
        if rank_zero_only.rank == 0:  # one process writes checkpoints, as Lightning does
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)
            for old, new in moved.items():
                shutil.copy2(old, new)
        self.best_k_models = {moved[path]: score for path, score in best_k.items()}
        self.best_model_path = moved.get(state_dict.get("best_model_path", ""), "")
        self.best_model_score = state_dict.get("best_model_score")
        self.kth_best_model_path = moved.get(state_dict.get("kth_best_model_path", ""), "")
        self.kth_value = state_dict.get("kth_value", self.kth_value)
