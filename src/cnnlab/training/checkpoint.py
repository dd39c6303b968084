"""Checkpoints: reading one safely, what a stopped run keeps, and resuming into a new folder."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cnnlab.errors import ConfigError
from cnnlab.training.callbacks import RunHistory

log = logging.getLogger(__name__)


def read_checkpoint(path: Path, what_to_give: str) -> Any:
    """The checkpoint file's contents, or one clear error saying why it cannot be used.

    Read with `weights_only=True`: tensors and plain values only, so a checkpoint from
    elsewhere cannot run code while it loads (cnnlab's own hold nothing else). Every other
    load (resuming, testing, evaluating) passes the same flag to Lightning.
    """
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: {what_to_give}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" not in str(err):  # no object it would build: the file is not a pickle
            raise ConfigError(
                f"ckpt_path={path} could not be read (UnpicklingError: {err}); it is not a "
                "checkpoint, or it is damaged"
            ) from err
        raise ConfigError(
            f"ckpt_path={path} holds objects other than tensors and plain values, which could "
            "run code while loading, so it is refused: use a checkpoint written by cnnlab "
            f"({_refused_global(err)})"
        ) from err
    except Exception as err:
        raise ConfigError(
            f"ckpt_path={path} could not be read ({type(err).__name__}: {err}); it is not a "
            "checkpoint, or it is damaged"
        ) from err


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint to resume from: this run's last one, else the one it resumed from."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "last_model_path", "") if callback is not None else ""
    if path and Path(path).is_file():
        return str(path)
    return str(trainer.ckpt_path) if trainer.ckpt_path else None


def progress_record(trainer: pl.Trainer) -> dict[str, Any]:
    """The finished epochs and the checkpoint of a run that stops early, for metrics.json."""
    history = next((c for c in trainer.callbacks if isinstance(c, RunHistory)), None)
    epochs = list(history.epochs) if history is not None else []
    return {
        "epochs": len(epochs),
        "steps": trainer.global_step,
        "history": epochs,
        "last_checkpoint": last_checkpoint(trainer),
    }


class ResumableModelCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose resumed run, in its own new folder, keeps the best so far.

    Lightning forgets the best score when a run resumes into another folder, so a resumed run
    would take its next epoch as the best and test a different checkpoint than the
    uninterrupted run. Here the best checkpoints are copied into the new folder (the old
    run's folder is never written to) and their scores kept.
    """

    @property
    def state_key(self) -> str:
        # Saved under ModelCheckpoint's key, so checkpoints of either class resume with either.
        # Cached: Lightning formats it for every hook of every step (its profiler's label), and
        # ModelCheckpoint builds it from the repr of its settings, fixed once constructed.
        key = self.__dict__.get("_cnnlab_state_key")
        if key is None:
            key = super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)
            self.__dict__["_cnnlab_state_key"] = key
        return key

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath", self.dirpath)
        best_k = state_dict.get("best_k_models") or {}
        if old_dir == self.dirpath or self.dirpath is None or not best_k:
            super().load_state_dict(state_dict)
            return
        if not all(Path(path).is_file() for path in best_k):
            log.warning("The best checkpoints of the resumed run are gone; best restarts here.")
            super().load_state_dict(state_dict)
            return
        moved = {path: str(Path(self.dirpath) / Path(path).name) for path in best_k}
        if rank_zero_only.rank == 0:  # one process writes checkpoints, as Lightning does
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)
            for old, new in moved.items():
                shutil.copy2(old, new)
        self.best_k_models = {moved[path]: score for path, score in best_k.items()}
        self.best_model_path = moved.get(state_dict.get("best_model_path", ""), "")
        self.best_model_score = state_dict.get("best_model_score")
        self.kth_best_model_path = moved.get(state_dict.get("kth_best_model_path", ""), "")
        self.kth_value = state_dict.get("kth_value", self.kth_value)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint under a temporary name in its folder, then renames it: a full
    disk or a crash mid-write never leaves a truncated file under a real checkpoint's name."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _refused_global(err: Exception) -> str:
    """The line of torch's message that names what the file would have built."""
    lines = [line for line in str(err).splitlines() if "global" in line]
    line = lines[0] if lines else str(err).splitlines()[-1]
    return line.split(" Please use", 1)[0].strip()[:200]
