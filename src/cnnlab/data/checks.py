"""Find out what is wrong with dataset files, so a user is told which file, and never trains on it.

* IDX files (MNIST, Fashion-MNIST) are checked against their own header before parsing:
  a truncated or padded file, a wrong type or rank, or a gzip file without `.gz` is named.
* CIFAR-10 pickles are checked one by one when parsing them failed, to name the bad one
  (read with `read_pickle`, which refuses anything but arrays and plain values).
* Files with a published md5 (CIFAR-10's batches) are compared with it before parsing,
  unless `data.verify_md5=false` says they are your own.
* When expected files are missing, nearby folders are searched: files one folder too deep,
  `.gz` files beside the `raw/` folder, or `data_dir` pointing inside the layout are reported
  as a wrong layout, with the fix.
* Files whose names are close to an expected one (`train-images.idx3-ubyte.bin`) are named
  with the rename that makes them usable, instead of a download that would not be needed.
"""

from __future__ import annotations

import difflib
import math
import os
import struct
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from torchvision.datasets.utils import calculate_md5

from cnnlab.data.files import read_pickle
from cnnlab.errors import DatasetCorruptError

# IDX type codes and their item sizes in bytes (the format of yann.lecun.com's MNIST files).
_IDX_ITEM_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}
_GZIP_MAGIC = b"\x1f\x8b"
_NEAR = 0.85  # difflib's ratio above which two file names are one name misspelt
_FRESH_COPY = "Delete it and fetch a fresh copy (docs/data.md)."


def _corrupt(dataset: str, path: Path, problem: str) -> DatasetCorruptError:
    return DatasetCorruptError(f"{dataset}: {path} {problem}. {_FRESH_COPY}")


def check_idx_file(dataset: str, path: Path, ndim: int, item_shape: Sequence[int] = ()) -> int:
    """Check one IDX file's header against its size; returns the number of items it holds."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(4 + 4 * ndim)
    if head[:2] == _GZIP_MAGIC:
        raise DatasetCorruptError(
            f"{dataset}: {path} is gzip-compressed: rename it to {path.name}.gz (cnnlab unpacks "
            "it) or unpack it with gunzip."
        )
    if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in _IDX_ITEM_BYTES:
        raise _corrupt(dataset, path, f"is not an IDX file (it starts with bytes {head[:4].hex()})")
    if head[3] != ndim:
        raise _corrupt(dataset, path, f"holds a {head[3]}-dimensional array, expected {ndim}")
    if len(head) < 4 + 4 * ndim:
        raise _corrupt(dataset, path, f"is truncated: {size} bytes, not even a whole header")
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = 4 + 4 * ndim + math.prod(dims) * _IDX_ITEM_BYTES[head[2]]
    shape = "x".join(str(d) for d in dims)
    if size < expected:
        raise _corrupt(
            dataset,
            path,
            f"is truncated: its header promises a {shape} array ({expected} bytes with the "
            f"header) but the file has only {size} bytes",
        )
    if size > expected:
        raise _corrupt(
            dataset, path, f"has {size - expected} bytes more than its header promises ({shape})"
        )
    if item_shape and tuple(dims[1:]) != tuple(item_shape):
        wanted = "x".join(str(d) for d in item_shape)
        got = "x".join(str(d) for d in dims[1:])
        raise _corrupt(dataset, path, f"holds items of {got}, expected {wanted}")
    return dims[0]


def check_idx_split(dataset: str, images: Path, labels: Path, image_shape: Sequence[int]) -> None:
    """An images file and its labels file are each sound and hold the same number of items."""
    count = check_idx_file(dataset, images, 3, image_shape)
    label_count = check_idx_file(dataset, labels, 1)
    if count != label_count:
        raise DatasetCorruptError(
            f"{dataset}: {images} holds {count} images but {labels} holds {label_count} labels; "
            f"one of them is from another copy of the dataset. {_FRESH_COPY}"
        )


def check_published_md5(dataset: str, folder: Path, published: Mapping[str, str]) -> None:
    """Refuse a file whose md5 differs from the one its publisher gives for that name."""
    for name, expected in published.items():
        path = folder / name
        if path.is_file() and (found := calculate_md5(path)) != expected:
            raise DatasetCorruptError(
                f"{dataset}: {path} is not the official file (md5 {found}, published "
                f"{expected}). Fix: delete {folder} and fetch the official files (docs/data.md), "
                "or, if these are your own files, set data.verify_md5=false."
            )


def find_bad_cifar_file(dataset: str, folder: Path, names: Iterable[str]) -> str | None:
    """Which CIFAR-10 pickle is unreadable or malformed, and why (None if all look sound)."""
    for name in names:
        path = folder / name
        try:
            content = read_pickle(path)
        except Exception as err:
            return f"{path} cannot be unpickled ({type(err).__name__}: {err})"
        if name == "batches.meta":
            if not isinstance(content, dict) or "label_names" not in content:
                return f"{path} has no 'label_names'"
            continue
        if not isinstance(content, dict) or "data" not in content or "labels" not in content:
            return f"{path} is not a CIFAR-10 batch (no 'data' and 'labels')"
        data, labels = content["data"], content["labels"]
        rows = getattr(data, "shape", (0, 0))
        if len(rows) != 2 or rows[1] != 3 * 32 * 32 or rows[0] != len(labels):
            return f"{path} holds data of shape {rows} and {len(labels)} labels; expected N x 3072"
    return None


def idx_spellings(name: str) -> list[str]:
    """The names an IDX file is shipped under: torchvision's `train-images-idx3-ubyte`, the
    original site's `train-images.idx3-ubyte` (a dot before `idx`), each also as `.gz`."""
    dotted = name.replace("-idx", ".idx", 1)
    names = [name, dotted] if dotted != name else [name]
    return [f"{n}{suffix}" for n in names for suffix in ("", ".gz")]


def near_misses(
    folder: Path, missing: Sequence[str], ignore: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """(found, expected) pairs: files in `folder` whose names look like a missing file's
    (`train-images-idx3-ubyte.bin` for `train-images-idx3-ubyte`), in the order of `missing`;
    the closest pairs are matched first, each file at most once. `ignore`: names that are
    what they are (the dataset's other files)."""
    skip = set(ignore)
    try:
        present = [e.name for e in os.scandir(folder) if e.is_file() and e.name not in skip]
    except OSError:
        return []
    present = [name for name in present if not name.startswith(".")]
    scored = sorted(
        (
            (difflib.SequenceMatcher(None, candidate.lower(), found.lower()).ratio(), found, name)
            for name in missing
            for candidate in (name, f"{name}.gz")
            for found in present
        ),
        reverse=True,
    )
    pairs: dict[str, str] = {}
    for score, found, name in scored:
        if score >= _NEAR and name not in pairs and found not in pairs.values():
            pairs[name] = found
    return [(pairs[name], name) for name in missing if name in pairs]


def rename_hint(folder: Path, pairs: Sequence[tuple[str, str]]) -> str:
    """`rename A to B, C to D in <folder>`: the fix for files under near-miss names."""
    renames = ", ".join(f"{found} to {expected}" for found, expected in pairs)
    return f"rename {renames} in {folder}"


def find_misplaced(
    data_dir: Path, names: Iterable[str], skip: Iterable[Path] = (), max_depth: int = 4
) -> dict[Path, list[str]]:
    """Folders under `data_dir` (and `data_dir` itself) holding any of `names`, nearest first.

    Bounded (depth and folder count) so a large shared data folder is not crawled.
    """
    wanted, skipped = set(names), {Path(p) for p in skip}
    found: dict[Path, list[str]] = {}
    queue: deque[tuple[Path, int]] = deque([(data_dir, 0)])
    visited = 0
    while queue and visited < 2000:
        folder, depth = queue.popleft()
        visited += 1
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        hits = sorted(e.name for e in entries if e.name in wanted and e.is_file())
        if hits and folder not in skipped:
            found[folder] = hits
        if depth < max_depth:
            queue.extend(
                (Path(e.path), depth + 1)
                for e in sorted(entries, key=lambda e: e.name)
                if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            )
    return found


def layout_message(
    dataset: str, data_dir: Path, raw_dir: Path, found: dict[Path, list[str]]
) -> str:
    """Say where the files are, where cnnlab reads them, and how to fix it."""
    folder, files = max(found.items(), key=lambda item: len(item[1]))
    relative = raw_dir.relative_to(data_dir).parts
    lines = [
        f"{dataset}: wrong folder layout: found {', '.join(files)} in {folder}, but cnnlab reads "
        f"{dataset} from {raw_dir}.",
        f"Fix: move the files into {raw_dir}",
    ]
    if any(name.endswith(".gz") for name in files):
        lines[-1] += " (they may stay packed: cnnlab unpacks .gz files there)"
    if folder.parts[-len(relative) :] == relative and len(folder.parts) > len(relative):
        parent = Path(*folder.parts[: -len(relative)])
        lines[-1] += f", or set paths.data_dir={parent}"
    lines[-1] += "."
    return "\n".join(lines)
