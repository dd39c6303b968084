"""What a run shows in TensorBoard beyond its scalars: its figures and its HPARAMS entry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from cnnlab.results.figures import to_rgb
from cnnlab.training.checks import to_plain


def _tensorboards(loggers: Sequence[Logger]) -> list[TensorBoardLogger]:
    return [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]


def log_figures(
    loggers: Sequence[Logger], figures: dict[str, Figure], times: dict[str, Any], step: int
) -> None:
    """The run's figures in TensorBoard's Images tab, and the total training time as a scalar."""
    for logger in _tensorboards(loggers):
        for tag, figure in figures.items():
            logger.experiment.add_image(tag, to_rgb(figure), step, dataformats="HWC")
        if "train_s" in times:
            logger.log_metrics({"time/train_s": float(times["train_s"])}, step=step)
        logger.experiment.flush()


def dashboard_hparams(cfg: DictConfig, choices: dict[str, Any]) -> dict[str, Any]:
    """The knobs a sweep varies, flat, for TensorBoard's HPARAMS tab."""
    params: dict[str, Any] = {f"choice/{k}": str(v) for k, v in choices.items() if v is not None}
    for key, value in to_plain(cfg.optimizer).items():
        if key.startswith("_"):
            continue
        params[f"optimizer/{key}"] = (
            value if isinstance(value, (int, float, str, bool)) else str(value)
        )
    params["optimizer/name"] = str(cfg.optimizer._target_).rsplit(".", 1)[-1]
    params["data/batch_size"] = int(cfg.data.batch_size)
    params["trainer/max_epochs"] = int(cfg.trainer.max_epochs)
    params["seed"] = int(cfg.seed)
    return params


def log_hparams(
    loggers: Sequence[Logger], cfg: DictConfig, choices: dict[str, Any], summary: dict[str, Any]
) -> None:
    """Write the HPARAMS tab's entry with real results (not Lightning's dummy hp_metric)."""
    results = {
        "hparams/val_acc_best": summary["best"]["val/acc"],
        "hparams/test_acc": summary.get("test", {}).get("test/acc"),
        "hparams/test_loss": summary.get("test", {}).get("test/loss"),
        "hparams/train_time_s": summary["time"]["train_s"],
        "hparams/epochs": summary["epochs"],
    }
    results = {k: float(v) for k, v in results.items() if v is not None}
    for logger in _tensorboards(loggers):
        logger.log_hyperparams(dashboard_hparams(cfg, choices), metrics=results)
        logger.save()
