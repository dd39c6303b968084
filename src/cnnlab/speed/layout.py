"""The convolutions' memory layout: NHWC (`channels_last`) where it measured faster.

oneDNN's AVX-512 convolution kernels work in NHWC; fed NCHW, each conv reorders its input
and output. On such CPUs `net_1` and `net_2` train faster in fp32 with channels_last
(docs/benchmarks/), the same fp32 maths in another summation order. Elsewhere (GPUs in fp32,
CPUs without AVX-512) nothing was measured to gain, so `auto` keeps NCHW there.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CHANNELS_LAST_CHOICES = (True, False, "auto")


@functools.cache
def cpu_model_and_flags() -> tuple[str | None, frozenset[str]]:
    """The CPU's model name and feature flags from /proc/cpuinfo (None and none elsewhere)."""
    model, flags = None, frozenset[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = frozenset(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return model, flags


def use_channels_last(setting: bool | str, device: torch.device) -> bool:
    """`channels_last` for a run on `device`: true, false, or auto (see above)."""
    if setting == "auto":
        return device.type == "cpu" and "avx512f" in cpu_model_and_flags()[1]
    return bool(setting)
