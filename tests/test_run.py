"""The one training run: its record, and Trainer settings that are the user's to choose."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.profilers import PassThroughProfiler

from cnnlab.errors import ConfigError
from cnnlab.results.record import RunRecord, best_epoch, read_json
from cnnlab.results.report import build_report
from cnnlab.training.checkpoint import AtomicCheckpointIO
from cnnlab.training.checks import validate_train_config
from cnnlab.training.run import build
from conftest import metrics_of, only, run_cli


def test_only_the_writing_rank_writes_the_record(tmp_path: Path) -> None:
    mine, other = RunRecord(tmp_path / "a"), RunRecord(tmp_path / "b", writes=False)
    for record in (mine, other):
        record.started({"optimizer": "adam"}, ["optimizer=adam"])
        record.completed()
    assert read_json(mine.path) == {
        "status": "completed",
        "choices": {"optimizer": "adam"},
        "overrides": ["optimizer=adam"],
        "output_dir": str(tmp_path / "a"),
    }
    assert not other.path.exists() and other.fields["status"] == "completed"


def test_the_best_epoch_follows_the_metric_and_mode() -> None:
    history = [
        {"epoch": 0, "val/acc": 0.5, "val/loss": 0.9},
        {"epoch": 1, "val/acc": 0.7, "val/loss": 0.8},
        {"epoch": 2, "val/acc": 0.6, "val/loss": 0.4},
        {"epoch": 3, "val/acc": float("nan"), "val/loss": float("nan")},
    ]
    assert best_epoch(history, "val/acc", "max")["epoch"] == 1
    assert best_epoch(history, "val/loss", "min")["epoch"] == 2
    assert best_epoch(history[3:], "val/loss", "min") is None


def test_the_record_keeps_the_best_value_of_a_metric_of_the_modules_own(tmp_path: Path) -> None:
    record = RunRecord(tmp_path)
    history = [
        {"epoch": e, "val/acc": a, "val/f1": f, "time/epoch_s": 1.0, "time/val_s": 0.1}
        | {"time/train_s": 0.9}
        for e, a, f in [(0, 0.9, 0.5), (1, 0.8, 0.7)]
    ]
    record.fitted(
        data_sizes={},
        epochs=2,
        steps=4,
        train_s=2.0,
        history=history,
        final={},
        best_checkpoint=None,
        last_checkpoint=None,
        monitor="val/f1",
        mode="max",
    )
    best = record.fields["best"]
    assert best["epoch"] == 1 and best["val/f1"] == 0.7 and best["val/acc"] == 0.8
    assert (best["monitor"], best["mode"]) == ("val/f1", "max")


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            ["trainer.enable_checkpointing=true", "callbacks.model_checkpoint.enabled=false"],
            "set callbacks.model_checkpoint.enabled=true instead",
        ),
        (["trainer.enable_checkpointing=false"], "callbacks.model_checkpoint.enabled=false"),
        (["trainer.enable_progress_bar=false"], "callbacks.progress_bar.enabled=false"),
    ],
)
def test_trainer_switches_that_contradict_the_callbacks_are_refused_in_one_line(
    compose_cfg: Callable[..., DictConfig], overrides: list[str], says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_train_config(compose_cfg(overrides))
    assert says in str(info.value) and "\n" not in str(info.value)


def test_the_users_trainer_settings_win(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    data = f"paths.data_dir={synthetic_data_dir}"
    default = build(compose_cfg([data])).trainer
    assert isinstance(default.checkpoint_callback, ModelCheckpoint)
    assert isinstance(default.progress_bar_callback, TQDMProgressBar)
    assert isinstance(default.strategy.checkpoint_io, AtomicCheckpointIO)
    chosen = [
        data,
        "callbacks.progress_bar.enabled=false",
        "trainer.enable_progress_bar=true",  # Lightning's own bar
        "trainer.profiler=null",  # Lightning's own no-op profiler
        "callbacks.model_checkpoint.enabled=false",
        "trainer.plugins=[]",
    ]
    cfg = compose_cfg(chosen)
    validate_train_config(cfg)
    trainer = build(cfg).trainer
    assert trainer.progress_bar_callback is not None
    assert type(trainer.profiler) is PassThroughProfiler
    assert trainer.checkpoint_callback is None
    assert not isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_importing_cnnlab_changes_nothing_in_the_process() -> None:
    probe = (
        "import logging, warnings\n"
        "from omegaconf import OmegaConf\n"
        "import cnnlab, cnnlab.training, cnnlab.training.run, cnnlab.training.entry\n"
        "ours = [f for f in warnings.filters if f[1] and 'many workers' in f[1].pattern]\n"
        "assert not ours, 'a warning filter was set'\n"
        "assert not OmegaConf.has_resolver('cnnlab_pid'), 'a resolver was registered'\n"
        "assert not logging.getLogger('pytorch_lightning.utilities.rank_zero').filters\n"
        "from cnnlab.process_setup import set_up_process\n"
        "set_up_process()\n"
        "assert [f for f in warnings.filters if f[1] and 'many workers' in f[1].pattern]\n"
        "assert OmegaConf.has_resolver('cnnlab_pid') and OmegaConf.has_resolver('cnnlab_job_dir')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_run_monitoring_the_validation_loss_keeps_and_tests_its_lowest_epoch(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "train.py",
        "debug=fast",
        "callbacks.model_checkpoint.enabled=true",
        "trainer.max_epochs=3",
        "optimizer=adam",
        "optimizer.lr=0.01",
        "monitor.metric=val/loss",
        "monitor.mode=min",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = metrics_of(only("train/runs/*", tmp_path))
    lowest = min(record["history"], key=lambda e: e["val/loss"])
    best = record["best"]
    assert (best["monitor"], best["mode"]) == ("val/loss", "min")
    assert best["epoch"] == lowest["epoch"] and best["val/loss"] == lowest["val/loss"]
    assert Path(best["checkpoint"]).name.startswith(f"epoch{lowest['epoch']:03d}-")
    assert record["test"]["checkpoint"] == best["checkpoint"]


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (
            "monitor.metric=test/acc",
            "monitor.metric='test/acc' is invalid: use val/acc or val/loss",
        ),
        ("monitor.metric=acc", "monitor.metric='acc' is invalid: use val/acc or val/loss"),
        ("monitor.mode=up", "monitor.mode='up' is invalid: use max"),
    ],
)
def test_an_unknown_monitor_is_refused_in_one_line(
    compose_cfg: Callable[..., DictConfig], override: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_train_config(compose_cfg([override]))
    assert says in str(info.value) and "\n" not in str(info.value)


def test_a_validation_metric_the_module_does_not_log_is_one_line(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "train.py",
        "debug=fast",
        "callbacks.model_checkpoint.enabled=true",
        "monitor.metric=val/f2",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "val/f2" in errors[0] and "Traceback" not in result.stderr


def test_a_sweep_monitoring_the_validation_loss_reports_its_lowest_as_best(
    tmp_path: Path,
) -> None:
    sweep = tmp_path / "sweep"
    for n, (acc, loss) in enumerate([(0.9, 0.5), (0.8, 0.3), (0.95, 0.4)]):
        folder = sweep / f"{n}_seed={n}"
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={n}\n")
        best = {"epoch": 1, "val/acc": acc, "val/loss": loss, "monitor": "val/loss", "mode": "min"}
        record = {"status": "completed", "best": best, "history": [], "test": {"test/acc": 0.5}}
        (folder / "metrics.json").write_text(json.dumps(record))
    report = build_report(sweep)
    assert report.groups[0].best.name == "1_seed=1"
    text = report.path.read_text()
    assert "Best run by val/loss (lowest)" in text and "best val/loss (lowest) **0.3000**" in text
