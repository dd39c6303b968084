"""The one training run: build (datamodule -> model -> callbacks -> loggers -> trainer), fit,
test, then the record, the run's files and its dashboards.

`src/train.py` is the thin Hydra entry point around `train`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from cnnlab.config import to_plain
from cnnlab.console import job_label, say
from cnnlab.data.datamodule import ImageDataModule
from cnnlab.data.files import folder_lock
from cnnlab.errors import CnnlabError
from cnnlab.models.classifier import ImageClassifier
from cnnlab.results.record import RunRecord
from cnnlab.results.run_files import draw_run_figures, write_run_files
from cnnlab.scale.ddp import check_ddp_settings, ddp_children_run_this_job
from cnnlab.scale.job_resources import quiet_for_parallel_jobs
from cnnlab.speed import lightning_trims
from cnnlab.speed.net import net_speedups
from cnnlab.speed.process_exit import allow_fast_exit
from cnnlab.speed.runtime import apply_runtime_settings
from cnnlab.training.callbacks import ConfigInCheckpoint, RunHistory, RunResults, scalar
from cnnlab.training.checkpoint import holding_resumed_folder
from cnnlab.training.checks import check_before_fit, validate_train_config
from cnnlab.training.dashboard import log_figures, log_hparams
from cnnlab.training.entry import hydra_choices, in_multirun, swept_in_this_sweep
from cnnlab.training.extras import apply_extras, run_tags
from cnnlab.training.interruption import StopOnSignal

log = logging.getLogger(__name__)


def instantiate_callbacks(cfg: DictConfig | None) -> list[pl.Callback]:
    """Every entry with a `_target_`, skipping entries that are null or have `enabled: false`."""
    callbacks: list[pl.Callback] = []
    for name, conf in (cfg or {}).items():
        if conf is None:
            continue
        conf = OmegaConf.to_container(conf, resolve=True)
        if not conf.pop("enabled", True):
            continue
        if "_target_" not in conf:
            raise CnnlabError(f"callbacks.{name} has no _target_; cannot build it")
        callbacks.append(instantiate(conf))
    return callbacks


def instantiate_loggers(cfg: DictConfig | None, tags: Sequence[str] = ()) -> list[Logger]:
    """Every logger configured; each gets the run's `tags` as a hyperparameter (CSV's and
    TensorBoard's hparams.yaml, an MLflow param, W&B's config)."""
    loggers = [_instantiate_logger(conf) for conf in (cfg or {}).values() if conf is not None]
    for logger in loggers:
        logger.log_hyperparams({"tags": list(tags)})
    return loggers


def _instantiate_logger(conf: DictConfig) -> Logger:
    """A logger; one whose store is an SQLite file (logger=mlflow) is opened one process at a
    time, as parallel sweep jobs would otherwise create a new store's tables all at once."""
    uri = str(conf.get("tracking_uri") or "")
    if not uri.startswith("sqlite:///"):
        return instantiate(conf)
    with folder_lock(Path(uri.removeprefix("sqlite:///")).parent):
        logger = instantiate(conf)
        _ = logger.experiment  # creates the store, the experiment and the run
    return logger


@dataclass
class TrainingRun:
    """The pieces of one run, built from its config; `history` and `results` are the
    callbacks that collect what the record and the run's files report."""

    datamodule: ImageDataModule
    model: ImageClassifier
    trainer: pl.Trainer
    loggers: list[Logger]
    history: RunHistory
    results: RunResults


def build_model(cfg: DictConfig, datamodule: ImageDataModule) -> ImageClassifier:
    """The model, its input shape and classes taken from the data."""
    log.info("Instantiating model <%s> with net <%s>", cfg.model._target_, cfg.model.net._target_)
    return instantiate(
        cfg.model,
        _recursive_=False,
        sample_shape=list(datamodule.sample_shape),
        num_classes=datamodule.num_classes,
        class_names=list(datamodule.class_names),
        optimizer=instantiate(cfg.optimizer),
        lr_scheduler=instantiate(cfg.lr_scheduler) if cfg.get("lr_scheduler") else None,
    )


def build(cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> TrainingRun:
    """datamodule -> model -> callbacks -> loggers -> trainer."""
    log.info("Instantiating datamodule <%s>", cfg.data._target_)
    datamodule: ImageDataModule = instantiate(cfg.data)
    model = build_model(cfg, datamodule)
    if cfg.get("cheap_hook_bookkeeping"):  # a speed switch (docs/speed.md)
        lightning_trims.skip_hook_name_checks(model)
    history, results = RunHistory(), RunResults()
    configured = instantiate_callbacks(cfg.get("callbacks"))
    quiet = quiet_for_parallel_jobs(configured)
    callbacks = [
        StopOnSignal(),  # SIGINT/SIGTERM end the run between batches
        *quiet,
        history,
        results,
        ConfigInCheckpoint(to_plain(cfg)),
        *net_speedups(cfg),  # speed switches (docs/speed.md)
        *extra_callbacks,
    ]
    loggers = instantiate_loggers(cfg.get("logger"), run_tags(cfg))
    # A job beside others drops its bar (quiet_for_parallel_jobs): Lightning must not add one.
    no_bar = {"enable_progress_bar": False} if len(quiet) < len(configured) else {}
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, **no_bar
    )
    return TrainingRun(datamodule, model, trainer, loggers, history, results)


def describe(record: RunRecord, cfg: DictConfig, run: TrainingRun) -> None:
    """What is trained, in the record before fitting."""
    record.describe(
        label=cfg.get("run_label"),
        data=cfg.data._target_.rsplit(".", 1)[-1],
        net=cfg.model.net._target_.rsplit(".", 1)[-1],
        optimizer=to_plain(cfg.optimizer),
        batch_size=int(cfg.data.batch_size),
        max_epochs=int(cfg.trainer.max_epochs),
        seed=int(cfg.seed),
        params=run.model.num_parameters,
        class_names=list(run.datamodule.class_names),
    )


def _checkpoints(trainer: pl.Trainer) -> tuple[str | None, str | None]:
    """The best and the last checkpoint written; None where there is none."""
    callback = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    if callback is None:
        return None, None
    return callback.best_model_path or None, callback.last_model_path or None


def fit(run: TrainingRun, cfg: DictConfig, record: RunRecord) -> None:
    """Fit (resuming from `ckpt_path` if given), then record what fitting gave."""
    trainer, ckpt_path = run.trainer, cfg.get("ckpt_path")
    start = time.perf_counter()
    with ddp_children_run_this_job(trainer), holding_resumed_folder(ckpt_path):
        # weights_only: tensors and plain values only (cnnlab.models.loading.read_checkpoint)
        trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True)
    train_seconds = time.perf_counter() - start
    best, last = _checkpoints(trainer)
    history = run.history.epochs
    record.fitted(
        data_sizes=run.datamodule.describe()["sizes"],
        epochs=trainer.current_epoch if trainer.state.finished else len(history),
        steps=trainer.global_step,
        train_s=train_seconds,
        history=history,
        final={k: scalar(v) for k, v in trainer.callback_metrics.items()},
        best_checkpoint=best,
        last_checkpoint=last,
        monitor=str(cfg.monitor.metric),
        mode=str(cfg.monitor.mode),
    )


def run_test(run: TrainingRun, record: RunRecord) -> None:
    """Test the best checkpoint (the final weights without one) on the official test split."""
    ckpt_path, _ = _checkpoints(run.trainer)
    log.info("Testing %s", ckpt_path or "the final weights (no checkpoint saved)")
    # Lightning's table cannot carry a job's label: beside other jobs, the lines below do.
    alone = job_label() is None
    results = run.trainer.test(
        run.model, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True, verbose=alone
    )
    test = {k: float(v) for k, v in results[0].items()} if results else {}
    record.tested(test, ckpt_path, run.history.test_seconds)
    if run.trainer.is_global_zero:
        lines = [
            f"Test loss: {test.get('test/loss', math.nan)}",
            f"Test accuracy: {test.get('test/acc', math.nan)}",
        ]
        if not alone:  # what else the module logs (Lightning's table would have shown it)
            lines += [f"{k}: {v}" for k, v in test.items() if k not in ("test/loss", "test/acc")]
        say("\n".join(lines))


def finish(record: RunRecord, cfg: DictConfig, run: TrainingRun) -> None:
    """The result files, the completed record, then figures and dashboards (which never
    raise, so a completed run stays completed). Other ranks write nothing."""
    output_dir, summary, matrices = record.path.parent, record.fields, run.results.matrices
    if record.writes:
        write_run_files(output_dir, summary, matrices)
    record.completed()
    if record.writes:
        figures = draw_run_figures(output_dir, summary, matrices)
        log_figures(run.loggers, figures, summary["time"], int(summary["steps"]))
        log_hparams(run.loggers, cfg, summary["choices"], swept_in_this_sweep())


def train(cfg: DictConfig, extra_callbacks: Sequence[pl.Callback] = ()) -> dict[str, Any]:
    """Fit, test the best checkpoint, and write `metrics.json`; returns that record.

    `extra_callbacks` lets programs (the benchmark, tests) observe a run without config.
    """
    apply_extras(cfg)  # the config tree, and warnings silenced from here on if asked
    validate_train_config(cfg)
    apply_runtime_settings(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record = RunRecord(output_dir, writes=rank_zero_only.rank == 0)  # DDP: rank 0 writes
    record.started(**hydra_choices(), tags=run_tags(cfg))
    pl.seed_everything(int(cfg.seed), workers=True)

    run = build(cfg, extra_callbacks)
    check_ddp_settings(cfg, run.trainer)
    check_before_fit(cfg, run.datamodule, run.model)
    describe(record, cfg, run)

    fit(run, cfg, record)
    if cfg.get("test", True):
        run_test(run, record)
    finish(record, cfg, run)
    log.info("Run folder: %s", output_dir)
    if cfg.get("fast_exit") and not in_multirun():  # a speed switch (docs/speed.md)
        allow_fast_exit(run.loggers, run.trainer.world_size)
    return record.fields
