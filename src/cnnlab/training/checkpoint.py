"""Checkpoints: what a stopped run keeps, resuming into a new folder, writing atomically.

Reading one from a file safely: `cnnlab.models.loading`."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from cnnlab.lightning_internals import save_last_if_stale
from cnnlab.scale.locks import hold_folder
from cnnlab.training.callbacks import RunHistory

log = logging.getLogger(__name__)


@contextlib.contextmanager
def holding_resumed_folder(ckpt_path: Any) -> Iterator[None]:
    """While a run resumes from `ckpt_path`, no other process resumes from its run folder
    (`cnnlab.scale.locks`); rank 0 alone holds it under DDP."""
    if not ckpt_path or rank_zero_only.rank != 0:
        yield
        return
    path = Path(str(ckpt_path)).expanduser()
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    with hold_folder(folder, f"a run resumes from {path.name}"):
        yield


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
    """ModelCheckpoint whose resumed run, in another folder, keeps the best so far.

    Lightning forgets the best score when a run resumes from another folder, so a resumed run
    would take its next epoch as the best and test a different checkpoint than the
    uninterrupted run. Here the best checkpoints are taken into the new folder (copied from the
    old run's folder, which is never written to) and their scores kept. A folder that was
    copied or moved already holds them, and its own `last.ckpt`: both are used where they
    are, so no `-v1` copies appear.
    """

    @functools.cached_property
    def state_key(self) -> str:  # type: ignore[override]
        # Saved under ModelCheckpoint's key, so checkpoints of either class resume with either.
        # Cached: Lightning formats it for every hook of every step (its profiler's label), and
        # ModelCheckpoint builds it from the repr of its settings, fixed once constructed.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        save_last_if_stale(self, trainer, at_train_epoch_end=False)  # every epoch, best or not

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        save_last_if_stale(self, trainer, at_train_epoch_end=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir = state_dict.get("dirpath", self.dirpath)
        if old_dir == self.dirpath or self.dirpath is None:
            super().load_state_dict(state_dict)
            return
        folder = Path(self.dirpath)

        def here(path: Any) -> str:
            return str(folder / Path(str(path)).name) if path else ""

        best_k = state_dict.get("best_k_models") or {}
        missing = [p for p in best_k if not (Path(here(p)).is_file() or Path(p).is_file())]
        if missing:
            log.warning("The best checkpoints of the resumed run are gone; best restarts here.")
            super().load_state_dict(state_dict)
            return
        if rank_zero_only.rank == 0:  # one process writes checkpoints, as Lightning does
            folder.mkdir(parents=True, exist_ok=True)
            for path in best_k:
                if not Path(here(path)).is_file():
                    shutil.copy2(path, here(path))
        self.best_k_models = {here(path): score for path, score in best_k.items()}
        self.best_model_path = here(state_dict.get("best_model_path"))
        self.best_model_score = state_dict.get("best_model_score")
        self.kth_best_model_path = here(state_dict.get("kth_best_model_path"))
        self.kth_value = state_dict.get("kth_value", self.kth_value)
        if Path(last := here(state_dict.get("last_model_path"))).is_file():
            self.last_model_path = last  # this folder's own: overwritten, not versioned


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
