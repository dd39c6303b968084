"""What a run shows in TensorBoard beyond its scalars: its figures and its HPARAMS entry.

Both are written after the run's record and never raise: a dashboard that fails is logged as
a warning, and the run stays as it ended. Text values are shown plain (no control characters).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

from cnnlab.config import to_plain
from cnnlab.results.figures import to_rgb
from cnnlab.results.text import plain
from cnnlab.training.extras import run_tags

log = logging.getLogger(__name__)


def _tensorboards(loggers: Sequence[Logger]) -> list[TensorBoardLogger]:
    return [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]


def log_figures(
    loggers: Sequence[Logger], figures: dict[str, Figure], times: dict[str, Any], step: int
) -> None:
    """The run's figures in TensorBoard's Images tab, and the total training time as a scalar."""
    for logger in _tensorboards(loggers):
        for tag, figure in figures.items():
            try:
                logger.experiment.add_image(tag, to_rgb(figure), step, dataformats="HWC")
            except Exception as err:
                log.warning("TensorBoard image %s could not be drawn: %s", tag, plain(err))
        try:
            if "train_s" in times:
                logger.log_metrics({"time/train_s": float(times["train_s"])}, step=step)
            logger.experiment.flush()
        except Exception as err:
            log.warning("TensorBoard could not be written: %s", plain(err))


def _hparam(value: Any) -> Any:
    """TensorBoard takes numbers, strings and booleans; anything else is shown as text, and
    text without control characters (a label is shown, never run by a terminal)."""
    value = to_plain(value) if OmegaConf.is_config(value) else value
    return value if isinstance(value, (int, float, bool)) else plain(value)


def dashboard_hparams(
    cfg: DictConfig, choices: dict[str, Any], swept: Sequence[str] = ()
) -> dict[str, Any]:
    """What a comparison of runs needs, flat, for TensorBoard's HPARAMS tab: what the sweep
    varies first (`swept`: config keys and group names), then the optimizer and its settings,
    the net and its head, the dataset, batch size, epochs, precision, seed and tags. Bookkeeping
    choices (paths, logger, callbacks, hydra) are left out: they do not tell runs apart."""
    params: dict[str, Any] = {}
    for key in swept:
        value = choices[key] if key in choices else OmegaConf.select(cfg, key, default=None)
        if value is not None:
            params[key.replace(".", "/")] = _hparam(value)
    net = cfg.model.net
    usual: dict[str, Any] = {
        "optimizer": choices.get("optimizer") or str(cfg.optimizer._target_).rsplit(".", 1)[-1],
        **{
            f"optimizer/{k}": v
            for k, v in to_plain(cfg.optimizer).items()
            if not k.startswith("_") and v is not None
        },
        "model": choices.get("model") or str(net._target_).rsplit(".", 1)[-1],
        **{f"model/net/{k}": v for k, v in to_plain(net).items() if not k.startswith("_")},
        "data": choices.get("data") or str(cfg.data._target_).rsplit(".", 1)[-1],
        "data/batch_size": cfg.data.batch_size,
        "trainer/max_epochs": cfg.trainer.max_epochs,
        "trainer/precision": cfg.trainer.precision,
        "seed": cfg.seed,
        # one text value, so TensorBoard can filter runs by it (its hparams take no lists)
        "tags": ",".join(run_tags(cfg)),
    }
    for name, value in usual.items():
        params.setdefault(name, _hparam(value))
    return params


def log_hparams(
    loggers: Sequence[Logger],
    cfg: DictConfig,
    choices: dict[str, Any],
    summary: dict[str, Any],
    swept: Sequence[str] = (),
) -> None:
    """Write the HPARAMS tab's entry with real results (not Lightning's dummy hp_metric).

    Only the session's start and end are written, not an experiment summary per run:
    TensorBoard then builds the sweep's experiment from all its runs, notices which
    hyperparameters differ between them, and lists (and ticks) those first. Given one run's
    experiment summary it would show that run's hyperparameters alone, alphabetically.
    """
    try:
        _write_hparams(loggers, cfg, choices, summary, swept)
    except Exception as err:
        log.warning("TensorBoard's HPARAMS entry could not be written: %s", plain(err))


def _write_hparams(
    loggers: Sequence[Logger],
    cfg: DictConfig,
    choices: dict[str, Any],
    summary: dict[str, Any],
    swept: Sequence[str],
) -> None:
    results = {
        "hparams/val_acc_best": summary["best"]["val/acc"],
        "hparams/test_acc": summary.get("test", {}).get("test/acc"),
        "hparams/test_loss": summary.get("test", {}).get("test/loss"),
        "hparams/train_time_s": summary["time"]["train_s"],
        "hparams/epochs": summary["epochs"],
    }
    results = {k: float(v) for k, v in results.items() if v is not None}
    params = dashboard_hparams(cfg, choices, swept)
    for logger in _tensorboards(loggers):
        logger.log_metrics(results, step=0)
        _, session_start, session_end = hparams(params, results)
        for entry in (session_start, session_end):
            logger.experiment.file_writer.add_summary(entry, 0)
        logger.experiment.flush()
