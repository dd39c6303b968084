"""What a run leaves besides its record: confusion matrices, per-class test metrics, figures.

`RunMatrices` holds the counts the module made during its steps (collected by
`cnnlab.training.callbacks.RunResults`, so no second pass over any data);
`write_run_files` turns them into the run's files of results, and `draw_run_figures`, called
once the run's record is written, into its figures: a figure that fails to draw is logged
and never changes the record. The sweep report is built from these files alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cnnlab.console import say
from cnnlab.file_names import CONFUSION_FILE, CURVES_FILE, PER_CLASS_FILE
from cnnlab.results.confusion import per_class_table
from cnnlab.results.figures import confusion_figure, curves_figure, save_png
from cnnlab.results.record import write_json
from cnnlab.results.text import plain

log = logging.getLogger(__name__)

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


def _shown(summary: dict[str, Any], matrices: RunMatrices) -> tuple[int | None, dict[str, Any]]:
    """The epoch whose matrices a run shows, and those matrices by split."""
    epoch = matrices_epoch(summary, matrices)
    return epoch, {
        "train": matrices.train.get(epoch) if epoch is not None else None,
        "val": matrices.val.get(epoch) if epoch is not None else None,
        "test": matrices.test,
    }


def write_run_files(output_dir: Path, summary: dict[str, Any], matrices: RunMatrices) -> None:
    """confusion.json and the per-class table (also added to `summary` for metrics.json):
    results, written before the record; the figures come after it (`draw_run_figures`)."""
    class_names = list(summary["class_names"])
    per_class = per_class_metrics(matrices, class_names)
    if per_class is not None:
        summary["test_per_class"] = per_class
    epoch, shown = _shown(summary, matrices)
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
        say(f"Per-class results on the test set:\n{table}")  # labelled beside other jobs

    times = summary.get("time", {})
    per_epoch = ", ".join(f"{s:.1f}" for s in times.get("per_epoch_s", []))
    log.info(
        "Training time: %.1f s in total; per epoch (s): %s", times.get("train_s", 0), per_epoch
    )


def draw_run_figures(
    output_dir: Path, summary: dict[str, Any], matrices: RunMatrices
) -> dict[str, Figure]:
    """curves.png and confusion_<split>.png; returns the figures drawn, by TensorBoard tag.

    Never raises for a figure: one that cannot be drawn or saved is logged as a warning and
    left out, so a completed run stays completed."""
    class_names = list(summary["class_names"])
    epoch, shown = _shown(summary, matrices)
    wanted: dict[str, tuple[str, Callable[[], Figure]]] = {
        "curves": (
            CURVES_FILE,
            lambda: curves_figure(summary.get("history", []), title=output_dir.name),
        )
    }
    for split, counts in shown.items():
        if counts is not None:
            title = _matrix_title(split, epoch, counts, summary)
            wanted[f"confusion/{split}"] = (
                confusion_png(split),
                lambda counts=counts, title=title: confusion_figure(counts, class_names, title),
            )
    figures = {}
    for tag, (name, draw) in wanted.items():
        try:
            figure = draw()
            save_png(figure, output_dir / name)
        except Exception as err:
            log.warning("%s could not be drawn (the run's results are kept): %s", name, plain(err))
            continue
        figures[tag] = figure
    return figures


def _matrix_title(split: str, epoch: int | None, counts: Counts, summary: dict[str, Any]) -> str:
    matrix = np.asarray(counts)
    accuracy = float(np.trace(matrix) / matrix.sum()) if matrix.sum() else float("nan")
    if split == "test":
        source = "best checkpoint" if (summary.get("best") or {}).get("checkpoint") else "final"
        return f"Test set ({source}, epoch {epoch}): accuracy {accuracy:.4f}"
    during = " (predictions during the epoch)" if split == "train" else ""
    return f"{SPLIT_NAMES[split]}, epoch {epoch}{during}: accuracy {accuracy:.4f}"
