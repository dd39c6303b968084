"""Dataset files on disk: the preparation lock, unpacking local copies, reading pickles safely."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchvision.datasets.utils import extract_archive

from cnnlab.errors import DatasetCorruptError


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Serialise preparation of one data folder across processes (parallel sweep jobs)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".cnnlab.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unpack_gzip(dataset: str, packed: Path, target: Path) -> None:
    """`packed` (.gz) unpacked to `target` through a temporary name: readers never see half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (OSError, EOFError) as err:
        tmp.unlink(missing_ok=True)
        raise DatasetCorruptError(
            f"{dataset}: {packed} is not a readable gzip file ({err}). "
            "Replace it with a fresh copy."
        ) from err
    tmp.replace(target)


def unpack_archive(dataset: str, archive: Path, into: Path) -> None:
    """A .tar.gz archive unpacked into `into` (torchvision's extractor)."""
    try:
        extract_archive(str(archive), str(into))
    except Exception as err:
        raise DatasetCorruptError(
            f"{dataset}: {archive} is not a readable tar.gz archive ({err}). "
            "Replace it with a fresh copy."
        ) from err


# What a dataset pickle may contain: numpy arrays and plain values. Anything else could run
# code while it is loaded, so it is refused before it is built.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }
)


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it refers to {module}.{name}; a dataset pickle may hold only numpy arrays and "
            "plain values (loading anything else could run code)"
        )


def read_pickle(path: Path) -> Any:
    """A dataset pickle (CIFAR-10's batches) read with numpy arrays and plain values only."""
    with open(path, "rb") as handle:
        return _ArraysOnly(handle, encoding="latin1").load()
