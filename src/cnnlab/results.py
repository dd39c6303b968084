"""What a run leaves besides its record: confusion matrices, per-class test metrics, figures.

`RunResults` collects the matrices the module counted during its steps (no second pass over
any data); `write_run_results` turns them into files in the run folder and TensorBoard images.
The sweep report (`cnnlab.report`) is built from these files alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torchmetrics import Metric

from cnnlab.confusion import CONFUSION_FILE, per_class_table
from cnnlab.figures import CURVES_FILE, confusion_figure, curves_figure, save_png, to_rgb
from cnnlab.runs import write_json

log = logging.getLogger(__name__)

PER_CLASS_FILE = "test_per_class.md"
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "Training set", "val": "Validation set", "test": "Test set"}

Counts = list[list[int]]


def confusion_png(split: str) -> str:
    return f"confusion_{split}.png"


def _counts(metric: Metric | None) -> Counts | None:
    """The metric's matrix as plain ints, or None when it saw no batch (nothing to report)."""
    if metric is None or metric.update_count == 0:
        return None
    return metric.compute().cpu().tolist()


class RunResults(pl.Callback):
    """Keeps the train and validation confusion counts of every epoch and the test's.

    The module counts on the device in its steps and resets at each epoch start; this reads
    the totals once per epoch (one transfer of C x C ints), never per step.
    """

    def __init__(self) -> None:
        self.train: dict[int, Counts] = {}
        self.val: dict[int, Counts] = {}
        self.test: Counts | None = None
        self.test_per_class: dict[str, list[float]] | None = None
        # Under DDP every rank computes the same synced totals; only rank zero writes files.
        self.is_global_zero = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.is_global_zero = trainer.is_global_zero

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = _counts(getattr(pl_module, "train_confusion", None))
        if counts is not None:
            self.train[trainer.current_epoch] = counts

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        counts = _counts(getattr(pl_module, "val_confusion", None))
        if counts is not None:
            self.val[trainer.current_epoch] = counts

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.test = _counts(getattr(pl_module, "test_confusion", None))
        per_class = getattr(pl_module, "test_per_class", None)
        if self.test is not None and per_class is not None:
            self.test_per_class = {k: v.cpu().tolist() for k, v in per_class.compute().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Merge, never replace: resuming fills in the earlier epochs, while `trainer.test`
        (which restores callbacks from the best checkpoint) must not drop the later ones."""
        for name in ("train", "val"):
            saved = {int(k): v for k, v in state_dict.get(name, {}).items()}
            setattr(self, name, {**saved, **getattr(self, name)})


def matrices_epoch(summary: dict[str, Any], results: RunResults) -> int | None:
    """The epoch whose weights the test scored: the best checkpoint's, else the last one."""
    best = summary.get("best") or {}
    if best.get("checkpoint") and best.get("epoch") is not None:
        return int(best["epoch"])
    epochs = set(results.train) | set(results.val)
    return max(epochs) if epochs else None


def per_class_metrics(
    results: RunResults, class_names: Sequence[str]
) -> dict[str, dict[str, float]] | None:
    """Test precision, recall (sensitivity), specificity (torchmetrics) and support per class."""
    if results.test is None or results.test_per_class is None:
        return None
    support = np.asarray(results.test).sum(axis=1)
    stats = results.test_per_class
    return {
        name: {
            "precision": stats["precision"][i],
            "recall": stats["recall"][i],
            "specificity": stats["specificity"][i],
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }


def write_run_results(
    output_dir: Path, summary: dict[str, Any], results: RunResults, loggers: Sequence[Logger]
) -> None:
    """confusion.json, curves.png, confusion_<split>.png, the per-class table (also added to
    `summary` for metrics.json) and TensorBoard images; logs the training time."""
    class_names = list(summary["class_names"])
    per_class = per_class_metrics(results, class_names)
    if per_class is not None:
        summary["test_per_class"] = per_class
    if not results.is_global_zero:
        return
    epoch = matrices_epoch(summary, results)
    matrices = {
        "train": results.train.get(epoch) if epoch is not None else None,
        "val": results.val.get(epoch) if epoch is not None else None,
        "test": results.test,
    }
    write_json(
        output_dir / CONFUSION_FILE,
        {
            "class_names": class_names,
            "rows": "true class",
            "columns": "predicted class",
            "epoch": epoch,
            **matrices,
            "per_epoch": [
                {"epoch": e, "train": results.train.get(e), "val": results.val.get(e)}
                for e in sorted(set(results.train) | set(results.val))
            ],
        },
    )

    if per_class is not None:
        table = per_class_table(per_class)
        (output_dir / PER_CLASS_FILE).write_text(
            f"Per-class results on the test set ({summary.get('output_dir', output_dir)})\n\n"
            f"{table}\n"
        )
        print(f"Per-class results on the test set:\n{table}")

    figures = {"curves": curves_figure(summary.get("history", []), title=output_dir.name)}
    save_png(figures["curves"], output_dir / CURVES_FILE)
    for split, counts in matrices.items():
        if counts is None:
            continue
        figures[f"confusion/{split}"] = confusion_figure(
            counts, class_names, _matrix_title(split, epoch, counts, summary)
        )
        save_png(figures[f"confusion/{split}"], output_dir / confusion_png(split))

    times = summary.get("time", {})
    per_epoch = ", ".join(f"{s:.1f}" for s in times.get("per_epoch_s", []))
    log.info(
        "Training time: %.1f s in total; per epoch (s): %s", times.get("train_s", 0), per_epoch
    )
    _log_to_tensorboard(loggers, figures, times, int(summary.get("steps") or 0))


def _matrix_title(split: str, epoch: int | None, counts: Counts, summary: dict[str, Any]) -> str:
    matrix = np.asarray(counts)
    accuracy = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else float("nan")
    if split == "test":
        source = "best checkpoint" if (summary.get("best") or {}).get("checkpoint") else "final"
        return f"Test set ({source}, epoch {epoch}): accuracy {accuracy:.4f}"
    during = " (predictions during the epoch)" if split == "train" else ""
    return f"{SPLIT_NAMES[split]}, epoch {epoch}{during}: accuracy {accuracy:.4f}"


def _log_to_tensorboard(
    loggers: Sequence[Logger], figures: dict[str, Any], times: dict[str, Any], step: int
) -> None:
    """The same figures in TensorBoard's Images tab, and the total training time as a scalar."""
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        for tag, figure in figures.items():
            logger.experiment.add_image(tag, to_rgb(figure), step, dataformats="HWC")
        if "train_s" in times:
            logger.log_metrics({"time/train_s": float(times["train_s"])}, step=step)
        logger.experiment.flush()
