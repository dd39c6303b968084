"""Scale-out: parallel and cluster launchers, DDP, the Optuna search, concurrent data preparation.

The launcher and sweeper tests run the real `python src/train.py -m ...` commands on tiny
synthetic data; they need cnnlab's `sweep` extra (part of the dev install).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnlab.data import IndexBatchSampler
from cnnlab.data.synthetic import write_cifar10, write_idx_dataset
from cnnlab.models.classifier import ImageClassifier
from cnnlab.scale.job_resources import parallel_jobs, threads_per_job
from cnnlab.scale.plugins import missing_plugin_message
from cnnlab.training.evaluate import load_checkpoint_config
from conftest import CONF_DIR, ROOT, metrics_of, only, run_cli, run_sweep

FAST = [
    "debug=fast",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "callbacks.progress_bar.enabled=false",
]


def _log_times(log_file: Path) -> tuple[datetime, datetime]:
    """First and last timestamps of a job's train.log ([2026-01-01 12:00:00,123][...])."""
    stamps = [
        datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
        for line in log_file.read_text().splitlines()
        if line.startswith("[20")
    ]
    return stamps[0], stamps[-1]


# -- parallel sweeps on one machine --------------------------------------------------------------


@pytest.mark.slow
def test_joblib_runs_two_jobs_side_by_side_each_with_its_share(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "optimizer=adam,adagrad",
        *FAST,
        # GPUs named by CUDA_VISIBLE_DEVICES are handed out one per job worker; on a machine
        # without them the names are only recorded (training stays on the CPU).
        env={"CUDA_VISIBLE_DEVICES": "7,9"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [only("0_*", sweep), only("1_*", sweep)]
    for job, optimizer in zip(jobs, ["adam", "adagrad"], strict=True):
        metrics = metrics_of(job)
        assert metrics["status"] == "completed" and metrics["choices"]["optimizer"] == optimizer
        assert 0.0 <= metrics["test"]["test/acc"] <= 1.0 and metrics["best"]["val/acc"] >= 0
        assert (job / ".hydra" / "config.yaml").is_file()
        assert any(job.glob("events.out.tfevents.*"))

    # Side by side: each job started before the other one ended.
    (start_0, end_0), (start_1, end_1) = (_log_times(job / "train.log") for job in jobs)
    assert max(start_0, start_1) < min(end_0, end_1), "the two jobs did not overlap in time"

    # Torch threads = cores / parallel jobs, and one GPU each.
    threads = max(len(os.sched_getaffinity(0)) // 2, 1)
    shares = [
        next(
            line for line in (job / "train.log").read_text().splitlines() if "Parallel job" in line
        )
        for job in jobs
    ]
    assert all(f"{threads} torch thread(s)" in line for line in shares), shares
    assert sorted(line.rsplit("GPU ", 1)[1] for line in shares) == ["7", "9"]


def test_threads_split_the_cores_between_parallel_jobs() -> None:
    assert parallel_jobs(-1, cores=8) == 8 and parallel_jobs(-2, cores=8) == 7
    assert parallel_jobs(3, cores=8) == 3 and parallel_jobs(None, cores=8) == 1
    assert threads_per_job(3, cores=8) == 2 and threads_per_job(2, cores=2) == 1
    assert threads_per_job(3, cores=2) == 1  # never below one


_PREPARE = """
import sys, time
from cnnlab.data import CIFAR10DataModule, MNISTDataModule
data_dir, system_dir, start_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))
for dm in (MNISTDataModule(data_dir=data_dir, system_dirs=[system_dir]),
           CIFAR10DataModule(data_dir=data_dir, verify_md5=False)):
    dm.setup()
    print(dm.name, dm.describe()["sizes"])
"""


def test_two_preparations_of_one_folder_at_once_do_not_corrupt_it(tmp_path: Path) -> None:
    """Two processes unpack the same gz/tar.gz files into one data folder at the same instant."""
    system = write_idx_dataset(tmp_path / "system", train=3000, test=500, compress=True)
    cifar = write_cifar10(tmp_path / "cifar" / "cifar-10-batches-py", train=2000, test=500)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tarfile.open(data_dir / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(cifar, arcname="cifar-10-batches-py")

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"}
    start_at = str(time.time() + 4.0)  # after both interpreters have imported torch
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PREPARE, str(data_dir), str(system), start_at],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "MNIST {'train': 2700, 'val': 300, 'test': 500}" in out
        assert "CIFAR-10 {'train': 1600, 'val': 400, 'test': 500}" in out

    raw = data_dir / "MNIST" / "raw"
    for packed in system.glob("*.gz"):
        import gzip

        assert (raw / packed.stem).read_bytes() == gzip.decompress(packed.read_bytes())
    assert not list(raw.glob(".*.tmp")), "half-written files left behind"
    for name in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert (data_dir / "cifar-10-batches-py" / name).read_bytes() == (cifar / name).read_bytes()


# -- DDP -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [57, 60, 3])
def test_ddp_shards_cover_every_sample_once_in_evaluation(size: int) -> None:
    shards = [
        IndexBatchSampler(size, 16, shuffle=False, num_replicas=2, rank=rank) for rank in (0, 1)
    ]
    seen = [torch.cat(list(shard)) for shard in shards]
    assert sorted(torch.cat(seen).tolist()) == list(range(size))
    assert [len(s) for s in shards] == [len(list(s)) for s in shards]


def test_ddp_training_shards_are_disjoint_equal_and_reshuffled_per_epoch() -> None:
    def epoch(e: int) -> list[torch.Tensor]:
        shards = [
            IndexBatchSampler(57, 8, True, 3, num_replicas=2, rank=r, pad=True) for r in (0, 1)
        ]
        for shard in shards:
            shard.set_epoch(e)
        return [torch.cat(list(shard)) for shard in shards]

    first, second = epoch(0), epoch(1)
    assert len(first[0]) == len(first[1]) == 29  # padded so both ranks take the same steps
    assert set(torch.cat(first).tolist()) == set(range(57))
    assert len(set(first[0].tolist()) & set(first[1].tolist())) <= 1  # one padding repeat
    assert not torch.equal(first[0], second[0])
    single = IndexBatchSampler(57, 8, True, 3)
    assert torch.equal(
        torch.cat(list(single)), torch.randperm(57, generator=torch.Generator().manual_seed(3))
    )


def _evaluate_single_process(ckpt: Path) -> dict[str, float]:
    """Validation and test metrics of a checkpoint, in this one process on one device."""
    config = OmegaConf.create(load_checkpoint_config(ckpt))
    model = ImageClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    datamodule = instantiate(config.data)
    results = trainer.validate(model, datamodule=datamodule, verbose=False)[0]
    results.update(trainer.test(model, datamodule=datamodule, verbose=False)[0])
    return {k: float(v) for k, v in results.items()}


@pytest.mark.slow
def test_ddp_cpu_accuracy_is_over_the_whole_validation_set(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    """Two gloo processes; val has 57 images in batches of 16, so the ranks' shards differ."""
    result = run_cli(
        "train.py",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.num_sanity_val_steps=0",
        "data.val_fraction=0.095",
        "data.eval_batch_size=16",
        "optimizer=adam",
        "callbacks.progress_bar.enabled=false",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "MEMBER: 2/2" in output  # two processes took part
    assert output.count("Test accuracy:") == 1  # rank 0 reports

    run = only("train/runs/*", tmp_path)
    assert (run / "train_ddp_process_1.log").is_file()
    metrics = metrics_of(run)
    assert metrics["status"] == "completed" and metrics["data_sizes"]["val"] == 57
    assert len(list((run / "checkpoints").glob("*.ckpt"))) == 2  # best and last, once

    single = _evaluate_single_process(Path(metrics["best"]["checkpoint"]))
    assert metrics["best"]["val/acc"] == pytest.approx(single["val/acc"], abs=1e-6)
    assert metrics["best"]["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)
    assert metrics["test"]["test/acc"] == pytest.approx(single["test/acc"], abs=1e-6)
    assert metrics["test"]["test/loss"] == pytest.approx(single["test/loss"], rel=1e-5)


@pytest.mark.slow
def test_ddp_jobs_of_a_sequential_sweep_stay_in_their_folders(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "trainer=ddp_cpu",
        "optimizer=adam,sgd",
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job in (only("0_*", sweep), only("1_*", sweep)):
        assert metrics_of(job)["status"] == "completed"
        assert (job / "train_ddp_process_1.log").is_file()
    assert not (tmp_path / "train" / "runs").exists()  # no rank ran a run of its own


def test_ddp_inside_a_joblib_job_is_refused_clearly(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    result = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=1",
        "trainer=ddp_cpu",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={tmp_path}",
        *FAST,
    )
    assert result.returncode != 0
    assert "cannot start inside a job of JoblibLauncher" in result.stderr
    record = metrics_of(only("train/multiruns/*/0", tmp_path))  # nothing varies: just its number
    assert record["status"] == "failed" and "hydra/launcher=slurm" in record["error"]


def test_distributed_sampler_of_lightning_is_rejected(compose_cfg) -> None:
    from cnnlab.errors import ConfigError
    from cnnlab.scale.ddp import check_ddp_settings

    cfg = compose_cfg(["trainer=ddp_cpu", "trainer.use_distributed_sampler=true"])

    class TwoProcesses:
        world_size = 2

    with pytest.raises(ConfigError, match="use_distributed_sampler=false"):
        check_ddp_settings(cfg, TwoProcesses())  # type: ignore[arg-type]


# -- Optuna ---------------------------------------------------------------------------------------


def test_optuna_search_of_three_trials_records_the_best(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=7",
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(trials) == 3
    records = [metrics_of(job) for job in trials]
    assert all(r["status"] == "completed" for r in records)
    assert {r["choices"]["optimizer"] for r in records} <= {"adadelta", "adam", "adagrad"}
    assert {r["batch_size"] for r in records} <= {32, 64, 128, 256}
    assert all(1e-4 <= r["optimizer"]["lr"] <= 1.0 for r in records)

    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optimizer", "optimizer.lr", "data.batch_size"}
    assert best["best_value"] == pytest.approx(max(r["best"]["val/acc"] for r in records))
    winner = max(records, key=lambda r: r["best"]["val/acc"])
    assert best["best_params"]["optimizer"] == winner["choices"]["optimizer"]
    assert best["best_params"]["optimizer.lr"] == pytest.approx(winner["optimizer"]["lr"])


@pytest.mark.slow
def test_a_failed_optuna_trial_is_recorded_and_the_search_goes_on(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        "data.val_fraction=choice(0.1,1.5)",  # 1.5 is invalid: those trials fail
        "seed=42",
        *FAST,
    )
    records = [metrics_of(job) for job in sorted(sweep.glob("*_*")) if job.is_dir()]
    statuses = sorted(r["status"] for r in records)
    assert len(records) == 3 and "failed" in statuses and "completed" in statuses, statuses
    assert result.returncode != 0 and "did not complete" in result.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    completed = [r["best"]["val/acc"] for r in records if r["status"] == "completed"]
    assert best["best_value"] == pytest.approx(max(completed))
    assert best["best_params"]["data.val_fraction"] == 0.1


# -- cluster launchers ---------------------------------------------------------------------------


@pytest.mark.slow
def test_submitit_local_runs_a_one_job_sweep(synthetic_data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "optimizer=adam",
        *FAST,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = metrics_of(only("0", sweep))  # one job: nothing varies, the folder is its number
    assert metrics["status"] == "completed" and metrics["choices"]["optimizer"] == "adam"
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # submitit's own job logs


def test_slurm_launcher_takes_its_settings_from_the_config() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    overrides = [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=240",
        "hydra.launcher.array_parallelism=8",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.timeout_min, launcher.array_parallelism) == ("gpu", 240, 8)
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    sweep_dir = cfg.hydra.sweep.dir
    assert launcher.submitit_folder == f"{sweep_dir}/.submitit/%j"  # logs beside the jobs


# -- missing plugins ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "names"),
    [
        ("hydra/launcher=joblib", "joblib launcher"),
        ("hydra/launcher=submitit_slurm", "submitit launcher"),
        ("hydra/launcher=slurm", "submitit launcher"),
        ("hparams_search=optuna", "Optuna sweeper"),
    ],
)
def test_a_missing_plugin_names_the_extra_to_install(arg: str, names: str) -> None:
    message = missing_plugin_message(["-m", arg, "optimizer=adam"], installed=lambda _: False)
    assert message is not None and names in message
    assert 'pip install -e ".[sweep]"' in message
    assert missing_plugin_message([arg], installed=lambda _: True) is None
    assert missing_plugin_message(["optimizer=adam", "-m"], installed=lambda _: False) is None


def test_the_cli_stops_before_hydra_when_a_plugin_is_missing(tmp_path: Path) -> None:
    """A stand-in package without the plugin shadows the installed ones."""
    fake = tmp_path / "site" / "hydra_plugins"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")  # a regular package hides the namespace's others
    result = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=joblib",
        f"paths.log_dir={tmp_path}",
        env={"PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT / "src")])},
    )
    assert result.returncode == 2
    assert 'pip install -e ".[sweep]"' in result.stderr and "Traceback" not in result.stderr
