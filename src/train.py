"""Train a CNN: `python src/train.py [group=option ...] [key=value ...]`, `-m` for sweeps."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnnlab.training import run_entry, train

os.environ.setdefault("CNNLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    summary = run_entry(train, cfg)
    # Returned for sweepers that optimise a value (e.g. Optuna): best validation accuracy.
    return summary["best"]["val/acc"]


if __name__ == "__main__":
    main()
