"""Every user-facing error and its exit code: each says what is wrong and how to fix it.

Torch-free, so the sweep report and the entry points can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
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
