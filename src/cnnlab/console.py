"""What a run says on the console, labelled with its job when jobs run side by side.

Jobs of a parallel sweep write to one terminal at once; without a label their tables and
lines cannot be told apart. A job that runs beside others sets its label (its folder name,
e.g. `1_optimizer=adam`) with `set_job_label`; from then on `say` prints each line of a block
as `[1_optimizer=adam] ...` in one write, and the console log handlers wrapped by
`label_console_handlers` do the same for log lines (Lightning's included). A single run, or
a job of a sweep in sequence, has no label and prints as it always did.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

# Loggers whose console handlers a job labels: the root (Hydra's console handler) and
# Lightning's own, which print beside it without propagating.
_CONSOLE_LOGGERS = ("", "pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning")

_label: str | None = None


def set_job_label(label: str | None) -> None:
    """The label of the job this process runs now; None when it runs alone."""
    global _label
    _label = label or None


def job_label() -> str | None:
    return _label


def labelled(text: str, label: str | None) -> str:
    """Each line of `text` prefixed with `[label] ` (the text as it is when label is None)."""
    if not label:
        return text
    return "\n".join(f"[{label}] {line}" if line else f"[{label}]" for line in text.split("\n"))


def say(text: str) -> None:
    """Print a block (a table, a result line) labelled with the job, in one write, so lines
    of other jobs never land inside it."""
    sys.stdout.write(labelled(text, _label) + "\n")
    sys.stdout.flush()


class JobLabelFormatter(logging.Formatter):
    """Wraps a handler's formatter: every line it formats starts with the job's label, read
    when the record is formatted (so a worker process that runs several jobs labels each)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return labelled(self.inner.format(record), _label)


def _labelled_warning(*args: Any, **kwargs: Any) -> str:
    return labelled(_format_warning(*args, **kwargs).rstrip("\n"), _label) + "\n"


_format_warning = warnings.formatwarning


def label_console_handlers() -> None:
    """Label what the console log handlers print (files keep their lines as they are), and
    warnings (Lightning's hints). Idempotent: what is already wrapped is left as it is."""
    warnings.formatwarning = _labelled_warning  # the stdlib's hook for how warnings print
    for name in _CONSOLE_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not isinstance(handler, logging.StreamHandler) or isinstance(
                handler, logging.FileHandler
            ):
                continue
            if not isinstance(handler.formatter, JobLabelFormatter):
                handler.setFormatter(JobLabelFormatter(handler.formatter))
