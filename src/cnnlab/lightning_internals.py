"""Every use of Lightning's private API, in one place.

Lightning may rename its private names in any release. `tests/test_lightning_internals.py`
checks each one below against the installed Lightning, so a change fails loudly there
instead of a speed trim silently doing nothing or a DDP job relaunching the wrong command.
"""

from __future__ import annotations

import pytorch_lightning as pl

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
