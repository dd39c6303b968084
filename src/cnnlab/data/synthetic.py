"""Tiny datasets written in the real on-disk formats, for tests, smoke runs and benchmarks.

Each class gets its own spatial pattern plus noise, so a CNN can learn it in seconds,
and the files go through exactly the loading code that real MNIST/CIFAR-10 files use.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from cnnlab.data.datasets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

_IDX_UBYTE = 0x08


def patterned_images(
    labels: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator, noise: int = 60
) -> np.ndarray:
    """uint8 images (N, H, W, C): class k lights a horizontal band and a vertical band."""
    height, width, channels = shape
    count = len(labels)
    images = rng.integers(0, noise, size=(count, height, width, channels), dtype=np.int16)
    band = max(height // 10, 1)
    for k in range(10):
        mask = labels == k
        row = (k * height) // 10
        col = ((9 - k) * width) // 10
        images[mask, row : row + band, :, :] += 180
        images[mask, :, col : col + band, k % channels] += 120
    return np.clip(images, 0, 255).astype(np.uint8)


def _labels(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(count) % 10).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """An IDX file (the MNIST format): magic (0, 0, type, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, _IDX_UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_dataset(
    folder: Path, train: int = 600, test: int = 200, seed: int = 0, compress: bool = False
) -> Path:
    """The four MNIST files (train/t10k images/labels) into `folder`."""
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = _labels(count, rng)
        images = patterned_images(labels, (28, 28, 1), rng)[..., 0]
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return folder


def write_cifar10(folder: Path, train: int = 500, test: int = 200, seed: int = 0) -> Path:
    """CIFAR-10's python pickles: five training batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = _labels(train, rng)
    images = patterned_images(labels, (32, 32, 3), rng)
    for i, chunk in enumerate(np.array_split(np.arange(train), 5), start=1):
        _write_cifar_batch(folder / f"data_batch_{i}", images[chunk], labels[chunk])
    test_labels = _labels(test, rng)
    _write_cifar_batch(
        folder / "test_batch", patterned_images(test_labels, (32, 32, 3), rng), test_labels
    )
    meta = {"label_names": list(CIFAR10DataModule.class_names), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def _write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    # CIFAR-10 stores rows of 3072 bytes: the red plane, then green, then blue.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    batch = {
        "batch_label": path.name,
        "labels": [int(x) for x in labels],
        "data": rows,
        "filenames": [f"{i}.png" for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch))


def write_all(data_dir: Path, train: int = 600, test: int = 200, seed: int = 0) -> Path:
    """MNIST, Fashion-MNIST and CIFAR-10 in the folder layout cnnlab's datamodules read."""
    for module in (MNISTDataModule, FashionMNISTDataModule):
        raw = module(data_dir=data_dir).raw_dir
        write_idx_dataset(raw, train=train, test=test, seed=seed)
    write_cifar10(CIFAR10DataModule(data_dir=data_dir).raw_dir, train=train, test=test, seed=seed)
    return data_dir
