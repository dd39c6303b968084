"""How a run stops early: the errors that say why, and the signals that ask it to.

Free of torch and Lightning, so `cnnlab.runs` (and the sweep report that reads run records)
stays quick to import; the Lightning callbacks that raise these live in `cnnlab.guards`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from cnnlab.errors import CnnlabError

DIVERGED_EXIT_CODE = 3
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunStopped(CnnlabError):
    """Training ended early on purpose; `record` says where, and what was kept."""

    status = "failed"

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record or {}


class Diverged(RunStopped):
    status = "diverged"
    exit_code = DIVERGED_EXIT_CODE


class Interrupted(RunStopped):
    status = "interrupted"

    def __init__(self, signum: int, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message, record)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


@dataclass
class StopRequest:
    """The first stop signal this process received (None: keep going), and how the run ended."""

    signum: int | None = None
    # A second signal arrived: stop everything at once (a sweep too).
    at_once: bool = False
    # Set when Lightning ended the run itself (its SIGTERM handling, a second Ctrl-C).
    stopped: Interrupted | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


_REQUEST = StopRequest()


def stop_request() -> StopRequest:
    return _REQUEST


def _write_stderr(text: str) -> None:
    # os.write, not print: a handler may interrupt a print to the same buffered stream.
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), text.encode())


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if _REQUEST.signum is not None:
        _REQUEST.at_once = True
        raise KeyboardInterrupt  # second signal: stop at once
    _REQUEST.signum = signum
    name = signal.Signals(signum).name
    _write_stderr(
        f"\nReceived {name}: stopping at the next batch; the last checkpoint and the run record "
        "are kept. Send it again (Ctrl-C) to stop at once.\n"
    )


@contextlib.contextmanager
def stop_on_signals(keep_request: bool = False) -> Iterator[StopRequest]:
    """While inside: the first SIGINT/SIGTERM sets the request instead of killing the process.

    Lightning adds its own SIGTERM handler during fit and calls this one too. With
    `keep_request` (a sweep), the request outlives the block, so the sweep's later jobs see it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield _REQUEST  # signal handlers can only be set from the main thread
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_stop_signal)
    try:
        yield _REQUEST
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _REQUEST.stopped = None
        if not keep_request:
            _REQUEST.signum, _REQUEST.at_once = None, False
