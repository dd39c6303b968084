"""Each dataset parsed once: its official train and test splits kept as one tensor file
beside the raw files, read back (memory-mapped) while the files it came from are unchanged.

Parsing is a run's fixed cost: CIFAR-10's pickles are checked against their published md5
(180 MB) and stacked, the IDX files decoded. The cache holds the result as uint8 images and
int64 labels, keyed by the name, size and modification time of every source file. It is data,
never code: read with `torch.load(weights_only=True)` (tensors and plain values only), its
contents checked, and anything unexpected (another key, a crafted or truncated file) is
ignored and the files are parsed again. A folder that cannot be written simply has no cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CACHE_FILE = "cnnlab-splits.pt"
FORMAT = 1
Split = tuple[torch.Tensor, torch.Tensor]


def source_key(folder: Path, names: Sequence[str]) -> list[list[Any]] | None:
    """[name, size, mtime_ns] of each source file; None if one is missing."""
    key = []
    for name in sorted(names):
        try:
            stat = (folder / name).stat()
        except OSError:
            return None
        key.append([name, stat.st_size, stat.st_mtime_ns])
    return key


def _valid(split: Any, sample_shape: Sequence[int], num_classes: int) -> bool:
    if not (isinstance(split, (tuple, list)) and len(split) == 2):
        return False
    images, labels = split
    return (
        isinstance(images, torch.Tensor)
        and isinstance(labels, torch.Tensor)
        and images.dtype == torch.uint8
        and labels.dtype == torch.int64
        and tuple(images.shape[1:]) == tuple(sample_shape)
        and labels.shape == (len(images),)
        and (len(labels) == 0 or (int(labels.min()) >= 0 and int(labels.max()) < num_classes))
    )


def read_cached_splits(
    folder: Path,
    key: list[list[Any]] | None,
    sample_shape: Sequence[int],
    num_classes: int,
    md5_checked: bool,
) -> dict[str, Split] | None:
    """The cached {"train", "test"} splits if the cache matches `key` (and, when `md5_checked`
    is asked for, was written from md5-checked files); None otherwise."""
    path = folder / CACHE_FILE
    if key is None or not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a truncated, crafted or foreign file: parse the files again
        log.debug("%s ignored: %s", path, err)
        return None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("key") != key:
        return None
    if md5_checked and saved.get("md5_checked") is not True:
        return None
    splits = {name: saved.get(name) for name in ("train", "test")}
    if not all(_valid(split, sample_shape, num_classes) for split in splits.values()):
        return None
    return {name: (split[0], split[1]) for name, split in splits.items()}  # type: ignore[index]


def write_cached_splits(
    folder: Path, key: list[list[Any]] | None, splits: dict[str, Split], md5_checked: bool
) -> None:
    """Best effort, whole or not at all (temporary file, then rename)."""
    if key is None:
        return
    path = folder / CACHE_FILE
    tmp = folder / f".{CACHE_FILE}.{os.getpid()}.tmp"
    saved = {"format": FORMAT, "key": key, "md5_checked": md5_checked, **splits}
    try:
        torch.save(saved, tmp)
        tmp.replace(path)
    except OSError as err:
        log.debug("no cache of the parsed splits in %s: %s", folder, err)
        tmp.unlink(missing_ok=True)
