"""Test a saved checkpoint; everything needed to rebuild the run travels inside the file."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import CnnlabError
from cnnlab.models.classifier import ImageClassifier
from cnnlab.results.record import METRICS_FILE, write_json
from cnnlab.training.checkpoint import read_checkpoint
from cnnlab.training.interruption import StopOnSignal

log = logging.getLogger(__name__)


def load_checkpoint_config(ckpt_path: Path) -> dict[str, Any]:
    checkpoint = read_checkpoint(ckpt_path, "pass ckpt_path=<run folder>/checkpoints/<file>.ckpt")
    if not isinstance(checkpoint, dict) or "cnnlab_config" not in checkpoint:
        raise CnnlabError(
            f"Checkpoint {ckpt_path} was not written by cnnlab's train.py (no 'cnnlab_config')."
        )
    return checkpoint["cnnlab_config"]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test loss and accuracy of `cfg.ckpt_path`, printed as the seed does and saved as JSON."""
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    run_cfg = OmegaConf.create(load_checkpoint_config(ckpt_path))
    data_cfg = run_cfg.data
    if cfg.get("data_dir"):
        data_cfg.data_dir = cfg.data_dir
    if cfg.get("batch_size"):
        data_cfg.eval_batch_size = cfg.batch_size
    datamodule = instantiate(data_cfg)
    model = ImageClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    # The run's own precision unless asked otherwise, so the accuracy is the run's.
    precision = cfg.get("precision") or OmegaConf.select(run_cfg, "trainer.precision") or "32-true"
    log.info("Evaluating in precision %s", precision)
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=cfg.paths.output_dir,
        callbacks=[StopOnSignal()],  # Ctrl-C stops between batches and is recorded
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
