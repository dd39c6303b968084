"""A completed single run ends without the interpreter's teardown (switch: `fast_exit`).

Once torch and Lightning are imported, Python's own exit (the destructors of their modules
and objects) takes about a second on a small CPU, a fifth of all that `python -c "import
torch, pytorch_lightning"` takes (`make bench-sweep` times a run against it). By the end of a
completed run every file it writes is written (the record and figures atomically,
checkpoints closed), so `src/train.py` flushes the loggers, the log files and the standard
streams and leaves with `os._exit`. Everything else exits normally: a sweep (its launcher's
workers and report), a failed or interrupted run, DDP, and loggers with work of their own to
do at exit (W&B, MLflow).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

log = logging.getLogger(__name__)

# Loggers whose files are complete once they are finalized.
FLUSHED_ON_FINALIZE = (TensorBoardLogger, CSVLogger)

_finished_loggers: list[Logger] | None = None


def allow_fast_exit(loggers: Sequence[Logger], world_size: int) -> bool:
    """Mark this process's run as complete and safe to leave without teardown; False (and
    a normal exit) for DDP or a logger outside `FLUSHED_ON_FINALIZE`."""
    global _finished_loggers
    if world_size > 1 or not all(isinstance(x, FLUSHED_ON_FINALIZE) for x in loggers):
        _finished_loggers = None
        return False
    _finished_loggers = list(loggers)
    return True


def exit_if_allowed() -> None:
    """After a completed single run (`allow_fast_exit`): finalize its loggers, flush the log
    files and standard streams, and exit with status 0 at once. Otherwise return."""
    if _finished_loggers is None:
        return
    for logger in _finished_loggers:
        try:
            logger.finalize("success")
        except Exception as err:  # a normal exit then, so nothing is lost silently
            log.warning("%s could not be closed (%s): exiting normally", type(logger).__name__, err)
            return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
            stream.flush()
    os._exit(0)
