"""A completed single run leaves without the interpreter's teardown, its loggers finalized
first; anything that has work of its own at exit leaves normally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger

from cnnlab.speed import process_exit


class _Exited(Exception):
    pass


class _LoggerWithExitWork(Logger):
    """Stands in for W&B or MLflow, which finish their runs at the interpreter's exit."""

    name = "other"
    version = 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise _Exited

    monkeypatch.setattr(process_exit.os, "_exit", fake_exit)
    monkeypatch.setattr(process_exit, "_finished_loggers", None)
    return codes


def test_a_completed_run_flushes_its_loggers_then_exits_at_once(
    tmp_path: Path, exits: list[int]
) -> None:
    tensorboard = TensorBoardLogger(tmp_path, name="", version="")
    csv = CSVLogger(tmp_path, name="csv", version="")
    tensorboard.experiment.add_scalar("loss/val", 0.5, 0)
    csv.log_metrics({"val/loss": 0.5}, step=0)
    assert process_exit.allow_fast_exit([tensorboard, csv], world_size=1)
    with pytest.raises(_Exited):
        process_exit.exit_if_allowed()
    assert exits == [0]
    assert "val/loss" in (tmp_path / "csv" / "metrics.csv").read_text()  # written by finalize
    assert any(p.stat().st_size > 100 for p in tmp_path.glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("loggers", "world_size"),
    [([_LoggerWithExitWork()], 1), ([], 2)],
    ids=["a-logger-with-exit-work", "ddp"],
)
def test_ddp_or_a_logger_with_exit_work_exits_normally(
    loggers: list[Logger], world_size: int, exits: list[int]
) -> None:
    assert not process_exit.allow_fast_exit(loggers, world_size)
    process_exit.exit_if_allowed()  # returns: the interpreter exits as usual
    assert exits == []


def test_nothing_exits_early_unless_a_run_completed(exits: list[int]) -> None:
    process_exit.exit_if_allowed()
    assert exits == []
