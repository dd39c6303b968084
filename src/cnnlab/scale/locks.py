"""One process at a time in a sweep's folder, or resuming a run's folder.

Two resumes of one sweep would each clear and retrain the same job, deleting the other's
checkpoints. A sweep holds its folder for as long as it runs (`SweepLock`); a run resumed with
`ckpt_path` holds the folder of that checkpoint (`hold_folder`). The lock is the kernel's
(`flock`), so it is released when its process ends, however it ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from cnnlab.errors import CnnlabError

LOCK_FILE = ".cnnlab-folder.lock"

_held: dict[Path, TextIO] = {}  # folders this process holds, so holding one again is free


class FolderBusy(CnnlabError):
    """Another process works in the folder."""


def _acquire(folder: Path, what: str) -> TextIO | None:
    """The open, locked file of `folder`, which says who holds it and `what` they do; None when
    this process already holds it."""
    folder = folder.resolve()
    if folder in _held:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115 (held past this function)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        handle.seek(0)
        pid, _, doing = handle.read().strip().partition(" ")
        handle.close()
        if not pid.isdigit():
            raise FolderBusy(
                f"{folder} is in use: wait for it to end, then run this again"
            ) from err
        raise FolderBusy(
            f"{folder} is in use by process {pid} ({doing or 'cnnlab'}): wait for it to end, "
            f"or stop it (kill {pid}), then run this again"
        ) from err
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} {what}\n")
    handle.flush()
    _held[folder] = handle
    return handle


def _release(folder: Path) -> None:
    handle = _held.pop(folder.resolve(), None)
    if handle is not None:
        handle.close()  # closing the file releases the lock


@contextlib.contextmanager
def hold_folder(folder: Path, what: str) -> Iterator[None]:
    """Hold `folder` for the block; FolderBusy names the process holding it already."""
    handle = _acquire(folder, what)
    try:
        yield
    finally:
        if handle is not None:
            _release(folder)


class SweepLock(Callback):
    """A sweep holds its folder from its start to its end: a second sweep run into the same
    folder (a resume started twice) stops at once with one line naming the first."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            _acquire(Path(str(config.hydra.sweep.dir)), "a sweep runs in it")
        except FolderBusy as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _release(Path(str(config.hydra.sweep.dir)))
