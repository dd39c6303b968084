"""Ctrl-C in a sweep whose jobs run side by side: every job stops the way a lone run does.

A terminal sends Ctrl-C to its whole process group. If the joblib workers were in it, each
signal would reach a worker twice (from the terminal, and from the sweep's process passing it
on) and read as "stop at once". So each worker of the `auto` launcher moves to a process group
of its own and registers its pid in the sweep folder; the sweep's process, the only one the
terminal (or `kill`, or a scheduler) signals, passes each SIGINT/SIGTERM to every worker once:

* first signal: each job stops at its next batch boundary and records `interrupted` with its
  checkpoint and resume command; jobs not yet started are recorded as not started (a marker,
  `cnnlab.file_names.STOPPED_FILE`, tells workers that start later); the sweep then ends as
  usual, with its report and the list of jobs that did not complete;
* second signal: each job stops at once (its record says so), and the sweep exits 130.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from cnnlab.file_names import STOPPED_FILE, WORKERS_DIR
from cnnlab.signals import stop_signals_handled_by, write_stderr

_registered: set[Path] = set()


def become_worker(sweep_dir: Path) -> None:
    """In a worker: leave the terminal's process group and register, once per sweep."""
    if sweep_dir in _registered:
        return
    with contextlib.suppress(OSError):  # already a group leader: keeps its own group
        os.setpgid(0, 0)
    folder = sweep_dir / WORKERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    _registered.add(sweep_dir)


def _workers(sweep_dir: Path) -> list[int]:
    try:
        return [int(p.name) for p in (sweep_dir / WORKERS_DIR).iterdir() if p.name.isdigit()]
    except OSError:
        return []


@dataclass
class SweepStop:
    """What the sweep's process received: the first signal's name, and whether a second came."""

    name: str = ""
    at_once: bool = False


@contextlib.contextmanager
def pass_stop_signals_to_workers(sweep_dir: Path) -> Iterator[SweepStop]:
    """While the workers run: each SIGINT/SIGTERM here goes, once, to every worker."""
    stop = SweepStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.name:
            stop.at_once = True
            note = f"\n[launcher auto] {name} again: every job stops at once.\n"
        else:
            stop.name = name
            with contextlib.suppress(OSError):
                (sweep_dir / STOPPED_FILE).write_text(name)
            note = (
                f"\n[launcher auto] {name}: every job stops at its next batch and records its "
                "state; jobs not started are recorded as such. Send it again to stop at once.\n"
            )
        write_stderr(note)
        for pid in _workers(sweep_dir):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    try:
        with stop_signals_handled_by(on_signal):
            yield stop
    finally:
        shutil.rmtree(sweep_dir / WORKERS_DIR, ignore_errors=True)
