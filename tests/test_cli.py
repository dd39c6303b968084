"""The real entry points, run as a user runs them, on synthetic data in the real formats."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from conftest import only, run_cli, run_sweep

FAST = ["debug=fast", "trainer.limit_train_batches=8", "trainer.limit_val_batches=2"]


def _summary_tags(folder: Path, plugin: str) -> set[str]:
    """Tags of one TensorBoard plugin in all event files of a folder."""
    tags = set()
    for path in folder.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            tags |= {
                v.tag for v in event.summary.value if v.metadata.plugin_data.plugin_name == plugin
            }
    return tags


def _hparams(folder: Path) -> tuple[list[str], dict[str, object]]:
    """The HPARAMS entry of a run's events: hyperparameter names in the order TensorBoard
    shows them, and this run's values."""
    names: list[str] = []
    values: dict[str, object] = {}
    for path in folder.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("experiment"):
                    names = [info.name for info in data.experiment.hparam_infos]
                if data.HasField("session_start_info"):
                    for name, v in data.session_start_info.hparams.items():
                        values[name] = getattr(v, v.WhichOneof("kind"))
    return names, values


@pytest.fixture(scope="module")
def trained_run(synthetic_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `python src/train.py` run, with checkpoints (fast mode turns them off)."""
    logs = tmp_path_factory.mktemp("outputs")
    result = run_cli(
        "train.py",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={logs}",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=8",
        "optimizer=adam",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout and "Test loss:" in result.stdout
    return only("train/runs/*", logs)


def test_a_run_leaves_config_checkpoints_events_and_metrics(trained_run: Path) -> None:
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["choices"]["optimizer"] == "adam"
    assert metrics["params"] == 1_625_866
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert 0.0 <= metrics["test"]["test/acc"] <= 1.0 and metrics["test"]["test/loss"] > 0
    assert metrics["time"]["train_s"] > 0 and len(metrics["time"]["per_epoch_s"]) == 2
    assert Path(metrics["best"]["checkpoint"]).is_file()
    assert metrics["best"]["val/acc"] == max(e["val/acc"] for e in metrics["history"])
    assert metrics["history"][-1]["train/loss"] < metrics["history"][0]["train/loss"]
    assert list(trained_run.glob("events.out.tfevents.*")), "no TensorBoard events in the run"


def test_tensorboard_draws_loss_and_accuracy_against_the_epoch(trained_run: Path) -> None:
    """The curves are named metric first (TensorBoard opens the groups `accuracy` and `loss`)
    and drawn at steps 0, 1 (the epochs), with no `epoch`, `hparams/*` or `hp_metric` chart;
    the events sit in the run folder itself, so TensorBoard names the run by its folder."""
    events = EventAccumulator(str(trained_run), size_guidance={})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    curves = {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "val/acc_best"}
    assert curves | {"lr", "time/epoch_s", "test/acc", "test/loss", "time/train_s"} <= tags
    assert not [t for t in tags if t in ("epoch", "hp_metric") or t.startswith("hparams/")]
    assert tags.isdisjoint({"train/loss", "train/acc", "val/loss", "val/acc"})
    assert not [t for t in tags if t.startswith("lr-")]
    for tag in [*curves, "lr", "time/epoch_s"]:
        assert [e.step for e in events.Scalars(tag)] == [0, 1], tag
    history = json.loads((trained_run / "metrics.json").read_text())["history"]
    assert [e.value for e in events.Scalars("loss/val")] == pytest.approx(
        [epoch["val/loss"] for epoch in history]
    )
    assert set(events.Tags()["images"]) == {
        f"normalised_confusion/{split}" for split in ("train", "val", "test")
    }
    assert (
        not (trained_run / "tensorboard").exists() and not (trained_run / "hparams.yaml").exists()
    )


def test_evaluate_reproduces_the_runs_test_accuracy(
    trained_run: Path, tmp_path: Path, synthetic_data_dir: Path
) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    result = run_cli(
        "evaluate.py",
        f"ckpt_path={metrics['best']['checkpoint']}",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={synthetic_data_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("Test accuracy:"))
    assert float(line.split(":")[1]) == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)
    evaluated = json.loads(only("eval/runs/*/metrics.json", tmp_path).read_text())
    assert evaluated["test"]["test/acc"] == pytest.approx(metrics["test"]["test/acc"], abs=1e-6)


def test_three_optimizer_sweep_makes_one_folder_per_optimizer(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "optimizer=adadelta,adam,adagrad",
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    # Named by what the sweep varies; the fixed overrides stay in each job's .hydra/.
    assert [p.name for p in jobs] == [
        "0_optimizer=adadelta",
        "1_optimizer=adam",
        "2_optimizer=adagrad",
    ]
    assert "debug=fast" in (jobs[0] / ".hydra" / "overrides.yaml").read_text()
    report = (sweep / "report.md").read_text()
    assert "| 1_optimizer=adam | optimizer=adam |" in report
    for job, optimizer in zip(jobs, ["adadelta", "adam", "adagrad"], strict=True):
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        assert metrics["choices"]["optimizer"] == optimizer
        assert metrics["optimizer"]["_target_"].lower().endswith(optimizer)
        assert (job / ".hydra" / "config.yaml").is_file()
        hparams = _summary_tags(job, plugin="hparams")
        assert "_hparams_/session_start_info" in hparams  # one HPARAMS row per job
        names, values = _hparams(job)
        # No experiment summary per run: TensorBoard builds the sweep's from all its runs and
        # lists first what differs between them (the optimizer here).
        assert names == [] and values["optimizer"] == optimizer
        assert {"model", "model/net/hidden_sizes", "data", "data/batch_size"} <= set(values)
        assert {"trainer/max_epochs", "trainer/precision", "seed", "optimizer/lr"} <= set(values)
        assert not [n for n in values if n.startswith(("choice/", "paths", "hydra", "logger"))]


def test_any_combination_takes_shapes_from_the_data(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result = run_cli(
        "train.py",
        "data=cifar10",
        "model=net_2",
        "optimizer=adam",
        "data.batch_size=128",
        "data.verify_md5=false",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(only("train/runs/*/metrics.json", tmp_path).read_text())
    assert metrics["params"] == 2_117_962 and metrics["net"] == "net_2"
    assert metrics["batch_size"] == 128


def test_missing_data_gives_one_clear_message(tmp_path: Path) -> None:
    result = run_cli(
        "train.py",
        f"paths.data_dir={tmp_path / 'empty'}",
        f"paths.log_dir={tmp_path / 'out'}",
        "data.download=false",
    )
    assert result.returncode != 0
    assert "MNIST not found" in result.stderr and "data.download=true" in result.stderr
    assert "Traceback" not in result.stderr
    metrics = json.loads(only("train/runs/*/metrics.json", tmp_path / "out").read_text())
    assert metrics["status"] == "failed" and "MNIST not found" in metrics["error"]


def test_unknown_option_lists_the_available_ones(tmp_path: Path) -> None:
    result = run_cli("train.py", "optimizer=adamm", f"paths.log_dir={tmp_path}")
    assert result.returncode != 0
    assert "adamm" in result.stderr and "adadelta" in result.stderr and "adagrad" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_failing_job_keeps_the_others_and_fails_the_sweep(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "data.val_fraction=0.1,1.5",
        *FAST,
    )
    assert result.returncode != 0
    assert "1 job(s) of the sweep did not complete" in result.stderr
    good = json.loads(only("0_*/metrics.json", sweep).read_text())
    bad = json.loads(only("1_*/metrics.json", sweep).read_text())
    assert good["status"] == "completed" and good["test"]["test/acc"] >= 0
    assert bad["status"] == "failed" and "data.val_fraction=1.5" in bad["error"]
