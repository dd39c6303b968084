"""The assignment's whole study: `python src/study.py [override ...] [--parts ...] [--out FOLDER]`.

Three sweeps (net_1 and net_2 on MNIST with the assignment's optimizers, net_1 on CIFAR-10, models
A-F), then `assignment_report.md`. Overrides apply to every part, except `data=...`, which applies
to the MNIST parts (e.g. `data=fashion_mnist`); the datasets are checked before any training.
"""

import argparse
import sys
from datetime import datetime
from pathlib import Path

import hydra

from cnnlab.errors import CnnlabError, DatasetNotFoundError
from cnnlab.process_setup import set_up_process
from cnnlab.study import (
    chosen,
    data_choice,
    fashion_mnist_at_hand,
    missing_datasets,
    refusal,
    run_study,
)

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    set_up_process(ROOT)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=2")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: outputs/assignment/<time>/"
    )
    parser.add_argument(
        "--parts", default=None, help="comma list of parts to run: mnist,cifar10,models (all)"
    )
    args = parser.parse_args()
    try:
        plans = chosen(args.parts.split(",") if args.parts else None)
    except CnnlabError as err:
        print(f"Error: {err}", file=sys.stderr)
        return err.exit_code
    with hydra.initialize(config_path="../conf", version_base="1.3"):
        missing = missing_datasets(args.overrides, plans)
        # MNIST missing and no dataset chosen: Fashion-MNIST on disk can stand in for it.
        stand_in = data_choice(args.overrides) is None and "MNIST" in dict(missing.values())
        fashion = stand_in and fashion_mnist_at_hand(args.overrides)
    if missing:
        extra = ["--out", str(args.out)] if args.out else []
        message = refusal(missing, plans, args.overrides, extra, fashion)
        print(f"Error: {message}", file=sys.stderr)
        return DatasetNotFoundError.exit_code
    folder = args.out or ROOT / "outputs" / "assignment" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}"
    report, failed = run_study(ROOT / "src" / "train.py", folder, args.overrides, plans)
    print(f"Study report: {report}")
    if failed:
        print(f"Error: these parts did not end cleanly: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
