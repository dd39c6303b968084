"""Lightning's per-step bookkeeping, made cheap where it costs without doing anything.

Two parts of Lightning's loop are pure overhead (found with cProfile and a tiny net, where
the loop is all that is left; docs/speed.md has the measurements):

- Around every hook call (about 20 per step, more with each callback), Lightning assigns the
  LightningModule's hook-name attribute twice, and `nn.Module.__setattr__` checks the
  parameter, buffer and submodule registries on each assignment.
- Every hook call of every callback runs inside `trainer.profiler.profile(...)`, a generator
  context manager even when profiling is off (Lightning's `PassThroughProfiler`).

Neither trim changes what is computed, logged or checkpointed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from pytorch_lightning.profilers import PassThroughProfiler

from cnnlab.lightning_internals import HOOK_NAME_ATTRIBUTE


class CheapHookBookkeeping(torch.nn.Module):
    """Mixin for a LightningModule: Lightning's per-hook name bookkeeping skips
    `nn.Module.__setattr__`'s registry checks; every other attribute goes through them."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning's hook name is a plain string (or None), never a parameter, buffer or
        # submodule, so nn.Module's registry checks have nothing to do for it.
        if name == HOOK_NAME_ATTRIBUTE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


_NO_PROFILING = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler, without the generator context manager per hook.

    `trainer.profiler` (simple, advanced, pytorch) still selects a real profiler.
    """

    def profile(self, action_name: str) -> contextlib.AbstractContextManager[Any]:  # type: ignore[override]
        return _NO_PROFILING
