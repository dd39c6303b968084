"""Evaluate a checkpoint on the official test split: `python src/evaluate.py ckpt_path=<file>`."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnnlab.commands import quote_path_overrides
from cnnlab.process_setup import set_up_process
from cnnlab.training.entry import config_syntax_problem, launch_problem, run_entry
from cnnlab.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_entry(evaluate, cfg)


if __name__ == "__main__":
    set_up_process(ROOT)  # before Hydra composes: its folders need our resolvers
    conf = ROOT / "conf"
    # ckpt_path=outputs/.../1_optimizer=adam/checkpoints/last.ckpt works as typed: the job
    # folder's `=` would otherwise break Hydra's override grammar.
    sys.argv = [sys.argv[0], *quote_path_overrides(sys.argv[1:])]
    # A YAML mistake, a value that cannot be resolved, or an outputs folder that cannot be written.
    if problem := config_syntax_problem(conf, sys.argv) or launch_problem(conf, sys.argv, "eval"):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
