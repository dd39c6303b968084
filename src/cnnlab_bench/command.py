"""The command line of `python src/bench.py` (make bench, bench-sweep, bench-keras): cnnlab's
pipeline against a bare PyTorch loop, the timed sweep, or the assignment's Keras."""

import argparse
import json
import logging
import shlex
import sys
import warnings
from datetime import datetime
from pathlib import Path

import torch
from hydra import initialize_config_dir

from cnnlab_bench.keras_comparison import (
    format_keras_table,
    run_keras_benchmark,
    write_keras_markdown,
)
from cnnlab_bench.rows import DEFAULT_ROWS, Row, Settings
from cnnlab_bench.runner import machine, run_benchmark
from cnnlab_bench.sweep import format_sweep_table, run_sweep_benchmark
from cnnlab_bench.tables import format_table, write_markdown

ROOT = Path(__file__).resolve().parents[2]  # the project: conf/, src/train.py, docs/


def _write_json(result: dict, out: Path | None, kind: str) -> None:
    """The result under outputs/bench/ (or `out`), named by its kind and time."""
    stamp = f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out = out or ROOT / "outputs" / "bench" / f"{kind}-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {out}")


def _quiet_libraries() -> None:
    """Only the benchmark's own tables on the terminal, not each run's log lines."""
    for name in ("pytorch_lightning", "lightning_fabric", "cnnlab"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark cnnlab's pipeline against a bare PyTorch loop."
    )
    parser.add_argument("--precision", default="32-true", help="trainer.precision, e.g. bf16-mixed")
    parser.add_argument(
        "--channels-last",
        nargs="?",
        const="true",
        default="auto",
        choices=("auto", "true", "false"),
        help="channels_last for every contender (alone: true; default: auto, as a run)",
    )
    parser.add_argument("--optimizer", default="adadelta", help="an option of conf/optimizer/")
    parser.add_argument("--reps", type=int, default=5, help="measured epochs per contender")
    parser.add_argument(
        "--rows",
        default="all",
        help="comma list of net:data:batch[:steps], e.g. net_1:mnist:32:300",
    )
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument(
        "--accuracy-check",
        action="store_true",
        help="also train one full Fashion-MNIST epoch in fp32 and in --precision",
    )
    parser.add_argument(
        "--accuracy-seeds",
        type=int,
        default=Settings.accuracy_seeds,
        help="seeds of the accuracy check (paired differences; 8 by default)",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        help="N busy processes beside the benchmark while it measures (a machine not idle)",
    )
    parser.add_argument("--tiny", action="store_true", help="a few steps: checks the machinery")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="time the three-optimizer sweep, default launcher against hydra/launcher=basic",
    )
    parser.add_argument(
        "--sweep-overrides",
        default="data=fashion_mnist trainer.max_epochs=2 trainer.limit_train_batches=100",
        help="what each job of the timed sweep trains (space-separated overrides)",
    )
    parser.add_argument(
        "--keras",
        type=Path,
        default=None,
        metavar="PYTHON",
        help="compare with the assignment's Keras net_1, run by this Python (make bench-keras)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: outputs/bench/)"
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="folder of the Markdown tables (default: docs/benchmarks/; none with --tiny)",
    )
    args = parser.parse_args()
    if args.keras:
        settings = Settings(optimizer=args.optimizer, reps=args.reps, load=args.load)
        _quiet_libraries()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            result = run_keras_benchmark(args.keras, settings)
        result["machine"] = machine()
        cpu = f"{result['machine']['cpu']} ({', '.join(result['machine']['cpu_flags'])})"
        print(format_keras_table(result, cpu))
        _write_json(result, args.out, "keras")
        command = shlex.join(["python", "src/bench.py", *sys.argv[1:]])
        when = f"{datetime.now():%Y-%m-%d %H:%M}"
        page = write_keras_markdown(
            result, args.docs or ROOT / "docs" / "benchmarks", command, when
        )
        print(f"Markdown: {page}")
        return
    if args.sweep:
        result = run_sweep_benchmark(
            ROOT / "src" / "train.py",
            args.sweep_overrides.split(),
            rounds=max(args.reps, 1),
            single_job=torch.cuda.is_available(),
        )
        print(format_sweep_table(result))
        _write_json(result, args.out, "sweep")
        return

    rows = DEFAULT_ROWS
    if args.rows != "all":
        rows = tuple(
            Row(p[0], p[1], int(p[2]), int(p[3]) if len(p) > 3 else 100)
            for p in (spec.split(":") for spec in args.rows.split(","))
        )
    started = datetime.now()
    out = (
        args.out
        or ROOT / "outputs" / "bench" / f"bench-{started:%Y-%m-%d_%H-%M-%S}-{args.precision}.json"
    )
    settings = Settings(
        precision=args.precision,
        channels_last={"auto": "auto", "true": True, "false": False}[args.channels_last],
        optimizer=args.optimizer,
        reps=args.reps,
        accelerator=args.accelerator,
        tiny=args.tiny,
        accuracy_check=args.accuracy_check,
        accuracy_seeds=args.accuracy_seeds,
        load=args.load,
    )
    _quiet_libraries()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        report = run_benchmark(rows, settings, out)
    print(format_table(report))
    print(f"JSON: {out}")
    docs = args.docs or (None if args.tiny else ROOT / "docs" / "benchmarks")
    if docs is not None:
        command = shlex.join(["python", "src/bench.py", *sys.argv[1:]])
        page = write_markdown(report, docs, command, f"{started:%Y-%m-%d %H:%M}")
        print(f"Markdown: {page}")


if __name__ == "__main__":
    main()
