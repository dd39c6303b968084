"""Sweeps a person can start, read and resume: data by default, short job names, resume,
fail-fast; and the quiet, faithful details around them."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from cnnlab.commands import hydra_quoted
from cnnlab.scale.sweeps import job_label
from conftest import ROOT, metrics_of, only, run_cli, run_sweep

QUICK = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "callbacks.progress_bar.enabled=false",
]
THREE = "optimizer=adadelta,adam,adagrad"


def _outcome(job: Path) -> dict[str, object]:
    """What a job's record says it reached (not when or where)."""
    record = metrics_of(job)
    history = [{k: v for k, v in e.items() if not k.startswith("time/")} for e in record["history"]]
    return {
        "status": record["status"],
        "history": history,
        "best": record["best"]["val/acc"],
        "test": {k: v for k, v in record["test"].items() if k != "checkpoint"},
    }


def _digests(job: Path) -> dict[str, str]:
    """Contents of what training wrote in a job folder: the record, checkpoints, events."""
    files = [job / "metrics.json", *job.glob("checkpoints/*"), *job.glob("tensorboard/*")]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}


# -- job names -----------------------------------------------------------------------------------


def test_a_jobs_label_is_what_the_sweep_varies_in_the_sweeps_order() -> None:
    task = ["debug=fast", "seed=3", "optimizer=adam", "++trainer.limit_train_batches=30"]
    assert job_label(task, ["optimizer", "seed"]) == "optimizer=adam,seed=3"
    assert job_label(task, []) == ""
    long = job_label(
        [f"model.net.hidden_sizes=[{','.join(['40'] * 60)}]"], ["model.net.hidden_sizes"]
    )
    assert len(long) <= 120 and "~" in long  # long values are cut, with a digest to stay unique


@pytest.mark.parametrize(
    "path", ["/data/runs, 2", "/tmp/ünïcödé/it's here", "a=b\\c", "ends\\", "q\\'x"]
)
def test_a_quoted_value_reads_back_as_itself_in_hydra(path: str) -> None:
    parsed = OverridesParser.create().parse_override(f"hydra.sweep.dir={hydra_quoted(path)}")
    assert parsed.value() == path and not parsed.is_sweep_override()


# -- resume --------------------------------------------------------------------------------------


def _start_sweep(data_dir: Path, log_dir: Path, *overrides: str) -> subprocess.Popen[str]:
    args = ["-m", *overrides, f"paths.data_dir={data_dir}", f"paths.log_dir={log_dir}"]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def test_a_killed_sweep_copied_elsewhere_resumes_where_it_stopped_as_an_uninterrupted_one(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    # In sequence, so that the kill finds job 0 finished and job 1 under way.
    basic = "hydra/launcher=basic"
    whole, whole_dir = run_sweep(synthetic_data_dir, tmp_path / "whole", THREE, basic, *QUICK)
    assert whole.returncode == 0, whole.stderr[-3000:]

    process = _start_sweep(synthetic_data_dir, tmp_path / "killed", THREE, basic, *QUICK)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "killed").glob("train/multiruns/*/1_*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended first"
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # no chance to react: as a crash or a power cut
    process.wait()
    killed = only("train/multiruns/*", tmp_path / "killed")
    # Resumed from a copy: its own checkpoints are used where they are, the original untouched.
    sweep = Path(shutil.copytree(killed, tmp_path / "copied" / killed.name, symlinks=True))
    original = {job.name: _digests(job) for job in killed.iterdir() if job.is_dir()}
    first = only("0_*", sweep)
    assert metrics_of(first)["status"] == "completed"
    assert metrics_of(only("1_*", sweep))["status"] == "running"
    before = _digests(first)

    resumed = run_cli("train.py", "--resume", str(sweep))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = resumed.stdout + resumed.stderr
    assert "0_optimizer=adadelta: completed before; kept as it is" in said
    assert "1_optimizer=adam: resuming from" in said
    assert _digests(first) == before  # the finished job was not trained again
    for name in ("0_optimizer=adadelta", "1_optimizer=adam", "2_optimizer=adagrad"):
        assert _outcome(sweep / name) == _outcome(whole_dir / name), name
    assert "3 completed" in (sweep / "report.md").read_text()
    assert not list(sweep.rglob("*-v[0-9]*.ckpt")), "versioned copies of checkpoints appeared"
    assert {job.name: _digests(job) for job in killed.iterdir() if job.is_dir()} == original


@pytest.mark.slow
def test_resuming_runs_a_failed_job_again_and_keeps_the_completed_one(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "MNIST", data / "MNIST")  # no CIFAR-10 yet
    result, sweep = run_sweep(
        data, tmp_path, "data=mnist,cifar10", "data.download=false", "data.verify_md5=false", *QUICK
    )
    assert result.returncode != 0
    assert metrics_of(only("1_data=cifar10", sweep))["status"] == "failed"
    kept = _digests(only("0_data=mnist", sweep))

    shutil.copytree(synthetic_data_dir / "cifar-10-batches-py", data / "cifar-10-batches-py")
    resumed = run_cli("train.py", "--resume", str(sweep))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1_data=cifar10: failed before; running it again" in resumed.stdout + resumed.stderr
    assert metrics_of(only("1_data=cifar10", sweep))["status"] == "completed"
    assert _digests(only("0_data=mnist", sweep)) == kept


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_resume_works_with_the_parallel_and_submitit_launchers(
    synthetic_data_dir: Path, tmp_path: Path, launcher: str
) -> None:
    pytest.importorskip(f"hydra_plugins.hydra_{launcher.split('_')[0]}_launcher")
    data = tmp_path / "data"
    shutil.copytree(synthetic_data_dir / "MNIST", data / "MNIST")
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    overrides = [
        f"hydra/launcher={launcher}",
        *extra,
        "data=mnist,cifar10",
        "data.download=false",
        "data.verify_md5=false",
    ]
    result, sweep = run_sweep(data, tmp_path, *overrides, *QUICK)
    assert metrics_of(only("1_data=cifar10", sweep))["status"] == "failed", result.stderr[-2000:]
    kept = _digests(only("0_data=mnist", sweep))

    shutil.copytree(synthetic_data_dir / "cifar-10-batches-py", data / "cifar-10-batches-py")
    resumed = run_cli("train.py", "--resume", str(sweep))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert metrics_of(only("1_data=cifar10", sweep))["status"] == "completed"
    assert _digests(only("0_data=mnist", sweep)) == kept


def test_resume_of_a_folder_that_is_no_sweep_says_so(tmp_path: Path) -> None:
    result = run_cli("train.py", "--resume", str(tmp_path))
    assert result.returncode == 2 and "is not a sweep folder" in result.stderr
    assert "Traceback" not in result.stderr


# -- fail fast -----------------------------------------------------------------------------------


def test_fail_fast_stops_at_the_first_failed_job_after_writing_the_report(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "sweep.fail_fast=true",
        "hydra/launcher=basic",  # in sequence: job 0 fails before the others start
        "seed=1,2,3",
        "data.val_fraction=1.5",
    )
    assert result.returncode == 1
    assert "stopped at the first failed job (sweep.fail_fast): 0_seed=1: failed" in result.stderr
    assert metrics_of(only("0_seed=1", sweep))["status"] == "failed"
    for later in ("1_seed=2", "2_seed=3"):
        record = metrics_of(sweep / later)
        assert (
            record["status"] == "interrupted" and "not started: sweep.fail_fast" in record["error"]
        )
        assert "history" not in record  # it never trained
    assert (sweep / "report.md").is_file()


# -- data by default, and a quiet, faithful run ------------------------------------------------


def test_data_downloads_by_default(compose_cfg: Callable[..., DictConfig]) -> None:
    for data in ("mnist", "cifar10"):
        assert compose_cfg([f"data={data}"]).data.download is True


def test_without_network_the_default_run_stops_at_once_with_the_fix(tmp_path: Path) -> None:
    start = time.monotonic()
    result = run_cli("train.py", f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2
    assert time.monotonic() - start < 60
    first = next(line for line in result.stderr.splitlines() if line.startswith("Error:"))
    assert first.startswith("Error: MNIST: downloading into") and "failed" in first
    assert "Fix: copy the files into" in result.stderr and "Traceback" not in result.stderr
    assert metrics_of(only("train/runs/*", tmp_path))["status"] == "failed"


def test_no_advertisements_and_evaluation_in_the_runs_own_precision(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    trained = run_cli(
        "train.py",
        "trainer.precision=bf16-mixed",
        *QUICK,
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "💡" not in trained.stdout + trained.stderr
    record = metrics_of(only("train/runs/*", tmp_path))
    # A sweep job's folder holds `=`: the README's evaluate command takes it as typed.
    job_ckpt = tmp_path / "multiruns" / "1_optimizer=adam" / "checkpoints" / "best.ckpt"
    job_ckpt.parent.mkdir(parents=True)
    shutil.copyfile(record["best"]["checkpoint"], job_ckpt)
    evaluated = run_cli(
        "evaluate.py",
        f"ckpt_path={job_ckpt}",
        f"paths.log_dir={tmp_path}",
        f"paths.data_dir={synthetic_data_dir}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "Precision: bf16-mixed" in evaluated.stdout
    assert "💡" not in evaluated.stdout + evaluated.stderr
    result = metrics_of(only("eval/runs/*", tmp_path))
    assert result["test"]["test/acc"] == pytest.approx(record["test"]["test/acc"], abs=1e-6)
    assert result["test"]["test/loss"] == pytest.approx(record["test"]["test/loss"], rel=1e-5)
