"""The process-wide switches that decide speed, applied once at the start of a run.

Each has one config key and a measured default (docs/speed.md): `flush_denormal`,
`keep_freed_cpu_memory`, `float32_matmul_precision`, `torch_threads`; the NVML check needs
no switch (it changes no answer, only where the answer comes from).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from typing import Any

import torch

from cnnlab.speed.cpu_memory import keep_freed_memory
from cnnlab.speed.threads import set_torch_threads


def apply_runtime_settings(cfg: Mapping[str, Any]) -> None:
    """Numerics and memory switches of the run's config (its top-level speed keys)."""
    if cfg.get("keep_freed_cpu_memory", True):
        keep_freed_memory()
    skip_unavailable_nvml_check()
    torch.set_flush_denormal(bool(cfg.get("flush_denormal", True)))
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "highest")))
    set_torch_threads(cfg.get("torch_threads", "auto"))


_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
_NVML_LIBRARY = "libnvidia-ml.so.1"


def skip_unavailable_nvml_check() -> bool:
    """Drop Lightning's NVML-based CUDA check where NVML cannot be loaded; True if dropped.

    Importing Lightning sets `PYTORCH_NVML_BASED_CUDA_CHECK=1`, so that
    `torch.cuda.is_available()` asks NVML instead of initialising CUDA (which would make
    forked processes unsafe). torch asks again on every call, and every optimizer step
    calls it. Without an NVIDIA driver the `dlopen` of NVML fails each time and torch
    falls back to `cudaGetDeviceCount`, the check it makes without the variable: the
    answer is the same, but each failed load costs time on every training step
    (docs/speed.md). With NVML present nothing changes.
    """
    if os.environ.get(_NVML_CHECK) != "1" or not torch.backends.cuda.is_built():
        return False
    try:
        ctypes.CDLL(_NVML_LIBRARY)
    except OSError:
        del os.environ[_NVML_CHECK]
        return True
    return False
