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
import functools
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import PassThroughProfiler

from cnnlab.lightning_internals import HOOK_NAME_ATTRIBUTE


class CheapHookBookkeeping(torch.nn.Module):
    """Lightning's per-hook name bookkeeping skips `nn.Module.__setattr__`'s registry checks;
    every other attribute goes through them. Applied to a module by `skip_hook_name_checks`."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning's hook name is a plain string (or None), never a parameter, buffer or
        # submodule, so nn.Module's registry checks have nothing to do for it.
        if name == HOOK_NAME_ATTRIBUTE:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


@functools.cache
def _with_cheap_hook_bookkeeping(cls: type[pl.LightningModule]) -> type[pl.LightningModule]:
    # Named as the module's class: Lightning's summaries and logs show that name.
    return type(cls.__name__, (CheapHookBookkeeping, cls), {})


def skip_hook_name_checks(module: pl.LightningModule) -> pl.LightningModule:
    """The module, its class now one that adds `CheapHookBookkeeping` (the
    switch `cheap_hook_bookkeeping` of a run): the module's own code stays plain Lightning."""
    if not isinstance(module, CheapHookBookkeeping):
        module.__class__ = _with_cheap_hook_bookkeeping(type(module))
    return module


_NO_PROFILING = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler, without the generator context manager per hook.

    `trainer.profiler` (simple, advanced, pytorch) still selects a real profiler.
    """

    def profile(self, action_name: str) -> contextlib.AbstractContextManager[Any]:  # type: ignore[override]
        return _NO_PROFILING
