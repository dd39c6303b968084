"""Evaluate a checkpoint on the official test split: `python src/evaluate.py ckpt_path=<file>`."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnnlab.training.entry import config_syntax_problem, launch_problem, run_entry
from cnnlab.training.evaluate import evaluate

os.environ.setdefault("CNNLAB_ROOT", str(Path(__file__).resolve().parents[1]))


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    conf = Path(__file__).resolve().parents[1] / "conf"
    # A YAML mistake, a value that cannot be resolved, or an outputs folder that cannot be written.
    if problem := config_syntax_problem(conf, sys.argv) or launch_problem(conf, sys.argv, "eval"):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
