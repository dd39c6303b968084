"""A run's figures are drawn once each: the PNG and TensorBoard's image share one drawing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from cnnlab.results import figures


def test_a_figure_saved_and_logged_is_drawn_once_with_savefigs_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = np.arange(100).reshape(10, 10)
    figure = figures.confusion_figure(counts, [f"class {i}" for i in range(10)], "Test set")
    draws: list[int] = []
    draw = figure.canvas.draw
    monkeypatch.setattr(figure.canvas, "draw", lambda: (draws.append(1), draw())[1])
    figures.save_png(figure, tmp_path / "confusion.png")
    rgb = figures.to_rgb(figure)
    assert len(draws) == 1
    reference = figures.confusion_figure(counts, [f"class {i}" for i in range(10)], "Test set")
    reference.savefig(tmp_path / "reference.png", dpi=100, format="png")
    saved = np.asarray(PIL.Image.open(tmp_path / "confusion.png"))
    assert np.array_equal(saved, np.asarray(PIL.Image.open(tmp_path / "reference.png")))
    assert np.array_equal(rgb, saved[..., :3])
    # A change after the drawing is drawn again; another dpi is saved by savefig.
    figure.axes[0].set_title("changed")
    figures.to_rgb(figure)
    assert len(draws) == 2
    figures.save_png(figure, tmp_path / "large.png", dpi=150)
    assert np.asarray(PIL.Image.open(tmp_path / "large.png")).shape[0] == saved.shape[0] * 3 // 2
