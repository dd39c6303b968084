"""A sweep's `multirun.yaml` read as data: the overrides its command gave, and how many jobs
it launches. Both the report (missing jobs) and a resumed sweep (`cnnlab.scale.sweeps`) read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from cnnlab.errors import CnnlabError
from cnnlab.file_names import MULTIRUN_FILE


def parse_overrides(overrides: list[str]) -> list[Any]:
    """Hydra's own reading of command-line overrides (sweeps, ranges, quoting)."""
    return OverridesParser.create().parse_overrides(overrides=list(overrides))


def saved_overrides(sweep_dir: Path) -> dict[str, list[str]]:
    """The command-line overrides a sweep saved in its `multirun.yaml` (`task` and `hydra`),
    read as plain YAML: lists of strings, nothing resolved or built."""
    saved = sweep_dir / MULTIRUN_FILE
    try:
        overrides = (yaml.safe_load(saved.read_text()) or {})["hydra"]["overrides"]
        lists = {name: overrides.get(name) or [] for name in ("task", "hydra")}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise CnnlabError(
            f"{saved} cannot be read as a sweep's {MULTIRUN_FILE} ({type(err).__name__}): "
            "give the folder that the sweep printed, with its own file"
        ) from err
    for name, items in lists.items():
        if not isinstance(items, list) or not all(isinstance(o, str) for o in items):
            raise CnnlabError(f"{saved}: hydra.overrides.{name} is not a list of overrides")
    return lists


def expected_jobs(sweep_dir: Path) -> int | None:
    """How many jobs a basic sweep launches, from its `multirun.yaml` (the product of its sweep
    overrides' lengths); None when that cannot be known (no file, or a search like Optuna's)."""
    saved = sweep_dir / MULTIRUN_FILE
    if not saved.is_file():
        return None
    try:
        params = (yaml.safe_load(saved.read_text())["hydra"].get("sweeper") or {}).get("params")
        overrides = [
            *saved_overrides(sweep_dir)["task"],
            *(f"{k}={v}" for k, v in (params or {}).items()),
        ]
        count = 1
        for override in parse_overrides(overrides):
            if override.is_sweep_override():
                count *= len(list(override.sweep_string_iterator()))
    except Exception:  # an interval or a damaged file: the count is unknown
        return None
    return count
