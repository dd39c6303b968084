"""Evaluate a checkpoint on the official test split: `python src/evaluate.py ckpt_path=<file>`."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnnlab.training.entry import config_syntax_problem, run_entry
from cnnlab.training.evaluate import evaluate

os.environ.setdefault("CNNLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    if problem := config_syntax_problem(Path(__file__).resolve().parents[1] / "conf", sys.argv):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
