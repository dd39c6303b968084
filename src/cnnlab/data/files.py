"""Dataset files on disk: the preparation lock, unpacking local copies, reading pickles safely."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gzip
import os
import pickle
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnlab.errors import DatasetCorruptError, DatasetNotFoundError


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
    """`packed` (.gz) unpacked to `target` through a temporary name: readers never see half,
    and the temporary file is removed however unpacking ends (Ctrl-C included)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
            while chunk := _read_packed(dataset, packed, src):
                dst.write(chunk)
        tmp.replace(target)
    except OSError as err:
        if err.filename is not None and Path(err.filename) == packed:  # reading it
            raise DatasetCorruptError(
                f"{dataset}: {packed} cannot be read ({err.strerror or err}). "
                "Replace it with a fresh copy."
            ) from err
        raise _unpack_write_error(dataset, packed, target, err) from err  # a full disk, ...
    finally:
        tmp.unlink(missing_ok=True)


def link_or_copy(dataset: str, source: Path, target: Path) -> None:
    """`source` made available as `target`: a hard link (no space used, the user's file
    stays as it is), or a copy where links are not possible; through a temporary name, so
    readers never see half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, tmp)
        tmp.replace(target)
    except OSError as err:
        raise _unpack_write_error(dataset, source, target, err) from err
    finally:
        tmp.unlink(missing_ok=True)


def _read_packed(dataset: str, packed: Path, src: gzip.GzipFile) -> bytes:
    """The next chunk of a gzip file; a broken one becomes one message naming it."""
    try:
        return src.read(1 << 20)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetCorruptError(
            f"{dataset}: {packed} is not a readable gzip file ({err}). "
            "Replace it with a fresh copy."
        ) from err


def _unpack_write_error(
    dataset: str, packed: Path, target: Path, err: OSError
) -> DatasetNotFoundError:
    """Unpacking could not write `target`: say where and what to do (never a traceback)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space there, or point data.data_dir at another disk"
    elif err.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        fix = f"move away whatever is in the way at {target} (a folder where a file belongs)"
    else:
        fix = "make that folder writable, or point data.data_dir at a writable folder"
    verb = "unpack" if packed.suffix in (".gz", ".tgz") else "link or copy"
    return DatasetNotFoundError(
        f"{dataset}: could not {verb} {packed} into {target} ({err.strerror or err}). Fix: {fix}."
    )


def unpack_archive(dataset: str, archive: Path, into: Path) -> None:
    """A .tar.gz archive unpacked into `into` through a temporary folder beside it: each file
    is renamed into place whole, files already there are kept, and the temporary folder is
    removed however unpacking ends (Ctrl-C included)."""
    tmp = into / f".{archive.name}.{os.getpid()}.tmp"
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):  # no paths outside `tmp`, no devices
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.10.12
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, zlib.error) as err:
            raise DatasetCorruptError(
                f"{dataset}: {archive} is not a readable tar.gz archive ({err}). "
                "Replace it with a fresh copy."
            ) from err
        except OSError as err:
            if err.filename is None or not str(err.filename).startswith(str(tmp)):
                raise DatasetCorruptError(
                    f"{dataset}: {archive} is not a readable tar.gz archive ({err}). "
                    "Replace it with a fresh copy."
                ) from err
            raise _unpack_write_error(dataset, archive, into, err) from err
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = into / path.relative_to(tmp)
            if target.exists():
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            except OSError as err:
                raise _unpack_write_error(dataset, archive, target, err) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
