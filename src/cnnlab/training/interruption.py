"""Interruption: the first SIGINT or SIGTERM asks the run to stop at the next batch boundary.

`stop_on_signals` (entered by `cnnlab.training.entry.run_entry`) turns the first signal into
a request; `StopOnSignal` honours it between batches, never inside an optimizer step or a
checkpoint write, so the run ends with its last epoch-end checkpoint intact and resuming
from it repeats the interrupted epoch exactly. A second signal stops at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.trainer.states import TrainerFn

from cnnlab.commands import path_override, python_command
from cnnlab.errors import Interrupted
from cnnlab.signals import stop_signals_handled_by, write_stderr
from cnnlab.training.checkpoint import progress_record


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


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    if _REQUEST.signum is not None:
        _REQUEST.at_once = True
        raise KeyboardInterrupt  # second signal: stop at once
    _REQUEST.signum = signum
    name = signal.Signals(signum).name
    write_stderr(
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
    with stop_signals_handled_by(_on_stop_signal):
        try:
            yield _REQUEST
        finally:
            _REQUEST.stopped = None
            if not keep_request:
                _REQUEST.signum, _REQUEST.at_once = None, False


def resume_command(checkpoint: str) -> str:
    """The command that resumes this run: its own overrides plus `ckpt_path`."""
    overrides: list[str] = []
    if HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    overrides = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != "ckpt_path"]
    script = sys.argv[0] if sys.argv and Path(sys.argv[0]).name == "train.py" else "src/train.py"
    # Hydra-quoted inside, shell-quoted outside: it pastes whatever the path holds.
    return python_command(script, *overrides, path_override("ckpt_path", checkpoint))


def interruption(
    trainer: pl.Trainer, signum: int, trained: dict[str, Any] | None = None
) -> Interrupted:
    """The error that ends an interrupted run: where it stopped and how to resume it.

    `trained`: what training kept when it ended (`progress_record`), for a signal after it:
    testing loads the best checkpoint, and with it the callbacks' state of that epoch.
    """
    name = signal.Signals(signum).name
    stage = getattr(getattr(trainer, "state", None), "fn", None) or TrainerFn.FITTING
    fitting = stage == TrainerFn.FITTING or trained is None
    record = progress_record(trainer) if fitting else dict(trained)  # type: ignore[arg-type]
    record["interrupted_at"] = {
        "epoch": trainer.current_epoch,
        "step": trainer.global_step,
        "signal": name,
    }
    if stage == TrainerFn.FITTING:
        where = (
            f"at epoch {trainer.current_epoch}, step {trainer.global_step}; "
            f"{record['epochs']} epoch(s) finished"
        )
    else:
        where = f"during {stage.value}"  # e.g. testing after training, or src/evaluate.py
    checkpoint = record["last_checkpoint"]
    if checkpoint:
        record["resume_command"] = resume_command(checkpoint)
        advice = f"Resume it with:\n  {record['resume_command']}"
    elif stage == TrainerFn.FITTING:
        advice = "No epoch had finished, so there is no checkpoint: run the same command again."
    else:
        advice = "Run the same command again."
    return Interrupted(signum, f"Interrupted by {name} {where}. {advice}", record)


class StopOnSignal(pl.Callback):
    """Ends training at a batch boundary once a stop signal arrived (see `stop_on_signals`).

    Raising between batches, never inside an optimizer step or a checkpoint write, leaves the
    last epoch-end checkpoint intact; resuming from it replays the interrupted epoch exactly.
    """

    def __init__(self) -> None:
        # What training kept when it ended: the record of a signal while testing after it.
        self.trained: dict[str, Any] | None = None

    def _stop_if_requested(self, trainer: pl.Trainer) -> None:
        signum = stop_request().signum
        if signum is not None:
            raise interruption(trainer, signum, self.trained)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Lightning stopped the run itself: keep what `run_entry` needs to record it."""
        request = stop_request()
        if isinstance(exception, (KeyboardInterrupt, SystemExit)):
            request.stopped = interruption(trainer, request.signum or signal.SIGINT, self.trained)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.trained = progress_record(trainer)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_requested(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_requested(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested(trainer)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested(trainer)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        self._stop_if_requested(trainer)
