"""The assignment's training log: Keras' `verbose=2` line per epoch, from a run's epoch metrics."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# cnnlab's metric names and Keras' names for them, in Keras' order.
_KERAS_NAMES = {
    "train/loss": "loss",
    "train/acc": "accuracy",
    "val/loss": "val_loss",
    "val/acc": "val_accuracy",
}


def keras_epoch_line(
    epoch: int, epochs: int | None, seconds: float, metrics: Mapping[str, Any]
) -> str:
    """e.g. `Epoch 3/30 - 12s - loss: 0.2345 - accuracy: 0.9312 - val_loss: ... - val_accuracy: ...`

    `epoch` counts from 0, as in metrics.json; Keras counts from 1, and so does the line.
    """
    parts = [f"Epoch {epoch + 1}/{epochs if epochs and epochs > 0 else '?'}", f"{seconds:.0f}s"]
    for name, keras_name in _KERAS_NAMES.items():
        value = metrics.get(name)
        if value is not None and math.isfinite(float(value)):
            parts.append(f"{keras_name}: {float(value):.4f}")
    return " - ".join(parts)


def keras_log(history: list[Mapping[str, Any]], epochs: int | None) -> list[str]:
    """A run's whole log, from `metrics.json`'s history."""
    return [
        keras_epoch_line(int(e["epoch"]), epochs, float(e.get("time/epoch_s") or 0.0), e)
        for e in history
    ]
