"""Torch's CPU threads from the cores actually free when a run starts.

OpenMP splits each kernel evenly over its threads and waits for the slowest: on a machine
where another process keeps a core busy, two threads on two cores share them with it, and
each kernel waits for whichever thread was descheduled. One thread per free core keeps the
run's speed under load (docs/speed.md); on an idle machine the count is torch's own.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

_STAT = Path("/proc/stat")
# (the count torch had, the count set here): a later run of the same process (a sweep's next
# job) starts again from the first, not from what an earlier load left.
_chosen: tuple[int, int] | None = None


def _cpu_ticks() -> tuple[int, int, int] | None:
    """(CPUs, idle jiffies, all jiffies) of the machine since boot; None without /proc/stat."""
    try:
        lines = _STAT.read_text().splitlines()
    except OSError:
        return None
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu"))
    ticks = [
        int(v) for v in lines[0].split()[1:9]
    ]  # user nice system idle iowait irq softirq steal
    return cpus, ticks[3] + ticks[4], sum(ticks)


def free_cores(interval_s: float = 0.1) -> float | None:
    """How many of the machine's CPUs were idle over `interval_s` (None: cannot tell here)."""
    first = _cpu_ticks()
    time.sleep(interval_s)
    second = _cpu_ticks()
    if first is None or second is None or second[2] <= first[2]:
        return None
    return second[0] * (second[1] - first[1]) / (second[2] - first[2])


def set_torch_threads(setting: int | str) -> int:
    """Apply `torch_threads` (an int, or "auto": torch's count, capped by the free cores)."""
    global _chosen
    if setting != "auto":
        torch.set_num_threads(int(setting))
        _chosen = None
        return int(setting)
    current = torch.get_num_threads()
    ceiling = _chosen[0] if _chosen and current == _chosen[1] else current
    threads = ceiling
    if ceiling > 1 and (free := free_cores()) is not None:
        threads = max(1, min(ceiling, int(free + 0.5)))
    if threads != current:
        torch.set_num_threads(threads)
    _chosen = (ceiling, threads)
    return threads
