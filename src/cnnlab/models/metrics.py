"""Metrics counted on the device inside the steps (torchmetrics, no host syncs per step)."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
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


class SampleMean(Metric):
    """Mean over samples of per-batch means, exact across DDP ranks of unequal sizes.

    Lightning's `sync_dist` mean divides the integer sample count by the world size
    (truncating), and torchmetrics' MeanMetric(nan_strategy="disable") drops the weights;
    this sums loss x batch size and batch sizes, which torchmetrics adds up on compute.
    NaN losses stay NaN.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, batch_mean: torch.Tensor, batch_size: int) -> None:
        # In place: `+=` would also re-assign the state through nn.Module.__setattr__.
        self.total.add_(batch_mean.detach().float(), alpha=batch_size)
        self.count.add_(batch_size)

    def compute(self) -> torch.Tensor:
        return self.total / self.count
