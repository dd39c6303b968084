"""Confusion matrices: counted on the device during the steps, normalised for the figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix


class ConfusionMatrix(MulticlassConfusionMatrix):
    """torchmetrics' multiclass confusion matrix (rows = true class), counted without a sync.

    torchmetrics counts with `torch.bincount`, which on CUDA reads the input's min and max
    back to the host: one device synchronisation per training step. `scatter_add_` into the
    fixed-size state counts the same cells without it, on every device (and deterministically:
    integer sums). State, `compute`, `reset` and distributed sync stay torchmetrics'.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        kwargs.setdefault("validate_args", False)  # validation costs host syncs per step
        super().__init__(num_classes, **kwargs)

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """`preds`: logits or probabilities (N, C), or class indices (N,); `target`: (N,)."""
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        cells = target.reshape(-1).long() * self.num_classes + preds.reshape(-1).long()
        self.confmat.view(-1).scatter_add_(0, cells, torch.ones_like(cells))


def normalize_rows(counts: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Each row (true class) divided by its total, so it sums to 1; a row without samples is
    all zeros (not NaN), so figures and sums stay meaningful for classes absent from a split."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    """The test set's per-class precision, recall (sensitivity) and specificity, as Markdown."""
    lines = [
        "| class | precision | recall (sensitivity) | specificity | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in per_class.items():
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | "
            f"{row['specificity']:.4f} | {int(row['support'])} |"
        )
    return "\n".join(lines)
