"""The card's sweep, timed: the three-optimizer sweep with the default launcher and with
`hydra/launcher=basic` (in sequence), alternating, on the same data and seeds."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OPTIMIZERS = "optimizer=adadelta,adam,adagrad"
LAUNCHERS = {"default": [], "basic": ["hydra/launcher=basic"]}


def _sweep(train_script: Path, log_dir: Path, extra: list[str]) -> tuple[float, dict[str, Any]]:
    """(wall seconds, per-job final metrics) of one sweep run as a user runs it."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(train_script), "-m", OPTIMIZERS, *extra, f"paths.log_dir={log_dir}"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the sweep failed:\n{done.stderr[-3000:]}")
    results = {}
    for record in sorted(log_dir.glob("train/multiruns/*/*/metrics.json")):
        data = json.loads(record.read_text())
        results[record.parent.name] = {
            "val/acc": data["best"]["val/acc"],
            "test/acc": data["test"]["test/acc"],
            "test/loss": data["test"]["test/loss"],
        }
    return seconds, results


def run_sweep_benchmark(
    train_script: Path, overrides: list[str], rounds: int = 2, single_job: bool = False
) -> dict[str, Any]:
    """Alternate default / basic (A B, B A, ...) so machine noise hits both."""
    runs: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    metrics: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-sweep-") as tmp:
        for rep in range(rounds):
            order = list(LAUNCHERS) if rep % 2 == 0 else list(LAUNCHERS)[::-1]
            for name in order:
                log_dir = Path(tmp) / f"{name}{rep}"
                seconds, metrics[name] = _sweep(
                    train_script, log_dir, [*LAUNCHERS[name], *overrides]
                )
                runs[name].append(seconds)
        alone = None
        if single_job:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, str(train_script), "optimizer=adam", *overrides,
                 f"paths.log_dir={Path(tmp) / 'alone'}"],
                capture_output=True, check=True,
            )  # fmt: skip
            alone = time.perf_counter() - start
    medians = {name: statistics.median(values) for name, values in runs.items()}
    differences = {
        job: max(abs(metrics["default"][job][k] - metrics["basic"][job][k]) for k in values)
        for job, values in metrics["basic"].items()
    }
    return {
        "overrides": overrides,
        "fixed_cost": measure_fixed_cost(train_script, overrides, reps=max(3, rounds)),
        "wall_s": runs,
        "median_s": medians,
        "ratio": medians["default"] / medians["basic"],
        "one_job_alone_s": alone,
        "metrics": metrics,
        "largest_metric_difference": max(differences.values()) if differences else None,
    }


# A run of one batch of each split: all it costs beyond them is the run's fixed cost.
ONE_BATCH = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
IMPORTS = "import torch, pytorch_lightning"


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return time.perf_counter() - start


def measure_fixed_cost(train_script: Path, overrides: list[str], reps: int = 3) -> dict[str, Any]:
    """A run's fixed cost: the wall time of a one-batch run (`ONE_BATCH`) against that of
    `python -c "import torch, pytorch_lightning"` (what any Lightning run pays), alternating
    so machine noise hits both; and, from the run's own record, its wall time outside the
    training batches (start, data, validation and test batches, files, figures)."""
    data = [o for o in overrides if o.startswith(("data", "paths.data_dir"))]
    runs: dict[str, list[float]] = {"one_batch_run": [], "imports": []}
    outside_training = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-fixed-") as tmp:
        run = [sys.executable, str(train_script), *data, *ONE_BATCH]
        _wall([*run, f"paths.log_dir={Path(tmp) / 'warm-up'}"])  # page cache, dataset cache
        for rep in range(reps):
            log_dir = Path(tmp) / f"run{rep}"
            commands = {
                "one_batch_run": [*run, f"paths.log_dir={log_dir}"],
                "imports": [sys.executable, "-c", IMPORTS],
            }
            for name in commands if rep % 2 == 0 else list(commands)[::-1]:
                runs[name].append(_wall(commands[name]))
            record = next(log_dir.glob("train/runs/*/metrics.json"))
            train_s = json.loads(record.read_text())["time"]["train_batches_s"]
            outside_training.append(runs["one_batch_run"][-1] - train_s)
    medians = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "command": " ".join(["python src/train.py", *data, *ONE_BATCH]),
        "wall_s": runs,
        "median_s": medians,
        "ratio": medians["one_batch_run"] / medians["imports"],
        "outside_training_s": statistics.median(outside_training),
    }


def format_sweep_table(result: dict[str, Any]) -> str:
    lines = [
        f"sweep: {OPTIMIZERS} {' '.join(result['overrides'])}",
        f"{'launcher':10} {'wall s per round':>30} {'median s':>9}",
    ]
    for name, values in result["wall_s"].items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"{name:10} {rounds:>30} {result['median_s'][name]:>9.1f}")
    lines.append(f"default / basic (median wall time): {result['ratio']:.3f}")
    if result["one_job_alone_s"] is not None:
        lines.append(f"one job alone: {result['one_job_alone_s']:.1f} s")
    lines.append(
        "largest difference of a job's best val acc, test acc or test loss between the two: "
        f"{result['largest_metric_difference']:.2e}"
    )
    if fixed := result.get("fixed_cost"):
        medians = fixed["median_s"]
        lines += [
            f"fixed cost: `{fixed['command']}`",
            f"{'':10} {'wall s per round':>30} {'median s':>9}",
            *(
                f"{name:14} {', '.join(f'{v:.2f}' for v in values):>26} {medians[name]:>9.2f}"
                for name, values in fixed["wall_s"].items()
            ),
            f'one-batch run / `python -c "{IMPORTS}"`: {fixed["ratio"]:.3f}; the run\'s wall '
            f"time outside its training batches: {fixed['outside_training_s']:.2f} s",
        ]
    return "\n".join(lines)
