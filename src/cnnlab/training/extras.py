"""What a run does once as it starts, from its config's `extras` and `tags`: print the config
as a tree, silence Python warnings, and read the run's tags.

Process-wide settings that no config changes live in `cnnlab.process_setup`; these follow the
config, so they are applied where a run (or an evaluation) starts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from cnnlab.console import say
from cnnlab.errors import ConfigError
from cnnlab.results.text import plain
from cnnlab.training.entry import hydra_choices

# Groups that say nothing about the run itself; left out of the tree.
_QUIET_GROUPS = ("hydra",)


def run_tags(cfg: DictConfig) -> list[str]:
    """The run's `tags` as a list of words: null is none, a single word is a list of one."""
    tags = OmegaConf.select(cfg, "tags", default=None)
    if tags is None:
        return []
    if OmegaConf.is_list(tags):
        tags = OmegaConf.to_container(tags, resolve=True)
    elif isinstance(tags, (str, int, float, bool)):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, (str, int, float)) for t in tags):
        raise ConfigError(
            f"tags={OmegaConf.select(cfg, 'tags')!r} is invalid: give a list of words, "
            "e.g. tags=[baseline,keras] (or tags=[] for none)"
        )
    return [str(t) for t in tags]


def _changed_key(override: str) -> str:
    """`trainer.max_epochs=2` -> `trainer.max_epochs`; `+lr_scheduler.step_size=3` too."""
    return override.split("=", 1)[0].lstrip("+~")


def config_tree(
    choices: Mapping[str, Any], overrides: Sequence[str], heading: str = "Config"
) -> str:
    """The config as a short text tree: each group's chosen option with the values the
    command line changed in it beneath, then the other changed values. Plain ASCII and no
    control characters, so any terminal and log shows it as text (lightning-hydra-template
    draws the whole config with rich)."""
    groups = {
        group: option
        for group, option in choices.items()
        if option is not None and group.split("/", 1)[0] not in _QUIET_GROUPS
    }
    chosen = {f"{group}={option}" for group, option in groups.items()}
    changed = [o for o in overrides if o.lstrip("+~") not in chosen]
    under: dict[str, list[str]] = {group: [] for group in groups}
    loose: list[str] = []
    for override in changed:
        key = _changed_key(override)
        group = next((g for g in groups if key.startswith(f"{g}.")), None)
        if group is None:
            loose.append(override)
        else:
            under[group].append(override[override.index(key) + len(group) + 1 :])
    items: list[tuple[str, list[str]]] = [(f"{g}: {o}", under[g]) for g, o in groups.items()]
    items += [(override, []) for override in loose]
    # Values from the command line are shown as text, never run by the terminal.
    items = [(plain(item), [plain(child) for child in children]) for item, children in items]
    lines = [plain(heading)]
    for i, (item, children) in enumerate(items):
        last = i == len(items) - 1
        lines.append(("`-- " if last else "|-- ") + item)
        for j, child in enumerate(children):
            lines.append(
                ("    " if last else "|   ")
                + ("`-- " if j == len(children) - 1 else "|-- ")
                + child
            )
    return "\n".join(lines) + "\n"


def _print_heading(cfg: DictConfig) -> str | None:
    """The tree's heading, or None where this process does not print it: a DDP rank other
    than 0, or a sweep job other than the first (jobs side by side would print N trees
    among each other's lines; the first job's tree, with what the sweep varies, is enough)."""
    if rank_zero_only.rank != 0:
        return None
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if not HydraConfig.initialized():  # a program calling train() itself: its config is its own
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        if int(OmegaConf.select(hydra_cfg, "job.num", default=0) or 0) != 0:
            return None
        job = str(output_dir).rstrip("/").rsplit("/", 1)[-1]
        return f"Config of the sweep's first job, {job} (each job's: <job>/.hydra/config.yaml)"
    return f"Config (all of it: {output_dir}/.hydra/config.yaml)"


def apply_extras(cfg: DictConfig) -> None:
    """`extras.ignore_warnings` and `extras.print_config`, once, as the run starts."""
    extras = OmegaConf.select(cfg, "extras", default=None) or {}
    if extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if not extras.get("print_config"):
        return
    heading = _print_heading(cfg)
    if heading is None:
        return
    known = hydra_choices()  # the defaults list's order is last-first in Hydra's choices
    choices, overrides = dict(reversed(known["choices"].items())), known["overrides"]
    # One write, labelled with the job when jobs run side by side: never interleaved.
    say(config_tree(choices, overrides, heading).rstrip("\n"))
