"""Confusion matrices as files and tables: numpy only, so the sweep report needs no torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnlab.results.text import markdown


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
            f"| {markdown(name)} | {row['precision']:.4f} | {row['recall']:.4f} | "
            f"{row['specificity']:.4f} | {int(row['support'])} |"
        )
    return "\n".join(lines)
