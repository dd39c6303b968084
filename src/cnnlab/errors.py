"""User-facing errors: each says what is wrong and how to fix it, and maps to a clean exit."""

from __future__ import annotations


class CnnlabError(Exception):
    """A problem the user can fix; printed as one message, without a traceback."""

    exit_code = 2


class ConfigError(CnnlabError):
    """A configuration value that cannot work (caught before any training starts)."""


class DatasetNotFoundError(CnnlabError):
    """The dataset files are not where the config says, and cannot be downloaded."""


class DatasetCorruptError(CnnlabError):
    """A dataset file exists but cannot be parsed as what it claims to be."""
