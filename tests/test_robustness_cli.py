"""Faults forced for real on the real entry point: what the user sees, and that nothing is lost.

Each test runs `python src/train.py` as a user does (synthetic data in the real formats), and
injects the fault itself: a real SIGINT/SIGTERM to the training process, a truncated IDX file,
a learning rate that really produces NaN, two runs launched at once.
"""

from __future__ import annotations

import gzip
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import ROOT, metrics_of, only, run_cli, run_sweep

# A run long enough to be interrupted in its third or fourth epoch, short enough for CI.
RESUMABLE = [
    "optimizer=adam",
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks.progress_bar.enabled=false",
]
QUICK = ["debug=fast", "trainer.limit_train_batches=4", "callbacks.progress_bar.enabled=false"]


def start_cli(script: str, *args: str, terminal: bool = False) -> subprocess.Popen[str]:
    """Start an entry point in the background, with the same environment as `run_cli`;
    `terminal`: in a process group of its own, which a signal reaches whole, as Ctrl-C does."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, str(ROOT / "src" / script), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=terminal,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Background processes a test starts; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for(found: Callable[[], Path | None], proc: subprocess.Popen[str]) -> Path:
    """Poll until `found` returns a path, failing if the process ends first."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        path = found()
        if path is not None:
            return path
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended (rc={proc.returncode}) before the awaited file:\n{err}")
        time.sleep(0.02)
    pytest.fail("timed out waiting for the run")


def results(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a run learned and measured, without wall times and folder names."""
    return {
        "history": [
            {k: v for k, v in epoch.items() if not k.startswith("time/")}
            for epoch in metrics["history"]
        ],
        "final": metrics["final"],
        "best": {k: v for k, v in metrics["best"].items() if k != "checkpoint"},
        "test": {k: v for k, v in metrics["test"].items() if k != "checkpoint"},
        "epochs": metrics["epochs"],
        "steps": metrics["steps"],
    }


@pytest.fixture(scope="module")
def twin_runs(synthetic_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The same run launched twice at the same moment, into the same log folder.

    Run folders are named by time (to the microsecond) and process id: two processes alive
    at once never share a pid, so their folders differ even within the same microsecond.
    """
    logs = tmp_path_factory.mktemp("twins")
    args = [f"paths.data_dir={synthetic_data_dir}", f"paths.log_dir={logs}", *RESUMABLE]
    procs = [start_cli("train.py", *args) for _ in range(2)]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    runs = [only(f"train/runs/*_{proc.pid}", logs) for proc in procs]
    return runs


def test_two_runs_started_at_once_get_their_own_folders(twin_runs: list[Path]) -> None:
    assert len(twin_runs) == 2 and twin_runs[0] != twin_runs[1]
    assert twin_runs[0].parent == twin_runs[1].parent
    for run in twin_runs:
        metrics = metrics_of(run)
        assert metrics["status"] == "completed" and metrics["output_dir"] == str(run)
        assert Path(metrics["best"]["checkpoint"]).parent == run / "checkpoints"
        assert len(list(run.glob("events.out.tfevents.*"))) >= 1


def test_same_config_and_seed_give_identical_metrics(twin_runs: list[Path]) -> None:
    first, second = (metrics_of(run) for run in twin_runs)
    assert len(first["history"]) == 4
    assert results(first) == results(second)


@pytest.mark.slow
def test_two_sweeps_started_at_once_never_share_a_folder(
    synthetic_data_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    args = ["-m", "optimizer=adam", f"paths.data_dir={synthetic_data_dir}"]
    processes += [start_cli("train.py", *args, f"paths.log_dir={tmp_path}", *QUICK) for _ in "ab"]
    for proc in processes:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    assert len(list((tmp_path / "train" / "multiruns").iterdir())) == 2
    for proc in processes:
        job = only("0", only(f"train/multiruns/*_{proc.pid}", tmp_path))
        assert metrics_of(job)["status"] == "completed"
        assert metrics_of(job)["output_dir"] == str(job)


def interrupt(
    signum: signal.Signals, args: list[str], logs: Path, processes: list[subprocess.Popen[str]]
) -> tuple[subprocess.Popen[str], str, Path]:
    """Start a run, send it `signum` once its second epoch-end checkpoint exists, and wait.

    By then the best epoch so far is behind the checkpoint, so resuming must carry it over.
    """
    proc = start_cli("train.py", *args, f"paths.log_dir={logs}")
    processes.append(proc)
    checkpoint = wait_for(
        lambda: next(iter(logs.glob("train/runs/*/checkpoints/last.ckpt")), None), proc
    )
    first = checkpoint.stat()
    wait_for(lambda: checkpoint if checkpoint.stat().st_ino != first.st_ino else None, proc)
    proc.send_signal(signum)  # in the third epoch or later
    _, err = proc.communicate(timeout=300)
    return proc, err, checkpoint.parent.parent


def assert_stopped_cleanly(
    proc: subprocess.Popen[str], err: str, run: Path, signum: signal.Signals
) -> Path:
    """Exit code, message and record of an interrupted run; returns its usable checkpoint."""
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"Error: Interrupted by {signum.name} at epoch" in err and "Traceback" not in err
    metrics = metrics_of(run)
    assert metrics["status"] == "interrupted" and metrics["error"] in err
    assert metrics["interrupted_at"]["signal"] == signum.name
    assert 2 <= metrics["epochs"] < 4 and len(metrics["history"]) == metrics["epochs"]
    checkpoint = Path(metrics["last_checkpoint"])
    assert checkpoint == run / "checkpoints" / "last.ckpt"
    # The printed command, as the shell and Hydra read it, resumes from that checkpoint.
    pasted = OverridesParser.create().parse_override(shlex.split(metrics["resume_command"])[-1])
    assert pasted.key_or_group == "ckpt_path" and pasted.value() == str(checkpoint)
    assert metrics["resume_command"] in err
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["epoch"] == metrics["epochs"] - 1  # the last finished epoch, whole
    return checkpoint


def test_sigint_keeps_the_last_checkpoint_and_the_resumed_run_matches(
    twin_runs: list[Path],
    synthetic_data_dir: Path,
    tmp_path: Path,
    processes: list[subprocess.Popen[str]],
) -> None:
    args = [f"paths.data_dir={synthetic_data_dir}", *RESUMABLE]
    proc, err, run = interrupt(signal.SIGINT, args, tmp_path / "first", processes)
    checkpoint = assert_stopped_cleanly(proc, err, run, signal.SIGINT)

    resumed = run_cli(
        "train.py", *args, f"paths.log_dir={tmp_path / 'resumed'}", f"ckpt_path={checkpoint}"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_run = only("resumed/train/runs/*", tmp_path)
    assert metrics_of(resumed_run)["status"] == "completed"
    reference = metrics_of(twin_runs[0])
    assert reference["best"]["epoch"] < metrics_of(run)["epochs"]  # the best is carried over
    assert results(metrics_of(resumed_run)) == results(reference)
    assert metrics_of(run)["status"] == "interrupted" and checkpoint.is_file()  # left as it was


def test_sigterm_stops_the_run_the_same_way(
    synthetic_data_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    args = [f"paths.data_dir={synthetic_data_dir}", *RESUMABLE]
    proc, err, run = interrupt(signal.SIGTERM, args, tmp_path, processes)
    assert_stopped_cleanly(proc, err, run, signal.SIGTERM)


def test_a_signal_to_a_sweep_records_every_job(
    synthetic_data_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    proc = start_cli(
        "train.py",
        "-m",
        "seed=1,2",
        "hydra/launcher=basic",  # one job after another: the second has not started yet
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
        *RESUMABLE,
    )
    processes.append(proc)
    wait_for(
        lambda: next(iter(tmp_path.glob("train/multiruns/*/0_*/checkpoints/last.ckpt")), None),
        proc,
    )
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)

    assert proc.returncode != 0
    assert "2 job(s) of the sweep did not complete" in err
    sweep = only("train/multiruns/*", tmp_path)
    stopped, skipped = metrics_of(only("0_*", sweep)), metrics_of(only("1_*", sweep))
    assert stopped["status"] == "interrupted" and Path(stopped["last_checkpoint"]).is_file()
    assert "seed=1" in stopped["resume_command"] and "-m" not in stopped["resume_command"]
    assert skipped["status"] == "interrupted" and "not started" in skipped["error"]


def test_ctrl_c_in_a_sweep_of_jobs_side_by_side_records_every_job(
    synthetic_data_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    # Five jobs on two cores: two run side by side (joblib, the default), three wait.
    long_run = [*RESUMABLE[:-1], "trainer.max_epochs=40"]  # never done before the signal
    proc = start_cli(
        "train.py", "-m", "seed=1,2,3,4,5", f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}", *long_run, RESUMABLE[-1], terminal=True,
    )  # fmt: skip
    processes.append(proc)
    checkpoints = "train/multiruns/*/[01]_*/checkpoints/last.ckpt"
    wait_for(lambda: tmp_path if len(list(tmp_path.glob(checkpoints))) == 2 else None, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    out, err = proc.communicate(timeout=300)

    assert "2 at a time side by side (joblib)" in out + err
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert "5 job(s) of the sweep did not complete" in err
    sweep = only("train/multiruns/*", tmp_path)
    for job in ("0_*", "1_*"):  # each stopped at a batch boundary, once: not "at once"
        record = metrics_of(only(job, sweep))
        assert record["status"] == "interrupted" and record["interrupted_at"]["signal"] == "SIGINT"
        assert Path(record["last_checkpoint"]).is_file() and "seed=" in record["resume_command"]
    for job in ("2_*", "3_*", "4_*"):
        record = metrics_of(only(job, sweep))
        assert (
            record["status"] == "interrupted"
            and record["error"] == "not started: the sweep was stopped by SIGINT"
        )
    assert not (sweep / ".workers").exists()


def test_a_diverging_run_stops_early_and_keeps_its_last_good_checkpoint(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    # Adagrad at lr 0.01 for the first epoch, then 1e12: NaN in the second epoch.
    result = run_cli(
        "train.py",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
        "optimizer=adagrad",
        "+lr_scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,"
        "step_size:1,gamma:1e14}",
        "trainer.max_epochs=5",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "callbacks.progress_bar.enabled=false",
    )
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Error: Training diverged with Adagrad" in result.stderr
    assert "the training loss was nan at epoch 1" in result.stderr
    assert "Traceback" not in result.stderr and "Test accuracy" not in result.stdout
    metrics = metrics_of(only("train/runs/*", tmp_path))
    assert metrics["status"] == "diverged" and "Training diverged" in metrics["error"]
    assert metrics["diverged_at"]["epoch"] == 1 and metrics["diverged_at"]["loss"] == "nan"
    assert 4 < metrics["diverged_at"]["step"] <= metrics["steps"] <= 8  # stopped in epoch 1
    assert metrics["epochs"] == 1 and len(metrics["history"]) == 1
    saved = torch.load(metrics["last_checkpoint"], map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0
    assert all(
        torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point()
    )


@pytest.mark.slow
def test_a_diverged_job_does_not_stop_the_sweep(synthetic_data_dir: Path, tmp_path: Path) -> None:
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "optimizer=adagrad",
        "optimizer.lr=1e8,0.01",
        *QUICK,
    )
    assert result.returncode != 0
    assert "1 job(s) of the sweep did not complete" in result.stderr
    diverged, good = metrics_of(only("0_*", sweep)), metrics_of(only("1_*", sweep))
    assert diverged["status"] == "diverged" and diverged["diverged_at"]["epoch"] == 0
    assert "Training diverged with Adagrad, lr 1e+08" in diverged["error"]
    assert good["status"] == "completed" and good["test"]["test/acc"] >= 0
    assert any(only("1_*", sweep).glob("events.out.tfevents.*"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+model.net.sample_shape=[3,32,32]",
            "model.net.sample_shape=[3, 32, 32] does not fit MNIST, whose images are 1x28x28",
        ),
        # More values in test_robustness.py, in-process.
        pytest.param(
            "data.batch_size=abc",
            "data.batch_size='abc' is invalid: it must be an integer >= 1",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["net-shape-vs-dataset", "not-a-number"],
)
def test_bad_config_is_one_message_and_no_training(
    synthetic_data_dir: Path, tmp_path: Path, override: str, message: str
) -> None:
    result = run_cli(
        "train.py", override, f"paths.data_dir={synthetic_data_dir}", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 2
    assert f"Error: {message}" in result.stderr and "Traceback" not in result.stderr
    run = only("train/runs/*", tmp_path)
    assert metrics_of(run)["status"] == "failed" and message in metrics_of(run)["error"]
    assert not (run / "checkpoints").exists()


def test_truncated_idx_file_is_named_and_not_trained_on(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(synthetic_data_dir / "MNIST", tmp_path / "data" / "MNIST")
    images = tmp_path / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:100_000])
    result = run_cli(
        "train.py", f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'out'}"
    )
    assert result.returncode == 2
    assert f"MNIST: {images} is truncated" in result.stderr and "Traceback" not in result.stderr
    run = only("train/runs/*", tmp_path / "out")
    assert metrics_of(run)["status"] == "failed" and str(images) in metrics_of(run)["error"]
    assert not (run / "checkpoints").exists()


def errors_in(stderr: str) -> list[str]:
    """The `Error:` lines a run printed: a fault must end with exactly one."""
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def test_a_folder_where_a_dataset_file_belongs_is_one_line_and_leaves_no_temporary_file(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    for path in (synthetic_data_dir / "FashionMNIST" / "raw").iterdir():  # as Debian ships them
        raw.mkdir(parents=True, exist_ok=True)
        (raw / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    blocked = raw / "train-images-idx3-ubyte"
    blocked.mkdir()
    result = run_cli(
        "train.py", "data=fashion_mnist", f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'out'}", *QUICK,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert errors_in(result.stderr) == [
        f"Error: Fashion-MNIST: {blocked} is a folder, where cnnlab expects the file "
        f"{blocked.name}. Fix: move it away (or delete it): cnnlab then unpacks or "
        "downloads the file there."
    ]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.tmp")), "a temporary file was left behind"
    run = only("train/runs/*", tmp_path / "out")
    assert metrics_of(run)["status"] == "failed" and str(blocked) in metrics_of(run)["error"]


def test_bf16_true_precision_trains_and_tests(synthetic_data_dir: Path, tmp_path: Path) -> None:
    """Weights in bfloat16 get bfloat16 images: the batches, the summary's example input."""
    result = run_cli(
        "train.py", "trainer.precision=bf16-true", f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}", *QUICK,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = only("train/runs/*", tmp_path)
    record = metrics_of(run)
    assert record["status"] == "completed" and 0 <= record["test"]["test/acc"] <= 1
    assert "(None, 32, 28, 28)" in (run / "model_summary.txt").read_text()


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write to: without write permission, or (for root, whom
    permissions do not stop) a read-only filesystem mounted there, where that is allowed."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    mounted = False
    if os.access(folder, os.W_OK):  # root
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
        )
        if result.returncode != 0:
            folder.chmod(0o755)
            pytest.skip(f"cannot make a read-only folder here: {result.stderr.decode().strip()}")
        mounted = True
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.chmod(0o755)


def test_an_outputs_folder_that_cannot_be_written_is_one_line(
    synthetic_data_dir: Path, read_only_folder: Path
) -> None:
    result = run_cli(
        "train.py", f"paths.data_dir={synthetic_data_dir}", f"paths.log_dir={read_only_folder}",
        *QUICK,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"Error: paths.log_dir={read_only_folder}: the run folder ")
    assert f"as {read_only_folder} is " in result.stderr
    assert "Fix: point paths.log_dir at a writable folder." in result.stderr


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_an_outputs_folder_that_is_a_file_is_one_line(
    synthetic_data_dir: Path, tmp_path: Path, sweep: bool
) -> None:
    log_dir = tmp_path / "outputs"
    log_dir.write_text("a file, not a folder")
    result = run_cli(
        "train.py", *(["-m", "seed=1,2"] if sweep else []), f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={log_dir}", *QUICK,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    folders = f"{log_dir}/train/{'multiruns' if sweep else 'runs'}/"
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        f"Error: paths.log_dir={log_dir}: the {'sweep' if sweep else 'run'} folder {folders}"
    )
    assert result.stderr.endswith(
        f" cannot be created, as {log_dir} is a file, not a folder. Fix: point paths.log_dir "
        "at a folder (it is created if missing).\n"
    )
    assert log_dir.read_text() == "a file, not a folder"


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_value_that_cannot_be_resolved_is_one_line_naming_key_and_variable(
    synthetic_data_dir: Path, tmp_path: Path, sweep: bool
) -> None:
    result = run_cli(
        "train.py", *(["-m", "seed=1,2"] if sweep else []), "run_label=${oc.env:CNNLAB_NOT_SET}",
        f"paths.data_dir={synthetic_data_dir}", f"paths.log_dir={tmp_path}", *QUICK,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == (
        "Error: run_label=${oc.env:CNNLAB_NOT_SET} cannot be resolved: the environment variable "
        "CNNLAB_NOT_SET is not set. Fix: set CNNLAB_NOT_SET, give a default "
        "(${oc.env:CNNLAB_NOT_SET,<default>}) or give run_label another value.\n"
    )
    assert not list(tmp_path.iterdir()), "no run or sweep folder for a run that never started"


def test_a_run_folder_that_vanishes_mid_run_is_one_line_and_not_made_again(
    synthetic_data_dir: Path, tmp_path: Path, processes: list[subprocess.Popen[str]]
) -> None:
    logs = tmp_path / "outputs"
    proc = start_cli(
        "train.py", f"paths.data_dir={synthetic_data_dir}", f"paths.log_dir={logs}", *RESUMABLE
    )
    processes.append(proc)
    checkpoint = wait_for(
        lambda: next(iter(logs.glob("train/runs/*/checkpoints/last.ckpt")), None), proc
    )
    run = checkpoint.parent.parent
    run.rename(tmp_path / "moved-away")  # at once, whatever the run is writing
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert errors_in(err) == [
        f"Error: The run folder {run} vanished while the run was writing to it (deleted, moved "
        "or unmounted), so the run stopped and nothing more of it could be kept. Run the "
        "command again: it gets a new folder."
    ]
    assert "Traceback" not in err and "Exception in thread" not in err
    if run.exists():  # a checkpoint written after the move made a new folder: it says so
        assert metrics_of(run)["status"] == "failed"
