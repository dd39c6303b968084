"""Metrics counted on the device inside the steps (torchmetrics, no host syncs per step)."""

from __future__ import annotations

from typing import Any

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
