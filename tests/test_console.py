"""A sweep's console: each job's lines labelled when jobs run side by side, one model summary
per distinct model, and a closing table of the jobs with the best one marked."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from cnnlab import console
from cnnlab.results.runs import Run
from cnnlab.results.sweep_summary import SweepSummary, jobs_table
from cnnlab.scale.sweeps import shown_earlier_in_sweep


@pytest.fixture
def job_label() -> Iterator[None]:
    """This process runs the job `1_optimizer=adam` beside others, for the test only."""
    console.set_job_label("1_optimizer=adam")
    yield
    console.set_job_label(None)


def test_a_block_is_labelled_line_by_line_only_beside_other_jobs(
    capsys: pytest.CaptureFixture[str], job_label: None
) -> None:
    console.say("Test loss: 0.5\n| class | recall |\n\n| 0 | 1.0 |")
    assert capsys.readouterr().out.splitlines() == [
        "[1_optimizer=adam] Test loss: 0.5",
        "[1_optimizer=adam] | class | recall |",
        "[1_optimizer=adam]",
        "[1_optimizer=adam] | 0 | 1.0 |",
    ]
    console.set_job_label(None)  # a single run prints as it always did
    console.say("Test loss: 0.5")
    assert capsys.readouterr().out == "Test loss: 0.5\n"


def test_console_log_lines_and_warnings_carry_the_label_and_files_do_not(
    tmp_path: Path, job_label: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "_CONSOLE_LOGGERS", ("cnnlab.test_console",))
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # put back after
    stream_handler = logging.StreamHandler(stream := _Stream())
    stream_handler.setFormatter(logging.Formatter("[%(levelname)s] - %(message)s"))
    file_handler = logging.FileHandler(tmp_path / "train.log")
    logger = logging.getLogger("cnnlab.test_console")  # as Lightning's, with its own handlers
    logger.addHandler(stream_handler)
    logger.addHandler(file_handler)
    try:
        console.label_console_handlers()
        console.label_console_handlers()  # twice: still one label
        logger.warning("GPU available: False\nTPU available: False")
        file_handler.flush()
    finally:
        logger.removeHandler(stream_handler)
        logger.removeHandler(file_handler)
        file_handler.close()
    assert stream.text.splitlines() == [
        "[1_optimizer=adam] [WARNING] - GPU available: False",
        "[1_optimizer=adam] TPU available: False",
    ]
    assert (tmp_path / "train.log").read_text() == "GPU available: False\nTPU available: False\n"
    shown = warnings.formatwarning("few batches", UserWarning, "fit_loop.py", 321)
    assert shown.startswith("[1_optimizer=adam] fit_loop.py:321: UserWarning: few batches")


class _Stream:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def _run(name: str, status: str = "completed", **record: Any) -> Run:
    return Run(Path("/sweep") / name, {"status": status, **record}, {}, {})


def test_the_closing_table_marks_the_best_job_by_the_monitor() -> None:
    runs = [
        _run(
            "0_optimizer=adadelta",
            best={"val/acc": 0.81},
            test={"test/acc": 0.8},
            time={"train_s": 12.34},
        ),
        _run(
            "1_optimizer=adam",
            best={"val/acc": 0.93},
            test={"test/acc": 0.9},
            time={"train_s": 10.0},
        ),
        _run("2_optimizer=adagrad", "failed", error="lr=-1"),
    ]
    lines = jobs_table(runs, missing=["job 3 (optimizer=sgd)"]).splitlines()
    assert lines[0].split() == ["job", "status", "best", "val/acc", "test", "acc", "train", "time"]
    assert lines[1].split() == [
        "0_optimizer=adadelta",
        "completed",
        "0.8100",
        "0.8000",
        "12.3",
        "s",
    ]
    assert lines[2].split() == [
        "*",
        "1_optimizer=adam",
        "completed",
        "0.9300",
        "0.9000",
        "10.0",
        "s",
    ]
    assert lines[3].split() == ["2_optimizer=adagrad", "failed", "-", "-", "-"]
    assert lines[4].split() == ["job", "3", "(optimizer=sgd)", "missing", "-", "-", "-"]
    assert lines[5] == "* best by validation accuracy: 1_optimizer=adam"
    assert len({line.index("completed") for line in lines[1:3]}) == 1  # columns line up

    lowest_loss = {"monitor": "val/loss", "mode": "min"}
    runs = [
        _run("0_a", best={"val/loss": 0.2, **lowest_loss}),
        _run("1_b", best={"val/loss": 0.5, **lowest_loss}),
    ]
    table = jobs_table(runs)
    assert "best val/loss" in table.splitlines()[0] and table.splitlines()[1].startswith("* 0_a")
    assert table.endswith("* best by val/loss (lowest): 0_a")
    assert jobs_table([_run("0_a", "failed")]).endswith("so none is marked best.")


def test_the_sweep_ends_with_its_table_and_one_report_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    jobs = {"0_optimizer=adam": 0.5, "1_optimizer=adagrad": 0.75, "2_optimizer=sgd": None}
    for name, val_acc in jobs.items():
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / ".hydra" / "config.yaml").write_text("model: {}\n")
        record = {"status": "completed", "best": {"val/acc": val_acc}, "time": {"train_s": 1.0}}
        if val_acc is None:
            record = {"status": "failed", "error": "ConfigError: optimizer.lr=-1 is invalid"}
        (sweep / name / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit):  # a job failed: the sweep's exit says so
        SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    said = capsys.readouterr()
    assert said.out.count("Sweep report:") == 1 and said.out.rstrip().splitlines()[-1].startswith(
        "Sweep report: "
    )
    assert "* 1_optimizer=adagrad  completed" in said.out
    assert "  2_optimizer=sgd      failed" in said.out
    assert "* best by validation accuracy: 1_optimizer=adagrad" in said.out
    # The jobs that did not complete are said once, on stderr.
    assert "did not complete" not in said.out and said.err.count("optimizer.lr=-1 is invalid") == 1


@pytest.fixture
def sweep_job(tmp_path: Path) -> Iterator[Any]:
    """HydraConfig as a job of a sweep in tmp_path sees it; `job(name)` switches jobs."""

    def job(name: str, mode: RunMode = RunMode.MULTIRUN) -> None:
        hydra = OmegaConf.structured(HydraConf)
        hydra.mode, hydra.sweep.dir = mode, str(tmp_path)
        hydra.runtime.output_dir = str(tmp_path / name)
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra}))

    yield job
    HydraConfig.instance().cfg = None


def test_a_model_summary_is_printed_by_the_first_job_that_has_its_model(sweep_job: Any) -> None:
    sweep_job("1_optimizer=adam")
    assert shown_earlier_in_sweep("summary of net_1") is None  # the first: it prints
    sweep_job("0_optimizer=adadelta")
    assert shown_earlier_in_sweep("summary of net_1") == "1_optimizer=adam"
    assert shown_earlier_in_sweep("summary of net_2") is None  # another model: printed
    sweep_job("run", RunMode.RUN)
    assert shown_earlier_in_sweep("summary of net_1") is None  # a single run always prints
