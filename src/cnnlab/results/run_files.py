"""What a run leaves besides its record: confusion matrices, per-class test metrics, figures.

`RunMatrices` holds the counts the module made during its steps (collected by
`cnnlab.training.callbacks.RunResults`, so no second pass over any data);
`write_run_files` turns them into files in the run folder. The sweep report is built from
these files alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cnnlab.results.confusion import CONFUSION_FILE, per_class_table
from cnnlab.results.figures import CURVES_FILE, confusion_figure, curves_figure, save_png
from cnnlab.results.record import write_json

log = logging.getLogger(__name__)

PER_CLASS_FILE = "test_per_class.md"
SPLIT_NAMES = {"train": "Training set", "val": "Validation set", "test": "Test set"}

Counts = list[list[int]]


def confusion_png(split: str) -> str:
    return f"confusion_{split}.png"


@dataclass
class RunMatrices:
    """Confusion counts (rows = true class) of every epoch's training and validation steps,
    the test's, and the test's per-class precision, recall and specificity."""

    train: dict[int, Counts] = field(default_factory=dict)
    val: dict[int, Counts] = field(default_factory=dict)
    test: Counts | None = None
    test_per_class: dict[str, list[float]] | None = None

    def epochs(self) -> list[int]:
        return sorted(set(self.train) | set(self.val))


def matrices_epoch(summary: dict[str, Any], matrices: RunMatrices) -> int | None:
    """The epoch whose weights the test scored: the best checkpoint's, else the last one."""
    best = summary.get("best") or {}
    if best.get("checkpoint") and best.get("epoch") is not None:
        return int(best["epoch"])
    epochs = matrices.epochs()
    return epochs[-1] if epochs else None


def per_class_metrics(
    matrices: RunMatrices, class_names: Sequence[str]
) -> dict[str, dict[str, float]] | None:
    """Test precision, recall (sensitivity), specificity (torchmetrics) and support per class."""
    if matrices.test is None or matrices.test_per_class is None:
        return None
    support = np.asarray(matrices.test).sum(axis=1)
    stats = matrices.test_per_class
    return {
        name: {
            "precision": stats["precision"][i],
            "recall": stats["recall"][i],
            "specificity": stats["specificity"][i],
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }


def write_run_files(
    output_dir: Path, summary: dict[str, Any], matrices: RunMatrices
) -> dict[str, Figure]:
    """confusion.json, curves.png, confusion_<split>.png and the per-class table (also added
    to `summary` for metrics.json); returns the figures by TensorBoard tag."""
    class_names = list(summary["class_names"])
    per_class = per_class_metrics(matrices, class_names)
    if per_class is not None:
        summary["test_per_class"] = per_class
    epoch = matrices_epoch(summary, matrices)
    shown = {
        "train": matrices.train.get(epoch) if epoch is not None else None,
        "val": matrices.val.get(epoch) if epoch is not None else None,
        "test": matrices.test,
    }
    write_json(
        output_dir / CONFUSION_FILE,
        {
            "class_names": class_names,
            "rows": "true class",
            "columns": "predicted class",
            "epoch": epoch,
            **shown,
            "per_epoch": [
                {"epoch": e, "train": matrices.train.get(e), "val": matrices.val.get(e)}
                for e in matrices.epochs()
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
    for split, counts in shown.items():
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
    return figures


def _matrix_title(split: str, epoch: int | None, counts: Counts, summary: dict[str, Any]) -> str:
    matrix = np.asarray(counts)
    accuracy = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else float("nan")
    if split == "test":
        source = "best checkpoint" if (summary.get("best") or {}).get("checkpoint") else "final"
        return f"Test set ({source}, epoch {epoch}): accuracy {accuracy:.4f}"
    during = " (predictions during the epoch)" if split == "train" else ""
    return f"{SPLIT_NAMES[split]}, epoch {epoch}{during}: accuracy {accuracy:.4f}"
