"""Train a CNN: `python src/train.py [group=option ...] [key=value ...]`, `-m` for sweeps,
`--resume <sweep folder>` to finish a sweep that stopped."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from cnnlab.commands import quote_path_overrides
from cnnlab.errors import CnnlabError
from cnnlab.process_setup import set_up_process
from cnnlab.renamed import renamed_experiment_message, renamed_key_message
from cnnlab.scale.plugins import missing_plugin_message
from cnnlab.scale.sweeps import resume_arguments
from cnnlab.speed.process_exit import exit_if_allowed
from cnnlab.training.entry import config_syntax_problem, launch_problem, run_entry
from cnnlab.training.run import train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    summary = run_entry(train, cfg)
    # For sweepers that optimise a value (e.g. Optuna): the best epoch's value of the monitored
    # metric, or None if the job failed. Not NaN: hydra-optuna-sweeper 1.3.0 with optuna 2.x
    # aborts the whole search on a NaN, while None marks the trial failed and the search goes on.
    value = ((summary or {}).get("best") or {}).get(str(cfg.monitor.metric))
    return None if value is None else float(value)


if __name__ == "__main__":
    set_up_process(ROOT)  # before Hydra composes: its folders need our resolvers
    # `--resume <sweep folder>`: the same sweep again, into its folder (docs/scaling.md).
    if len(sys.argv) == 3 and sys.argv[1] == "--resume":
        try:
            sys.argv = [sys.argv[0], *resume_arguments(Path(sys.argv[2]), CONF)]
        except CnnlabError as err:
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(err.exit_code)
    # A path as typed (a sweep job's `1_optimizer=adam/...` included) is one value for Hydra.
    sys.argv = [sys.argv[0], *quote_path_overrides(sys.argv[1:])]
    if problem := renamed_experiment_message(sys.argv[1:]) or renamed_key_message(sys.argv[1:]):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    if problem := config_syntax_problem(CONF, sys.argv):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    # A launcher or sweeper plugin that is not installed: say which extra brings it.
    if problem := missing_plugin_message(sys.argv[1:]):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    # A value that cannot be resolved, or an outputs folder that cannot be written.
    if problem := launch_problem(CONF, sys.argv):
        print(f"Error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
    exit_if_allowed()  # a completed single run skips the interpreter's teardown
