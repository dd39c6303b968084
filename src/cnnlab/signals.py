"""Stop signals, shared by everything that turns SIGINT or SIGTERM into an orderly end: a run
(`cnnlab.training.interruption`), a sweep of parallel jobs (`cnnlab.scale.parallel_stop`) and
the sweep report (`cnnlab.results.report`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_signals_handled_by(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """SIGINT and SIGTERM go to `handler` while inside (main thread only); then as before."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before if before is not None else signal.SIG_DFL)


def write_stderr(text: str) -> None:
    """`text` to stderr from a signal handler: os.write, not print, since the handler may
    interrupt a print to the same buffered stream."""
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), text.encode())
