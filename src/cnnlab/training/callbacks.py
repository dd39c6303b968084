"""The Lightning callbacks every run has: its history, its matrices, its config in checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary

from cnnlab.models.summary import keras_summary
from cnnlab.results.keras_log import keras_epoch_line
from cnnlab.results.run_files import Counts, RunMatrices
from cnnlab.scale.sweeps import shown_earlier_in_sweep

log = logging.getLogger(__name__)


def _now(pl_module: pl.LightningModule) -> float:
    """Wall time after queued accelerator work finishes (once per epoch boundary, not per step)."""
    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)
    return time.perf_counter()


def scalar(value: Any) -> float:
    """A logged value (a 0-d tensor or a number) as a float."""
    return float(value.item() if isinstance(value, torch.Tensor) else value)


@runtime_checkable
class EpochMetrics(Protocol):
    """What these callbacks read from a LightningModule, per stage ("train", "val", "test"),
    once per epoch; `ImageClassifier` has it, and a module without it still trains (its
    record then holds what it logs). docs/extending.md, "A metric"."""

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """The stage's metrics of this epoch so far, named as logged (`train/acc`)."""
        ...

    def confusion(self, stage: str) -> torch.Tensor | None:
        """The stage's confusion counts (true x predicted class), None if it saw no batch."""
        ...

    def class_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """Per-class values by name (e.g. `recall`), one per class; empty where not counted."""
        ...


class RunHistory(pl.Callback):
    """Per-epoch metrics and wall times, kept for `metrics.json` and the sweep report.

    Reads the epoch-level values Lightning already aggregated (no extra sync per step).
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.test_seconds: float | None = None
        self._epoch_start = 0.0
        self._train_end: float | None = None
        self._val_start = 0.0
        self._val_seconds = 0.0
        self._test_start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = _now(pl_module)
        self._train_end = None
        self._val_seconds = 0.0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = _now(pl_module)
        if self._train_end is None and not trainer.sanity_checking:
            self._train_end = self._val_start  # validation runs at the end of the epoch

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_seconds += _now(pl_module) - self._val_start

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record: dict[str, float] = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        metrics = dict(trainer.callback_metrics)
        # Lightning calls this hook before the module's own `on_train_epoch_end`, where
        # ImageClassifier logs its training metrics: read them from the module directly.
        if isinstance(pl_module, EpochMetrics):
            metrics.update(pl_module.epoch_metrics("train"))
        for name, value in metrics.items():
            if name.startswith(("train/", "val/")):
                record[name] = scalar(value)
        now = _now(pl_module)
        elapsed = now - self._epoch_start
        record["time/epoch_s"] = elapsed
        record["time/train_s"] = (self._train_end or now) - self._epoch_start
        record["time/val_s"] = self._val_seconds
        self.epochs.append(record)
        pl_module.log("time/epoch_s", elapsed, on_step=False, on_epoch=True, sync_dist=True)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_start = _now(pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test_seconds = _now(pl_module) - self._test_start

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Merge by epoch, never replace: resuming fills in the epochs before the checkpoint,
        while `trainer.test` (which restores callbacks from the best checkpoint, often an
        earlier epoch) must not roll back the epochs this run finished."""
        merged = {int(e["epoch"]): e for e in state_dict.get("epochs", [])}
        merged.update({int(e["epoch"]): e for e in self.epochs})
        self.epochs = [merged[epoch] for epoch in sorted(merged)]


class ConfigInCheckpoint(pl.Callback):
    """Stores the composed run config in every checkpoint, so evaluation needs only the file."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["cnnlab_config"] = self.config


def _counts(pl_module: pl.LightningModule, stage: str) -> Counts | None:
    """The stage's matrix as plain ints, or None when it saw no batch (nothing to report)."""
    if not isinstance(pl_module, EpochMetrics):
        return None
    counts = pl_module.confusion(stage)
    return None if counts is None else counts.cpu().tolist()


class RunResults(pl.Callback):
    """Keeps the train and validation confusion counts of every epoch and the test's.

    The module counts on the device in its steps and resets at each epoch start; this reads
    the totals once per epoch (one transfer of C x C ints), never per step.
    """

    def __init__(self) -> None:
        # Under DDP every rank computes the same synced totals; rank zero writes the files.
        self.matrices = RunMatrices()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = _counts(pl_module, "train")
        if counts is not None:
            self.matrices.train[trainer.current_epoch] = counts

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        counts = _counts(pl_module, "val")
        if counts is not None:
            self.matrices.val[trainer.current_epoch] = counts

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.matrices.test = _counts(pl_module, "test")
        per_class = pl_module.class_metrics("test") if isinstance(pl_module, EpochMetrics) else {}
        if self.matrices.test is not None and per_class:
            self.matrices.test_per_class = {k: v.cpu().tolist() for k, v in per_class.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.matrices.train, "val": self.matrices.val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Merge, never replace: resuming fills in the earlier epochs, while `trainer.test`
        (which restores callbacks from the best checkpoint) must not drop the later ones."""
        for name in ("train", "val"):
            saved = {int(k): v for k, v in state_dict.get(name, {}).items()}
            setattr(self.matrices, name, {**saved, **getattr(self.matrices, name)})


class KerasEpochLines(pl.Callback):
    """One line per epoch in the console and train.log, as the assignment's Keras `verbose=2`
    prints: `Epoch 3/30 - 12s - loss: 0.2345 - accuracy: 0.9312 - val_loss: 0.2567 - ...`."""

    def __init__(self) -> None:
        self._start = 0.0  # beside other jobs the console labels each line (cnnlab.console)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: scalar(v) for k, v in trainer.callback_metrics.items()}
        if isinstance(pl_module, EpochMetrics):  # logged by the module only after this hook
            metrics.update({k: scalar(v) for k, v in pl_module.epoch_metrics("train").items()})
        seconds = _now(pl_module) - self._start
        line = keras_epoch_line(trainer.current_epoch, trainer.max_epochs, seconds, metrics)
        log.info("%s", line)


class SaveModelSummary(pl.Callback):
    """Keeps the net's summary (layers, output shapes, parameters, as Keras' `model.summary()`)
    in the run folder as text, so a report can show it without building the net again."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net, shape = getattr(pl_module, "net", None), getattr(pl_module, "hparams", {})
        if trainer.is_global_zero and net is not None and "sample_shape" in shape:
            title = str(shape.get("net", {}).get("_target_", "")).rsplit(".", 1)[-1]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # The precision's context makes the example input the weights' dtype (bf16-true).
            with trainer.precision_plugin.forward_context():
                text = keras_summary(net, shape["sample_shape"], title)
            self.path.write_text(text)


class OncePerSweepModelSummary(ModelSummary):
    """Lightning's model summary, printed once per distinct model in a sweep: a job whose
    module an earlier job of the sweep already summarised says so in one line instead of
    printing the same table again (three optimizers on one net: one table). A single run
    prints it as Lightning does."""

    def __init__(self, max_depth: int = 1, **summarize_kwargs: Any) -> None:
        super().__init__(max_depth, **summarize_kwargs)
        self.prints = max_depth != 0  # 0: Lightning prints nothing, so nothing to claim

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prints and trainer.is_global_zero:
            shape = getattr(pl_module, "hparams", {}).get("sample_shape")
            earlier = shown_earlier_in_sweep(f"model summary|{pl_module!r}|{shape}")
            if earlier is not None:
                log.info("Model summary: the same as %s's", earlier)
                return
        super().on_fit_start(trainer, pl_module)
