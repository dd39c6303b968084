"""The GPU path on a real GPU, in one call: `python src/gpu_check.py` (= make gpu-check).

1. the tests marked `gpu` (data on the GPU, no host-to-device copy per step, bf16-mixed,
   channels_last and compile, determinism, a GPU checkpoint evaluated on the CPU);
2. the benchmark rows on `cuda`, fp32 and bf16-mixed + channels_last;
3. the three-optimizer sweep on real Fashion-MNIST, 3 epochs: one job alone, the three in
   sequence and side by side on the one GPU, with the GPU's utilisation from nvidia-smi;
4. one JSON file and one table. Without CUDA it refuses in one line.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "optimizer=adadelta,adam,adagrad"]


def _utilisation(samples: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        read = subprocess.run(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
        )
        if read.returncode == 0 and read.stdout.strip():
            samples.append(float(read.stdout.split()[0]))
        stop.wait(0.5)


def _timed(command: list[str]) -> dict[str, float]:
    """Wall seconds of one command and the GPU's mean and peak utilisation meanwhile."""
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_utilisation, args=(samples, stop), daemon=True)
    sampler.start()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    mean = statistics.mean(samples) if samples else float("nan")
    return {"wall_s": seconds, "gpu_util_mean": mean, "gpu_util_max": max(samples, default=0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fashion-mnist", type=Path, required=False, help="folder of its .gz files"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON file")
    parser.add_argument("--reps", type=int, default=3, help="benchmark runs per contender")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("Error: make gpu-check needs a CUDA GPU, and torch sees none here.", file=sys.stderr)
        return 2
    report: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    report["gpu_tests"] = {"exit_code": tests.returncode, "summary": tests.stdout.splitlines()[-1:]}

    import hydra

    from cnnlab.bench.rows import DEFAULT_ROWS, Settings
    from cnnlab.bench.runner import run_benchmark

    rows = []
    with hydra.initialize(config_path="../conf", version_base="1.3"):
        for precision, channels_last in (("32-true", False), ("bf16-mixed", True)):
            settings = Settings(precision, channels_last, reps=args.reps, accelerator="cuda")
            rows += run_benchmark(DEFAULT_ROWS, settings)["rows"]
    report["bench"] = rows

    if args.fashion_mnist:
        with tempfile.TemporaryDirectory() as tmp:
            common = [
                "data=fashion_mnist",
                f"data.system_dirs=[{args.fashion_mnist.resolve()}]",
                f"paths.data_dir={tmp}/data",
                "trainer.max_epochs=3",
                "callbacks.progress_bar.enabled=false",
            ]
            train = [sys.executable, "src/train.py"]
            runs = {
                "one_job_alone": ["optimizer=adam"],
                "sequential": [*SWEEP, "hydra/launcher=basic"],
                "side_by_side": [*SWEEP, "hydra.launcher.jobs_per_gpu=3"],
            }
            report["sweep"] = {
                name: _timed([*train, *extra, *common, f"paths.log_dir={tmp}/{name}"])
                for name, extra in runs.items()
            }

    out = args.out or ROOT / "outputs" / "gpu-check" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "gpu-check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"GPU: {report['gpu']}, torch {report['torch']}")
    print(f"gpu tests: exit {tests.returncode} {' '.join(report['gpu_tests']['summary'])}")
    print(f"{'row':30} {'pipeline':>9} {'bare':>9} {'min.PL':>9} {'ratio':>6} {'ms/step':>12}")
    for r in rows:
        t = r["train_images_per_s"]
        name = f"{r['net']} {r['data']} b{r['batch_size']} {r['precision']}"
        name += "+cl" if r["channels_last"] else ""
        ms = [1000 * r["batch_size"] / t[k] for k in ("pipeline", "bare")]  # mean per step
        print(
            f"{name:30} {t['pipeline']:>9.0f} {t['bare']:>9.0f} {t['minimal_lightning']:>9.0f} "
            f"{t['ratio']:>6.3f} {ms[0]:>5.2f}/{ms[1]:<5.2f}"
        )
    for name, run in report.get("sweep", {}).items():
        print(
            f"sweep {name:14} {run['wall_s']:>7.1f} s  GPU utilisation mean "
            f"{run['gpu_util_mean']:.0f}%, max {run['gpu_util_max']:.0f}%"
        )
    print(f"JSON: {out}")
    return 0 if tests.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
