"""Every user-facing error and its exit code: each says what is wrong and how to fix it.

Torch-free, so the sweep report and the entry points can import it cheaply.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

#: Exit codes: a user error, a diverged run; an interrupted run exits with 128 + the signal.
USER_ERROR_EXIT_CODE = 2
DIVERGED_EXIT_CODE = 3


class CnnlabError(Exception):
    """A problem the user can fix; printed as one message, without a traceback."""

    exit_code = USER_ERROR_EXIT_CODE


class ConfigError(CnnlabError):
    """A configuration value that cannot work (caught before any training starts)."""


class DatasetNotFoundError(CnnlabError):
    """The dataset files are not where the config says, and cannot be downloaded."""


class DatasetCorruptError(CnnlabError):
    """A dataset file exists but cannot be parsed as what it claims to be."""


class RunFolderVanished(CnnlabError):
    """The run's own folder was deleted, moved or unmounted while the run wrote to it."""


class RunStopped(CnnlabError):
    """Training ended early on purpose; `record` says where, and what was kept."""

    status = "failed"

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record or {}


class Diverged(RunStopped):
    """The loss turned NaN, infinite or too large; the last good checkpoint is kept."""

    status = "diverged"
    exit_code = DIVERGED_EXIT_CODE


class Interrupted(RunStopped):
    """SIGINT or SIGTERM stopped the run at a batch boundary."""

    status = "interrupted"

    def __init__(self, signum: int, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message, record)
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


def check_value(key: str, value: Any, ok: Callable[[Any], bool], allowed: str) -> None:
    """Raise a ConfigError naming `key=value` and what is allowed, unless `ok(value)`."""
    try:
        valid = ok(value)
    except (TypeError, ValueError):  # e.g. data.batch_size=abc
        valid = False
    if not valid:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def closest_names(name: str, valid: Iterable[str], count: int = 3) -> list[str]:
    """The valid names closest to a mistyped `name` (difflib), closest first, only those
    nearly as close as the closest; [] if none is close."""
    names = sorted({str(v) for v in valid})
    close = difflib.get_close_matches(name, names, n=count, cutoff=0.6)
    score = [difflib.SequenceMatcher(None, name, c).ratio() for c in close]
    return [c for c, s in zip(close, score, strict=True) if s >= score[0] - 0.05]


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`: did you mean a or b?` for the valid names closest to `name`, '' when none is close."""
    close = closest_names(name, valid)
    return f": did you mean {' or '.join(close)}?" if close else ""
