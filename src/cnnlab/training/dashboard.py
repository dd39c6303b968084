"""What a run shows in TensorBoard: its scalars against the epoch, its confusion matrices and
its HPARAMS entry, laid out so that the first screen compares the runs' curves.

TensorBoard groups charts by the part of a tag before its first `/`, sorts the groups
alphabetically and opens the first two (Time Series, Scalars and Images alike), so the
per-epoch curves are named metric first (`loss/train`, `accuracy/val`): loss and accuracy
open, training beside validation, every run of a sweep on the same chart. Figures and HPARAMS
are written after the run's record and never raise: a dashboard that fails is logged as a
warning, and the run stays as it ended. Text values are shown plain (no control characters).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams

from cnnlab.config import to_plain
from cnnlab.results.figures import to_rgb
from cnnlab.results.text import plain
from cnnlab.training.extras import run_tags

log = logging.getLogger(__name__)


# The per-epoch curves, metric first: the groups `accuracy` and `loss` sort before every other
# group, so they are the two TensorBoard opens, two charts each (`val/acc_best`, a running
# maximum, stays in `val`). metrics.json and the CSV keep the logged names.
CURVE_TAGS = {
    "train/acc": "accuracy/train",
    "val/acc": "accuracy/val",
    "train/loss": "loss/train",
    "val/loss": "loss/val",
}
# LearningRateMonitor names its value after the optimizer's class (`lr-Adam`, `lr-Adam/pg2`):
# one `lr` chart instead, so that runs with different optimizers share it.
_LEARNING_RATE = re.compile(r"lr-[A-Za-z_]\w*(?P<group>/.+)?")
# The confusion matrices as images, in a group that sorts after the curves (`confusion` would
# come before `loss`); the run's curves.png is left out: the scalar charts are those curves.
FIGURE_TAGS = {
    f"confusion/{split}": f"normalised_confusion/{split}" for split in ("train", "val", "test")
}


def dashboard_tag(name: str) -> str:
    """The TensorBoard tag of a logged metric."""
    if name in CURVE_TAGS:
        return CURVE_TAGS[name]
    if match := _LEARNING_RATE.fullmatch(name):
        return "lr" + (match["group"] or "")
    return name


class EpochTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger, made to compare runs: every scalar is drawn against the
    epoch (runs with other batch sizes or datasets have other step counts), named by
    `dashboard_tag`, without a chart of the epoch itself. Values logged without an epoch
    (LearningRateMonitor's, at an epoch's start) wait for that epoch's first values.

    With `name: ""` and `version: ""` (conf/logger/tensorboard.yaml) the events go straight
    into the run folder, so TensorBoard names each run by its folder (`0_optimizer=adam`). No
    hparams.yaml is written there: the run's config is in `.hydra/`, its HPARAMS entry comes
    from `log_hparams`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch: int | None = None
        self._waiting: list[dict[str, Any]] = []

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        values = {dashboard_tag(name): v for name, v in metrics.items() if name != "epoch"}
        if "epoch" not in metrics:
            self._waiting.append(values)
            return
        self._epoch = int(metrics["epoch"])
        self._write_waiting()
        super().log_metrics(values, self._epoch)

    def _write_waiting(self) -> None:
        for values in self._waiting:
            super().log_metrics(values, self._epoch or 0)
        self._waiting.clear()

    @property
    def epoch(self) -> int | None:
        """The last epoch logged (None before the first)."""
        return self._epoch

    @rank_zero_only
    def save(self) -> None:
        """Flushes the events; Lightning's would also write hparams.yaml into the run folder."""
        self.experiment.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Values still waiting for an epoch that never came are drawn at the last one."""
        self._write_waiting()
        super().finalize(status)


def _tensorboards(loggers: Sequence[Logger]) -> list[TensorBoardLogger]:
    return [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]


def log_figures(
    loggers: Sequence[Logger], figures: dict[str, Figure], times: dict[str, Any], step: int
) -> None:
    """The run's confusion matrices in TensorBoard's images, and the total training time as a
    scalar. An `EpochTensorBoardLogger` draws them at the last epoch it logged (the test's,
    one past the last trained epoch), beside the test results; a plain one at `step`."""
    for logger in _tensorboards(loggers):
        at = step
        if isinstance(logger, EpochTensorBoardLogger) and logger.epoch is not None:
            at = logger.epoch
        for tag, figure in figures.items():
            if tag not in FIGURE_TAGS and isinstance(logger, EpochTensorBoardLogger):
                continue
            try:
                image = to_rgb(figure)
                logger.experiment.add_image(FIGURE_TAGS.get(tag, tag), image, at, dataformats="HWC")
            except Exception as err:
                log.warning("TensorBoard image %s could not be drawn: %s", tag, plain(err))
        try:
            if "train_s" in times:
                logger.experiment.add_scalar("time/train_s", float(times["train_s"]), at)
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
    swept: Sequence[str] = (),
) -> None:
    """Write the HPARAMS tab's entry: the run's hyperparameters against its real results (not
    Lightning's dummy hp_metric).

    Only the session's start and end are written, not an experiment summary per run:
    TensorBoard then builds the sweep's experiment from all its runs, notices which
    hyperparameters differ between them, and lists (and ticks) those first. Given one run's
    experiment summary it would show that run's hyperparameters alone, alphabetically. Its
    metrics are the run's scalars, each at its last value: `val/acc_best`, `test/acc`,
    `test/loss`, `time/train_s`, the final epoch's curves.
    """
    try:
        _write_hparams(loggers, cfg, choices, swept)
    except Exception as err:
        log.warning("TensorBoard's HPARAMS entry could not be written: %s", plain(err))


def _write_hparams(
    loggers: Sequence[Logger], cfg: DictConfig, choices: dict[str, Any], swept: Sequence[str]
) -> None:
    params = dashboard_hparams(cfg, choices, swept)
    for logger in _tensorboards(loggers):
        # The results are the run's own scalars (TensorBoard takes each one's last value), so
        # no scalars of their own: they would be charts of one point each.
        _, session_start, session_end = hparams(params, {})
        for entry in (session_start, session_end):
            logger.experiment.file_writer.add_summary(entry, 0)
        logger.experiment.flush()
