"""What TensorBoard and the curve figures show, checked on the objects themselves: the logger's
tags and steps, a retried job's cleared events, the figures' line styles (no training run)."""

from pathlib import Path

import pytest
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.results.figures import curves_figure, sweep_curves_figure
from cnnlab.scale.sweeps import clear_attempt
from cnnlab.training.dashboard import EpochTensorBoardLogger, dashboard_tag


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder), size_guidance={})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tags_put_loss_and_accuracy_first_and_one_learning_rate_for_every_optimizer() -> None:
    groups = sorted({dashboard_tag(t).split("/")[0] for t in ("train/loss", "val/acc", "lr-Adam")})
    assert groups[:2] == ["accuracy", "loss"]
    assert [dashboard_tag(t) for t in ("train/acc", "val/loss", "val/acc_best")] == [
        "accuracy/train",
        "loss/val",
        "val/acc_best",  # a running maximum: not a third chart on the first screen
    ]
    assert [dashboard_tag(t) for t in ("lr-Adadelta", "lr-Adam/pg2", "lr-Adam-momentum")] == [
        "lr",
        "lr/pg2",
        "lr-Adam-momentum",  # not a learning rate: kept as logged
    ]
    assert dashboard_tag("val/f1") == "val/f1" and dashboard_tag("test/acc") == "test/acc"


def test_the_logger_draws_every_scalar_at_its_epoch_in_the_run_folder(tmp_path: Path) -> None:
    """Lightning logs the epoch beside each value and the global step as `step`; the learning
    rate comes first, without an epoch, and is drawn at the epoch that follows."""
    logger = EpochTensorBoardLogger(str(tmp_path), name="", version="", default_hp_metric=False)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"lr-Adam": 0.1}, step=0)
    logger.log_metrics({"train/loss": 2.0, "epoch": 0.0}, step=40)
    logger.log_metrics({"lr-Adam": 0.05}, step=40)
    logger.log_metrics({"val/acc": 0.5, "train/loss": 1.0, "epoch": 1}, step=80)
    logger.log_metrics({"lr-Adam": 0.01}, step=80)  # an epoch that was stopped at once
    logger.save()
    logger.finalize("success")
    assert _scalars(tmp_path) == {
        "lr": [(0, pytest.approx(0.1)), (1, pytest.approx(0.05)), (1, pytest.approx(0.01))],
        "loss/train": [(0, 2.0), (1, 1.0)],
        "accuracy/val": [(1, 0.5)],
    }
    assert logger.epoch == 1
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("events.")] == []


def test_a_retried_job_starts_without_its_failed_attempts_events(tmp_path: Path) -> None:
    (tmp_path / "events.out.tfevents.1.host.1.0").write_bytes(b"old")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "metrics.json").write_text("{}")
    clear_attempt(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# -- one line style for training and validation in every figure of curves --------------------------
ONE_EPOCH = [{"epoch": 0, "train/loss": 1.0, "val/loss": 0.9, "train/acc": 0.5, "val/acc": 0.6}]


@pytest.mark.parametrize(
    ("figure", "lines_per_panel"),
    [
        (curves_figure(ONE_EPOCH), 2),
        (sweep_curves_figure([("adam", ONE_EPOCH), ("adagrad", ONE_EPOCH)]), 4),
    ],
    ids=["run", "sweep"],
)
def test_training_is_dashed_and_validation_solid_with_a_marker_on_each_epoch(
    figure: Figure, lines_per_panel: int
) -> None:
    lines = [line for ax in figure.axes for line in ax.get_lines()]
    assert len(figure.axes) == 2 and len(lines) == 2 * lines_per_panel
    for line in lines:
        label = str(line.get_label())  # "train loss", "val loss", "adam (training)", ...
        training = label.startswith("train") or label.endswith("(training)")
        assert line.get_linestyle() == ("--" if training else "-"), label
        assert line.get_marker() not in ("", "None", None), f"{label}: one epoch draws nothing"
        assert len(line.get_xdata()) == 1
