"""The figures of a run and of a sweep report, drawn with matplotlib's non-interactive Agg canvas.

Figures are built as `matplotlib.figure.Figure` on a `FigureCanvasAgg`, never through pyplot,
so no GUI backend is touched (headless machines, parallel sweep jobs) and no global figure
state leaks between runs. Every text drawn from a run (labels, folder names, class names)
goes through `cnnlab.results.text.figure_text`: mathtext never parses it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab.results.confusion import normalize_rows
from cnnlab.results.text import figure_text

History = Sequence[Mapping[str, Any]]

# One line style for every figure of curves: training dashed, validation solid, both with
# markers, so that a series of one epoch still shows its point.
SPLIT_STYLES: dict[str, dict[str, str]] = {
    "train": {"linestyle": "--", "marker": "s"},
    "val": {"linestyle": "-", "marker": "o"},
}


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _pixels(figure: Figure) -> np.ndarray:
    """(H, W, 4) uint8 pixels at the figure's own dpi, drawn only if it changed since it was
    last drawn: a figure saved as PNG and also logged to TensorBoard is drawn once (drawing,
    with its layout, is most of a run's time after training)."""
    if figure.stale:
        figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())


def save_png(figure: Figure, path: Path, dpi: int = 100) -> Path:
    """Written whole or not at all (temporary file, then rename), like every file readers use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if dpi == figure.dpi:
            PIL.Image.fromarray(_pixels(figure)).save(tmp, format="png")
        else:
            figure.savefig(tmp, dpi=dpi, format="png")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def to_rgb(figure: Figure) -> np.ndarray:
    """(H, W, 3) uint8 pixels, for TensorBoard's Images tab."""
    return _pixels(figure)[..., :3].copy()


def wrap_label(label: str, width: int = 30) -> str:
    """Break a long override list after its commas and cut a very long label (the report's
    table has it whole), so labels never squeeze the axes away; drawn as written."""
    return figure_text(label, width, limit=4 * width)


def _series(history: History, key: str) -> tuple[list[int], list[float]]:
    """Epochs (0-based, as in metrics.json and checkpoint names) and values that logged `key`."""
    points = [
        (int(e["epoch"]), float(e[key]))
        for e in history
        if e.get(key) is not None and math.isfinite(float(e[key]))
    ]
    return [p[0] for p in points], [p[1] for p in points]


def curves_figure(history: History, title: str = "") -> Figure:
    """Two panels, loss and accuracy: training (dashed) versus validation (solid) per epoch."""
    figure = new_figure(10, 4)
    for ax, metric, label in zip(
        figure.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy"), strict=True
    ):
        for split, style in SPLIT_STYLES.items():
            epochs, values = _series(history, f"{split}/{metric}")
            ax.plot(epochs, values, **style, label=f"{split} {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label.capitalize()}: training (dashed) and validation (solid)")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if title:
        figure.suptitle(figure_text(title))
    return figure


def draw_confusion(
    ax: Axes,
    counts: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str],
    title: str,
    wrap: int | None = None,
) -> None:
    """Row-normalised matrix (rows = true class) with class names and each cell's value;
    the title wrapped to `wrap` characters."""
    normalised = normalize_rows(counts)
    size = len(normalised)
    ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    font = max(4.0, min(9.0, 90.0 / size))
    for row in range(size):
        for col in range(size):
            value = normalised[row, col]
            ax.text(
                col,
                row,
                "0" if value == 0 else f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=font,
                color="white" if value > 0.5 else "black",
            )
    ticks = np.arange(size)
    names = [figure_text(name) for name in class_names]
    ax.set_xticks(ticks, labels=names, rotation=45, ha="right", fontsize=font + 1)
    ax.set_yticks(ticks, labels=names, fontsize=font + 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(figure_text(title, wrap, limit=4 * wrap if wrap else None), fontsize=10)


def confusion_figure(
    counts: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str], title: str
) -> Figure:
    figure = new_figure(6.5, 6)
    draw_confusion(figure.subplots(), counts, class_names, title)
    return figure


def confusion_grid_figure(
    panels: Sequence[tuple[str, np.ndarray | Sequence[Sequence[int]], Sequence[str]]],
    title: str,
) -> Figure:
    """One normalised matrix per run, side by side (three per row): (label, counts, names)."""
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = new_figure(5.5 * columns, 6.0 * rows + 0.5)
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for ax, (label, counts, class_names) in zip(axes, panels, strict=False):
        draw_confusion(ax, counts, class_names, label, wrap=60)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    figure.suptitle(figure_text(title))
    return figure


def times_figure(labels: Sequence[str], seconds: Sequence[float]) -> Figure:
    """Training time per run, one bar each, value on top (the assignment's Fig. 7)."""
    figure = new_figure(max(5.0, 1.2 * len(labels) + 2), 4)
    ax = figure.subplots()
    bars = ax.bar(range(len(labels)), seconds, color="tab:blue")
    ax.bar_label(bars, labels=[f"{s:.1f} s" for s in seconds], fontsize=8)
    ax.set_xticks(
        range(len(labels)), labels=[wrap_label(x) for x in labels], rotation=30, ha="right"
    )
    ax.set_ylabel("training time (s)")
    ax.set_title("Training time per run")
    ax.grid(axis="y", alpha=0.3)
    return figure


def sweep_curves_figure(runs: Sequence[tuple[str, History]]) -> Figure:
    """Loss and accuracy per epoch of every run overlaid, training dashed and validation solid
    in the run's colour (the assignment's Figs. 5-6)."""
    figure = new_figure(11, 4.5)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, metric, label in zip(
        figure.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy"), strict=True
    ):
        for colour, (run_label, history) in zip(colours, runs, strict=True):
            for split, style in SPLIT_STYLES.items():
                epochs, values = _series(history, f"{split}/{metric}")
                which = "training" if split == "train" else "validation"
                name = f"{wrap_label(run_label, 45)} ({which})"
                name = f" {name}" if name.startswith("_") else name  # `_x` would be hidden
                ax.plot(epochs, values, **style, color=colour, markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{label.capitalize()}: training (dashed) and validation (solid)")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.legend(fontsize=7)
    return figure
