"""A machine that is not idle: N busy processes beside the benchmark, for as long as it runs.

Each is a pure-Python loop (one core's worth of work, as another user's job would be); they
are started before the first measurement and killed when the benchmark ends, whatever way.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

_BUSY = "while True: pass"


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[list[int]]:
    """Run `count` busy processes while inside; yields their pids."""
    procs = [subprocess.Popen([sys.executable, "-c", _BUSY]) for _ in range(max(count, 0))]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
