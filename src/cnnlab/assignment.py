"""The assignment's own API, `normalize_images` and `one_hot`: numpy in, numpy out, its exact
semantics.

`normalize_tensor` is the same maths on a tensor, used by the data path on the device.
"""

from __future__ import annotations

import numpy as np
import torch


def normalize_images(images: np.ndarray) -> np.ndarray:
    """Scale 8-bit pixels to [0, 1] as float32, exactly as the assignment does."""
    return np.asarray(images).astype("float32") / 255.0


def normalize_tensor(images: torch.Tensor) -> torch.Tensor:
    """The same maths as `normalize_images`, on a (uint8) tensor and its device."""
    return images.to(torch.float32) / 255.0


def one_hot(vector: np.ndarray, number_classes: int) -> np.ndarray:
    """One row per label with a single 1 in that label's column.

    Raises ValueError for labels that are negative, not below `number_classes`
    or not integers, since a silent wrong encoding would corrupt training.
    """
    labels = np.asarray(vector)
    if isinstance(number_classes, bool) or not isinstance(number_classes, (int, np.integer)):
        raise ValueError(f"number_classes must be an int, got {number_classes!r}")
    if number_classes < 1:
        raise ValueError(f"number_classes must be >= 1, got {number_classes}")
    if labels.ndim != 1:
        raise ValueError(f"one_hot expects a 1-D vector of labels, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        as_int = labels.astype(np.int64) if np.issubdtype(labels.dtype, np.number) else None
        if as_int is None or not np.array_equal(as_int, labels):
            raise ValueError(
                f"one_hot labels must be integers, got dtype {labels.dtype} "
                f"(e.g. {labels.flat[0]!r}); cast them with .astype(int) if they are whole numbers"
            )
        labels = as_int
    bad = labels[(labels < 0) | (labels >= number_classes)]
    if bad.size:
        raise ValueError(
            f"one_hot labels must lie in [0, {number_classes - 1}] for number_classes="
            f"{number_classes}; got out-of-range label(s) {sorted(set(bad.tolist()))[:10]}"
        )
    encoded = np.zeros((labels.size, number_classes), dtype=np.int64)
    encoded[np.arange(labels.size), labels] = 1
    return encoded
