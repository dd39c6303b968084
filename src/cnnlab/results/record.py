"""A run's machine-readable record, `metrics.json`, and the facts every reader of runs shares.

Statuses: running, completed, failed, diverged, interrupted. Torch-free, like all of
`cnnlab.results`: the sweep report reads records without importing any of the training code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.json"
COMPLETED = "completed"

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


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write: a reader (the sweep report) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves the old record, nothing else
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def job_order(folder: Path) -> tuple[int, str]:
    """Sort key of a sweep's job folders (`<n>_<overrides>`): by job number, then name."""
    head = folder.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, folder.name)
