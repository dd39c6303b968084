"""Every use of Lightning's private API, in one place.

Lightning may rename its private names in any release. `tests/test_lightning_internals.py`
checks each one below against the installed Lightning, so a change fails loudly there
instead of a speed trim silently doing nothing or a DDP job relaunching the wrong command.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.core.optimizer import LightningOptimizer

# The attribute Lightning assigns on the LightningModule around every hook call (twice each),
# a plain string or None: `cnnlab.speed.lightning_trims.CheapHookBookkeeping` reads it.
HOOK_NAME_ATTRIBUTE = "_current_fx_name"


def relaunches_script(trainer: pl.Trainer) -> bool:
    """True if Lightning will start ranks > 0 by re-running the command line (strategy=ddp)."""
    from lightning_fabric.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher as FabricLauncher,
    )
    from pytorch_lightning.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher,
    )

    strategy = trainer.strategy
    launcher = getattr(strategy, "launcher", None)
    if not isinstance(launcher, (_SubprocessScriptLauncher, FabricLauncher)):
        return False
    environment = getattr(strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    return trainer.world_size > 1 and not external


def save_last_if_stale(
    callback: ModelCheckpoint, trainer: pl.Trainer, at_train_epoch_end: bool
) -> None:
    """Write the callback's `last.ckpt` unless this step already has a checkpoint; called
    after Lightning's own saving hook (the train epoch's end, or validation's).

    Lightning 2.6 writes `last.ckpt` at an epoch's end only when a top-k checkpoint was saved
    in the same step, so after the best epoch `last.ckpt` would stop following training and a
    resume would repeat finished epochs.
    """
    if (
        not callback.save_last
        or callback._should_save_on_train_epoch_end(trainer) != at_train_epoch_end
        or callback._should_skip_saving_checkpoint(trainer)  # also: saved at this step
    ):
        return
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def count_optimizer_step(optimizer: LightningOptimizer) -> None:
    """Count an optimizer step that ran inside a replayed CUDA graph, as
    `LightningOptimizer.step` counts its own: under manual optimization Lightning binds these
    two hooks to its step progress for each training step, which `global_step` (and so
    checkpoints, `max_steps` and resume) reads. `cnnlab.speed.cuda_graph` calls it."""
    optimizer._on_before_step()
    optimizer._on_after_step()
