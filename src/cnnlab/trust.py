"""What may be taken from a file: plain values, never objects.

A checkpoint, a `metrics.json`, a sweep's `multirun.yaml` or a run's `.hydra/` may come from
someone else. Hydra's `instantiate` imports and calls whatever `_target_` names, so a value read
from such a file is never handed to it as it is: a net or a datamodule is rebuilt only from a
`_target_` that the project's own config groups name (`conf/model/`, `conf/data/`, or an
allow-list the user extends in config), with plain keyword values; a sweep's saved overrides are
taken only when they choose options of the project's config groups or set plain values
(docs/robustness.md, "Files are data").

Torch-free: `src/train.py --resume` checks a sweep folder before anything heavy is imported.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    Glob,
    IntervalSweep,
    Override,
    OverrideType,
    Sweep,
)

from cnnlab.errors import ConfigError

PLAIN = (str, int, float, bool, type(None))
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")


def project_conf_dirs() -> list[Path]:
    """The config folders this run composed from (Hydra's file sources), else the project's."""
    if HydraConfig.initialized():
        sources = HydraConfig.get().runtime.config_sources
        found = [Path(s.path) for s in sources if s.schema == "file" and Path(s.path).is_dir()]
        if found:
            return found
    root = os.environ.get("CNNLAB_ROOT")
    conf = Path(root) / "conf" if root else Path(__file__).resolve().parents[2] / "conf"
    return [conf]


def trusted_targets(group: str, key: str = "_target_", extra: Iterable[str] = ()) -> set[str]:
    """Every `key` (a dotted path, e.g. `net._target_`) the options of config `group` name.

    The config folders are the project's code; what they name may be built.
    """
    targets = {str(t) for t in extra}
    for conf in project_conf_dirs():
        for path in sorted((conf / group).glob("*.yaml")):
            node: Any = yaml.safe_load(path.read_text()) or {}
            for part in key.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, str):
                targets.add(node)
    return targets


def _is_plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return isinstance(value, PLAIN)


def plain_config(value: Any, where: str, allowed: set[str], fix: str) -> dict[str, Any]:
    """`value` as a config that may be built: a mapping whose `_target_` is in `allowed` and
    whose other entries are plain values or lists of them, under plain keys.

    Anything else (a nested object, `_args_`, `_partial_`, a target the project does not
    name) is refused with one line naming `where` and the key.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} is not a config mapping ({type(value).__name__}); {fix}")
    target = value.get("_target_")
    if not isinstance(target, str) or target not in allowed:
        raise ConfigError(
            f"{where}._target_={target!r} is not one of the project's configs, so it is not "
            f"built (files are data, never code); {fix}"
        )
    clean: dict[str, Any] = {"_target_": target}
    for key, item in value.items():
        if key == "_target_":
            continue
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ConfigError(f"{where}: key {key!r} is refused (only plain names); {fix}")
        if not _is_plain(item):
            raise ConfigError(
                f"{where}.{key} holds {type(item).__name__}, not a plain value, so it is not "
                f"built; {fix}"
            )
        clean[key] = list(item) if isinstance(item, tuple) else item
    return clean


# -- a sweep's saved overrides -------------------------------------------------------------------

# Folders a sweep may name: where data is read from, and where outputs go (the resumed sweep's
# own folder is set by the resume itself).
_LOCATION_KEYS_ALLOWED = {
    "paths.data_dir",
    "paths.log_dir",
    "paths.root_dir",
    "data.data_dir",
    "data.system_dirs",
    "ckpt_path",
}
_LOCATION_WORDS = ("dir", "dirpath", "path", "file", "filename", "root")


def _values(override: Override) -> list[Any]:
    value = override.value()
    if isinstance(value, Sweep):
        if isinstance(value, Glob):
            return []  # a glob only selects among the group's existing options
        if isinstance(value, IntervalSweep):
            return [value.start, value.end]
        return list(override.sweep_iterator())
    return [value]


def _plain_value(value: Any) -> bool:
    if isinstance(value, str):
        return "${" not in value
    if isinstance(value, list | tuple):
        return all(_plain_value(v) for v in value)
    return isinstance(value, PLAIN)


def override_problem(
    text: str, group_options: Callable[[str], list[str] | None], hydra: bool = False
) -> str | None:
    """Why the saved override `text` is not taken from a file, or None when it is.

    Taken: a choice among a config group's options (`optimizer=adam,sgd`, `hydra/launcher=basic`),
    and plain values under plain keys (`trainer.max_epochs=3`, `seed=1,2`). Not taken: keys
    beginning with `_` (`_target_`, `_args_`), mappings, interpolations, folders to write to,
    and Hydra's own settings beyond the launcher's and sweeper's numbers.
    """
    try:
        override = OverridesParser.create().parse_override(text)
    except Exception as err:
        return f"it does not parse ({type(err).__name__})"
    key = override.key_or_group
    options = group_options(key) if "." not in key else None
    if options is not None:
        if override.type == OverrideType.DEL:
            return None
        missing = [str(v) for v in _values(override) if str(v) not in options]
        return f"{key} has no option {', '.join(missing)}" if missing else None
    parts = key.split(".")
    if not all(_KEY.fullmatch(p) for p in parts):
        return "only plain keys are taken (no _target_, _args_ or other special keys)"
    if override.type == OverrideType.DEL:
        return None
    values = _values(override)
    if not all(_plain_value(v) for v in values):
        return "only plain values are taken (no mappings or interpolations)"
    if parts[0] == "hydra":
        if key.startswith("hydra.sweeper.params.") and hydra:
            return None
        numbers = all(isinstance(v, int | float | bool) for v in values)
        if key.startswith(("hydra.launcher.", "hydra.sweeper.")) and numbers and hydra:
            return None
        return "of Hydra's settings, only the launcher's and sweeper's numbers are taken"
    if key not in _LOCATION_KEYS_ALLOWED and parts[-1].endswith(_LOCATION_WORDS):
        return "it names a file or folder to write to"
    return None
