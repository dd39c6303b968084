"""Config keys that name nothing, said in one line with the closest valid names.

Two ways in: `+trainer.max_epoch=2` adds a key Hydra accepts but the Trainer does not know
(`check_known_arguments`, before anything is built, instead of "unexpected keyword argument");
`trainer.max_epoch=2` and `optimizer=adamm` are refused by Hydra itself while composing, and
`composition_problem` turns its message into one line with the names meant.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import ConfigError, closest_names, did_you_mean
from cnnlab.models.optimizers import FLAGS

# The groups whose keys become the keyword arguments of their `_target_`; each callback and
# logger too. Keys Hydra reads (`_target_`, `_partial_`, ...) and cnnlab's own are not arguments.
ARGUMENT_GROUPS = ("trainer", "data", "optimizer", "lr_scheduler")
_OWN_KEYS = {
    "optimizer": set(FLAGS),  # settled when it is built (cnnlab.models.optimizers)
    "callbacks": {"enabled"},  # read by instantiate_callbacks
}


def target_arguments(node: Any) -> list[str] | None:
    """The keyword arguments `node._target_` takes; None when unknown or open (`**kwargs`)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return None
    try:
        params = inspect.signature(get_object(str(node._target_))).parameters
    except Exception:  # not importable or no signature: instantiate says so itself
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]


def _argument_nodes(cfg: DictConfig) -> list[tuple[str, Any]]:
    nodes = [(group, OmegaConf.select(cfg, group, default=None)) for group in ARGUMENT_GROUPS]
    for group in ("callbacks", "logger"):
        section = OmegaConf.select(cfg, group, default=None)
        if isinstance(section, DictConfig):
            nodes += [(f"{group}.{name}", section[name]) for name in section]
    return nodes


def check_known_arguments(cfg: DictConfig) -> None:
    """Every key of a group that builds an object names one of its arguments."""
    for path, node in _argument_nodes(cfg):
        arguments = target_arguments(node)
        if arguments is None:
            continue
        own = _OWN_KEYS.get(path.split(".", 1)[0], set())
        for key in node:
            key = str(key)
            if (key.startswith("_") and key.endswith("_")) or key in own:
                continue
            if key not in arguments:
                what = str(node._target_).rsplit(".", 1)[-1]
                raise ConfigError(
                    f"{path}.{key} is not an argument of {what}" + _meant(path, key, arguments)
                )


def _meant(path: str, name: str, valid: Sequence[str]) -> str:
    """`: did you mean path.a or path.b?`, or the valid names when none is close."""
    close = closest_names(name, valid)
    if close:
        return f": did you mean {' or '.join(f'{path}.{c}' for c in close)}?"
    return f" (its arguments: {', '.join(valid)})"


def composition_problem(
    error: Exception, overrides: Sequence[str], compose: Callable[[list[str]], DictConfig]
) -> str | None:
    """Hydra's refusal of an override, as one line with the names meant; None when it is
    about something else (Hydra's own message then stands)."""
    text = str(error)
    if found := re.search(r"Could not override '([^']+)'", text):
        return _unknown_key(found[1], overrides, compose)
    if found := re.search(r"Could not find '([^']+)/([^'/]+)'", text):
        group, option = found[1], found[2]
        options = re.findall(r"^\t(\S+)$", text.split("Available options", 1)[-1], re.M)
        if options and "Available options" in text:
            meant = did_you_mean(option, options)
            listed = f" (its options: {', '.join(options)})"
            return f"{group}={option}: {group} has no option {option}{meant}{listed}"
    return None


def _unknown_key(
    key: str, overrides: Sequence[str], compose: Callable[..., DictConfig]
) -> str | None:
    typed = next((o for o in overrides if o.split("=", 1)[0] == key), None)
    if typed is None:
        return None
    others = [o for o in overrides if o is not typed]
    try:
        cfg = compose(others)
    except Exception:
        return None
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return None
    prefix = f"{parent_key}." if parent_key else ""
    keys = [str(k) for k in parent if not str(k).startswith("_")]
    arguments = target_arguments(parent) or []
    value = typed.split("=", 1)[1]
    if name in arguments:  # a valid argument the config does not list yet
        return f"{key} is not in the config yet: add it with +{key}={value}"
    close = closest_names(name, [*keys, *arguments])
    if close:
        meant = " or ".join(
            f"{prefix}{c}" if c in keys else f"+{prefix}{c} (not in the config yet)" for c in close
        )
        return f"{key} is not a config key: did you mean {meant}?"
    where = f"{parent_key}'s keys" if parent_key else "the config's top-level keys"
    return (
        f"{key} is not a config key ({where}: {', '.join(keys)}); a key of your own is added "
        f"with +{key}={value}"
    )
