"""The default launcher: sweeps side by side where that pays, in sequence where it cannot."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from omegaconf import DictConfig

from cnnlab.scale.auto_launch import choose, jobs_at_once
from conftest import metrics_of, only, run_sweep


@pytest.mark.parametrize(
    ("jobs", "cores", "gpus", "per_gpu", "expected"),
    [
        (2, 2, 0, 2, 2),  # CPU: one torch thread per job
        (3, 2, 0, 2, 3),  # in one round rather than two whose second leaves a core idle
        (5, 2, 0, 2, 2),  # many jobs: as many at once as the cores
        (2, 16, 0, 2, 2),  # never more than the jobs
        (12, 16, 0, 2, 12),
        (3, 1, 0, 2, 1),  # one core: in sequence
        (8, 16, 1, 3, 3),  # GPUs: jobs_per_gpu each
        (8, 16, 2, 2, 4),
        (1, 16, 2, 2, 1),
    ],
)
def test_the_number_of_jobs_at_once(
    jobs: int, cores: int, gpus: int, per_gpu: int, expected: int
) -> None:
    assert jobs_at_once(jobs, cores, gpus, per_gpu) == expected


def test_two_jobs_run_side_by_side_on_two_cores_and_one_job_or_ddp_jobs_in_sequence(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    two = [compose_cfg(["optimizer=adam"]), compose_cfg(["optimizer=adagrad"])]
    at_once, why = choose(two, cores=2, gpus=0, jobs_per_gpu=2)
    assert at_once == 2 and "2 at a time side by side (joblib) on 2 cores" in why
    assert "1 torch thread(s) each" in why
    assert choose(two[:1], cores=2, gpus=0, jobs_per_gpu=2) == (1, "one job: it runs here")
    ddp = [compose_cfg(["trainer=ddp_cpu"]), compose_cfg(["trainer=ddp_cpu", "seed=1"])]
    at_once, why = choose(ddp, cores=2, gpus=0, jobs_per_gpu=2)
    assert (
        at_once == 1 and why == "2 DDP jobs run one after another (each starts its own processes)"
    )


def test_the_default_launcher_is_auto_and_basic_is_one_choice_away(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        default = compose("train", return_hydra_config=True)
        basic = compose("train", overrides=["hydra/launcher=basic"], return_hydra_config=True)
    assert default.hydra.launcher._target_.endswith("AutoLauncher")
    assert basic.hydra.launcher._target_.endswith("BasicLauncher")


def _span(job: Path) -> tuple[datetime, datetime]:
    stamps = re.findall(r"^\[([\d-]+ [\d:,]+)\]", (job / "train.log").read_text(), flags=re.M)
    first, last = (datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f") for s in (stamps[0], stamps[-1]))
    return first, last


def test_a_two_job_sweep_runs_its_jobs_at_the_same_time(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    quick = ["debug=fast", "trainer.limit_train_batches=30", "trainer.max_epochs=2"]
    result, sweep = run_sweep(synthetic_data_dir, tmp_path, "optimizer=adam,adagrad", *quick)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[launcher auto] 2 jobs, 2 at a time side by side (joblib)" in result.stdout
    first, second = only("0_optimizer=adam", sweep), only("1_optimizer=adagrad", sweep)
    (start_a, end_a), (start_b, end_b) = _span(first), _span(second)
    assert start_a < end_b and start_b < end_a, "the jobs did not overlap"
    assert all(metrics_of(job)["status"] == "completed" for job in (first, second))
    assert (sweep / "report.md").is_file()
    said = result.stdout + result.stderr
    assert "it/s]" not in said  # no progress bars from the parallel jobs
    # Every line of a job carries its label: its epoch lines, test results and tables.
    for job in ("0_optimizer=adam", "1_optimizer=adagrad"):
        assert re.search(rf"^\[{job}\] \[.*\]\[INFO\] - Epoch 2/2 - ", said, flags=re.M)
        assert re.search(rf"^\[{job}\] Test accuracy: [\d.]+$", result.stdout, flags=re.M)
        assert f"[{job}] Per-class results on the test set:" in result.stdout
        assert re.search(rf"^\[{job}\] \| 9 \| ", result.stdout, flags=re.M)
        assert re.search(rf"^\[{job}\] .*Training time: ", said, flags=re.M)
    assert "Test metric" not in said  # Lightning's own table carries no label: left out
    # One model summary for the two jobs (same net), the other says whose it is.
    assert said.count("Total params") == 1 and said.count("Model summary: the same as ") == 1
    # One report line, after the closing table, which marks the best job.
    assert result.stdout.count("Sweep report:") == 1
    table = result.stdout.split("Sweep results (")[1].splitlines()
    assert table[1].split()[:3] == ["job", "status", "best"]
    assert {line.split()[-6] for line in table[2:4]} == {"0_optimizer=adam", "1_optimizer=adagrad"}
    assert table[4].startswith("* best by validation accuracy: ")
    assert table[5].startswith("Sweep report: ")
