"""Config helpers every layer shares: a config as plain values, and which keys only say where
files live."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Config keys (and prefixes) that say where files live, not what was trained: they never tell
# runs apart in a report, and changing them does not change what a resumed run computes.
LOCATION_KEYS = (
    "paths.",
    "hydra.",
    "ckpt_path",
    "data.data_dir",
    "data.download",
    "data.system_dirs",
)


def is_location_key(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in LOCATION_KEYS)


def to_plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as plain Python values, for JSON and checkpoints."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
    return dict(cfg)
