"""Train a CNN: `python src/train.py [group=option ...] [key=value ...]`, `-m` for sweeps."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnnlab.scale.plugins import missing_plugin_message
from cnnlab.training.entry import run_entry
from cnnlab.training.run import train

os.environ.setdefault("CNNLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    summary = run_entry(train, cfg)
    # For sweepers that optimise a value (e.g. Optuna): the best validation accuracy, or None
    # if the job failed. Not NaN: hydra-optuna-sweeper 1.3.0 with optuna 2.x aborts the whole
    # search on a NaN, while None marks the trial failed and the search goes on.
    if summary is None or summary["best"]["val/acc"] is None:
        return None
    return float(summary["best"]["val/acc"])


if __name__ == "__main__":
    # A launcher or sweeper plugin that is not installed: say which extra brings it.
    if problem := missing_plugin_message(sys.argv[1:]):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
