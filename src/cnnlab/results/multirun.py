"""A sweep's `multirun.yaml` read as data: the overrides its command gave, and the jobs it
launches and what each varies. Both the report (missing jobs, named by what they vary) and a
resumed sweep (`cnnlab.scale.sweeps`) read it.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from cnnlab.config import is_location_key
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


def expected_job_labels(sweep_dir: Path) -> list[str] | None:
    """What each job of a basic sweep varies, `optimizer=adam` (`""` when nothing does), job n
    at index n, read from `multirun.yaml` as plain YAML and expanded as Hydra's basic sweeper
    does: the sweeper's params, then the command's overrides, a later value of a key replacing
    an earlier one in its place, the first key varying slowest. None when it cannot be known
    (no file, a search like Optuna's, a value that is not plain)."""
    saved = sweep_dir / MULTIRUN_FILE
    if not saved.is_file():
        return None
    try:
        params = (yaml.safe_load(saved.read_text())["hydra"].get("sweeper") or {}).get("params")
        if not all(isinstance(v, str | int | float | bool) for v in (params or {}).values()):
            return None
        overrides = [
            *(f"{k}={v}" for k, v in (params or {}).items()),
            *saved_overrides(sweep_dir)["task"],
        ]
        values: dict[str, list[str]] = {}
        for override in parse_overrides(overrides):
            key = override.key_or_group
            if not override.is_sweep_override():
                values[key] = []  # one value: it varies nothing
            elif override.is_discrete_sweep():
                values[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                return None  # an interval: a search, not a list of jobs
    except Exception:  # a damaged file: the jobs are unknown
        return None
    swept = [v for v in values.values() if v]
    # Labelled as the job folders are: location keys (paths, folders) tell no job apart.
    return [
        ",".join(part for part in job if not is_location_key(part.split("=", 1)[0]))
        for job in itertools.product(*swept)
    ]
