"""Lightning's per-step bookkeeping, made cheap where it costs without doing anything.

A training step at batch 32 on CPU takes 8-11 ms; Lightning's loop around it costs about
0.4 ms more than a bare PyTorch loop. Two parts of that are pure overhead, measured with
cProfile and with a tiny net (where the loop is all that is left):

- Around every hook call (about 20 per step, more with each callback), Lightning assigns the
  LightningModule's `_current_fx_name` twice, and `nn.Module.__setattr__` checks the
  parameter, buffer and submodule registries on each of those ~40 assignments: ~0.1 ms/step.
- Every hook call of every callback runs inside `trainer.profiler.profile(...)`, a generator
  context manager even when profiling is off (Lightning's `PassThroughProfiler`): about 1 µs
  each, 60-80 per step with cnnlab's callbacks.

Neither changes what is computed, logged or checkpointed.

A third cost is not Lightning's own but one it sets up: see `skip_unavailable_nvml_check`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Any

import torch
from pytorch_lightning.profilers import PassThroughProfiler

# Attributes Lightning sets on the module around each hook call: plain strings (or None),
# never parameters, buffers or submodules, so nn.Module's registry checks have nothing to do.
_HOOK_BOOKKEEPING = frozenset({"_current_fx_name"})


class CheapHookBookkeeping(torch.nn.Module):
    """Mixin for a LightningModule: Lightning's per-hook name bookkeeping skips
    `nn.Module.__setattr__`'s registry checks; every other attribute goes through them."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _HOOK_BOOKKEEPING:
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


_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
_NVML_LIBRARY = "libnvidia-ml.so.1"


def skip_unavailable_nvml_check() -> bool:
    """Drop Lightning's NVML-based CUDA check where NVML cannot be loaded; True if dropped.

    Importing Lightning sets `PYTORCH_NVML_BASED_CUDA_CHECK=1`, so that
    `torch.cuda.is_available()` asks NVML instead of initialising CUDA (which would make
    forked processes unsafe). torch asks again on every call, and every optimizer step
    calls it. Without an NVIDIA driver the `dlopen` of NVML fails each time and torch
    falls back to `cudaGetDeviceCount`, the check it makes without the variable: the
    answer is the same, but the failed load took about 0.3 ms per training step on the
    development machine (3% of a bf16 step of net_1). With NVML present nothing changes.
    """
    if os.environ.get(_NVML_CHECK) != "1" or not torch.backends.cuda.is_built():
        return False
    try:
        ctypes.CDLL(_NVML_LIBRARY)
    except OSError:
        del os.environ[_NVML_CHECK]
        return True
    return False
