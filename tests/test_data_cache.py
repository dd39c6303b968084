"""Each dataset is parsed once: later runs read the cached splits while the files are unchanged,
and a cache file that is not exactly what cnnlab wrote is ignored, never run."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from cnnlab.data import CIFAR10DataModule, MNISTDataModule
from cnnlab.data.cache import CACHE_FILE
from cnnlab.data.synthetic import write_cifar10, write_idx_dataset
from cnnlab.errors import DatasetCorruptError


def _mnist(data_dir: Path) -> MNISTDataModule:
    return MNISTDataModule(data_dir=data_dir, download=False)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    write_idx_dataset(_mnist(tmp_path).raw_dir, train=100, test=40, seed=3)
    return tmp_path


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records every parse of the raw files (the `train` flag of each `read_split`)."""
    calls: list[bool] = []
    original = MNISTDataModule.read_split

    def counted(self: MNISTDataModule, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(train)
        return original(self, train)

    monkeypatch.setattr(MNISTDataModule, "read_split", counted)
    return calls


def test_a_second_run_reads_the_cached_splits_not_the_files(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = _parses(monkeypatch)
    first = _mnist(mnist_dir)
    first.setup()
    assert parses == [True, False] and (first.raw_dir / CACHE_FILE).is_file()
    second = _mnist(mnist_dir)
    second.setup()
    assert parses == [True, False]  # nothing parsed again
    for split in ("train", "val", "test"):
        for a, b in zip(first.splits[split], second.splits[split], strict=True):
            assert torch.equal(a, b)


def test_a_changed_file_is_parsed_again(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _mnist(mnist_dir).setup()
    labels = _mnist(mnist_dir).raw_dir / "t10k-labels-idx1-ubyte"
    stat = labels.stat()
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    parses = _parses(monkeypatch)
    _mnist(mnist_dir).setup()
    assert parses == [True, False]


class _WritesAFile:
    def __reduce__(self) -> tuple:
        return (Path.write_text, (Path("/tmp/cnnlab-cache-attack"), "ran"))


@pytest.mark.parametrize(
    "craft",
    [
        lambda path: path.write_bytes(pickle.dumps({"format": 1, "x": _WritesAFile()})),
        lambda path: torch.save({"format": 1, "key": [], "train": _WritesAFile()}, path),
        lambda path: path.write_bytes(b"not a tensor file"),
        lambda path: path.write_bytes(path.read_bytes()[:200]),  # truncated
    ],
    ids=["pickle-with-code", "torch-file-with-code", "garbage", "truncated"],
)
def test_a_crafted_or_broken_cache_is_ignored_and_runs_nothing(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, craft: object
) -> None:
    _mnist(mnist_dir).setup()
    cache = _mnist(mnist_dir).raw_dir / CACHE_FILE
    stat = cache.stat()
    craft(cache)  # type: ignore[operator]
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    Path("/tmp/cnnlab-cache-attack").unlink(missing_ok=True)
    parses = _parses(monkeypatch)
    dm = _mnist(mnist_dir)
    dm.setup()
    assert parses == [True, False]  # parsed from the files instead
    assert not Path("/tmp/cnnlab-cache-attack").exists()
    assert len(dm.splits["test"][1]) == 40


def test_a_cache_of_wrong_shapes_or_labels_is_ignored(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mnist(mnist_dir).setup()
    cache = _mnist(mnist_dir).raw_dir / CACHE_FILE
    saved = torch.load(cache, weights_only=True)
    saved["test"] = (saved["test"][0], torch.full_like(saved["test"][1], 99))  # class 99 of 10
    torch.save(saved, cache)
    parses = _parses(monkeypatch)
    dm = _mnist(mnist_dir)
    dm.setup()
    assert parses == [True, False]
    assert int(dm.splits["test"][1].max()) < 10


def test_files_the_md5_check_skipped_are_checked_once_it_is_asked_for(tmp_path: Path) -> None:
    write_cifar10(CIFAR10DataModule(data_dir=tmp_path).raw_dir, train=60, test=20, seed=1)
    CIFAR10DataModule(data_dir=tmp_path, verify_md5=False, batch_size=8).setup()
    with pytest.raises(DatasetCorruptError, match="is not the official file"):
        CIFAR10DataModule(data_dir=tmp_path, batch_size=8).setup()


def test_a_cache_that_cannot_be_written_costs_nothing_but_the_parse(mnist_dir: Path) -> None:
    raw = _mnist(mnist_dir).raw_dir
    (raw / CACHE_FILE).mkdir()  # in its way (as a read-only folder would be, for root too)
    dm = _mnist(mnist_dir)
    dm.setup()
    assert len(dm.splits["train"][1]) == 90
    assert (raw / CACHE_FILE).is_dir() and not list(raw.glob(".*.tmp"))
