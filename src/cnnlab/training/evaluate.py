"""Test a saved checkpoint on the official test split.

The checkpoint is data: its net and datamodule are rebuilt only from `_target_`s that the
project's config groups name (`cnnlab.trust`), with plain values; the data folder is this
machine's (`paths.data_dir`), never a path read from the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab.data.datamodule import ImageDataModule
from cnnlab.errors import ConfigError
from cnnlab.file_names import METRICS_FILE
from cnnlab.models.classifier import ImageClassifier
from cnnlab.models.loading import load_classifier, read_checkpoint
from cnnlab.results.record import write_json
from cnnlab.speed.net import net_speedups
from cnnlab.training.extras import apply_extras
from cnnlab.training.interruption import StopOnSignal
from cnnlab.trust import plain_config, trusted_targets

log = logging.getLogger(__name__)

USAGE = "python src/evaluate.py ckpt_path=<run folder>/checkpoints/last.ckpt"
# Precisions a run of cnnlab trains in; anything else read from a file falls back to fp32.
_PRECISIONS = ("32-true", "32", "64-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")


def checkpoint_config(checkpoint: Any, ckpt_path: Path) -> dict[str, Any]:
    """The run config a cnnlab checkpoint carries (plain values, read but never built)."""
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("cnnlab_config"), dict):
        raise ConfigError(
            f"Checkpoint {ckpt_path} was not written by cnnlab's train.py (no 'cnnlab_config')."
        )
    return checkpoint["cnnlab_config"]


def load_checkpoint_config(ckpt_path: Path) -> dict[str, Any]:
    return checkpoint_config(read_checkpoint(ckpt_path, f"run {USAGE}"), ckpt_path)


def datamodule_of(run_cfg: dict[str, Any], ckpt_path: Path, cfg: DictConfig) -> ImageDataModule:
    """The run's datamodule, from the project's data configs, reading this machine's folder.

    A transform is code, so one named in the file is not rebuilt: evaluation uses
    `eval_transform=` from the command line (or none), and says so when the run had one.
    """
    saved = dict(run_cfg.get("data") or {}) if isinstance(run_cfg.get("data"), dict) else None
    if saved is not None:
        transforms = {k: saved.pop(k, None) for k in ("train_transform", "eval_transform")}
        if transforms["eval_transform"] is not None and cfg.get("eval_transform") is None:
            log.warning(
                "%s was evaluated with a transform during training; it is not rebuilt from the "
                "file: pass eval_transform=... to apply one",
                ckpt_path,
            )
    data = plain_config(
        saved,
        f"{ckpt_path}: cnnlab_config.data",
        trusted_targets("data", extra=cfg.get("trusted_targets") or ()),
        "the checkpoint names a datamodule that conf/data/ does not (add yours there, or to "
        "trusted_targets)",
    )
    data["data_dir"] = str(cfg.data_dir)
    data["download"] = bool(cfg.download)
    if cfg.get("batch_size"):
        data["eval_batch_size"] = int(cfg.batch_size)
    if cfg.get("eval_transform") is not None:
        data["eval_transform"] = cfg.eval_transform  # the command line's: code the user gave
    return instantiate(data)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test loss and accuracy of `cfg.ckpt_path`, printed as the assignment does, saved as JSON."""
    apply_extras(cfg)  # the config tree; warnings silenced if asked
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.get("ckpt_path"):
        raise ConfigError(f"ckpt_path is required: {USAGE}")
    ckpt_path = Path(str(cfg.ckpt_path)).expanduser()
    checkpoint = read_checkpoint(ckpt_path, f"run {USAGE}")
    run_cfg = checkpoint_config(checkpoint, ckpt_path)
    datamodule = datamodule_of(run_cfg, ckpt_path, cfg)
    model = load_classifier(
        ckpt_path,
        ImageClassifier,
        checkpoint,
        sample_shape=list(datamodule.sample_shape),
        num_classes=datamodule.num_classes,
        extra_nets=cfg.get("trusted_targets") or (),
    )
    # The run's own precision unless asked otherwise, so the accuracy is the run's.
    trained_in = (run_cfg.get("trainer") or {}).get("precision")
    precision = cfg.get("precision") or (trained_in if trained_in in _PRECISIONS else "32-true")
    log.info("Evaluating in precision %s", precision)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=cfg.paths.output_dir,
        # Ctrl-C stops between batches and is recorded; NHWC where it runs faster.
        callbacks=[StopOnSignal(), *net_speedups(cfg)],
    )
    results = trainer.test(model=model, datamodule=datamodule, verbose=False)[0]
    summary = {
        "status": "completed",
        "checkpoint": str(ckpt_path),
        "precision": str(precision),
        "test": {k: float(v) for k, v in results.items()},
    }
    print(f"Precision: {precision}")
    print(f"Test loss: {summary['test']['test/loss']}")
    print(f"Test accuracy: {summary['test']['test/acc']}")
    write_json(Path(cfg.paths.output_dir) / METRICS_FILE, summary)
    return summary
