"""The datasets: MNIST and Fashion-MNIST (IDX files, torchvision's parser) and CIFAR-10.

Each is an `ImageDataModule` that says where its files are and how to read them; a new
dataset is one more subclass here or in a file of its own (docs/extending.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torchvision
from torchvision.datasets.utils import download_and_extract_archive

from cnnlab.data.checks import (
    check_idx_split,
    find_bad_cifar_file,
    find_misplaced,
    idx_spellings,
    layout_message,
)
from cnnlab.data.datamodule import ImageDataModule
from cnnlab.data.files import link_or_copy, read_pickle, unpack_archive, unpack_gzip

log = logging.getLogger(__name__)

# Debian's dataset-fashion-mnist package installs the real files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _fashion_mnist_if_installed(dataset: ImageDataModule) -> str:
    installed = (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()
    if not installed or isinstance(dataset, FashionMNISTDataModule):
        return ""
    return (
        f"\nReal Fashion-MNIST is installed on this machine ({DEBIAN_FASHION_MNIST}): "
        "data=fashion_mnist trains on it offline."
    )


class IdxDataModule(ImageDataModule):
    """MNIST-format datasets (IDX files), parsed by torchvision's MNIST classes."""

    torchvision_class: ClassVar[type[torchvision.datasets.MNIST]]
    sample_shape = (1, 28, 28)

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.torchvision_class.__name__ / "raw"

    def expected_files(self) -> list[str]:
        return [Path(name).stem for name, _ in self.torchvision_class.resources]

    def file_spellings(self, name: str) -> list[str]:
        return idx_spellings(name)

    def fetch_local_copies(self) -> None:
        """Use copies found in `raw_dir` or a system folder (Debian's package): `.gz` files
        are unpacked, files named `train-images.idx3-ubyte` (a dot before `idx`, as the
        original site and some archives ship them) are hard-linked under torchvision's name."""
        for name in self.missing_files():
            found = self._local_copy(name)
            if found is None:
                continue
            target = self.raw_dir / name
            if found.suffix == ".gz":
                unpack_gzip(self.name, found, target)
            else:
                link_or_copy(self.name, found, target)
            if found.name not in (name, f"{name}.gz"):
                log.info("%s: reading %s as %s", self.name, found, target)

    def _local_copy(self, name: str) -> Path | None:
        for folder in (self.raw_dir, *self.system_dirs):
            for spelling in self.file_spellings(name):
                path = folder / spelling
                if path != self.raw_dir / name and path.is_file():
                    return path
        return None

    def download_files(self) -> None:
        self.torchvision_class(str(self.data_dir), train=True, download=True)

    def offline_alternative(self) -> str:
        return _fashion_mnist_if_installed(self)

    def _layout_skip_dirs(self) -> list[Path]:
        # MNIST and Fashion-MNIST files share their names: one is not the other misplaced.
        families = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST")
        return [self.raw_dir, *(self.data_dir / name / "raw" for name in families)]

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if train else "t10k"
        check_idx_split(
            self.name,
            self.raw_dir / f"{prefix}-images-idx3-ubyte",
            self.raw_dir / f"{prefix}-labels-idx1-ubyte",
            self.sample_shape[1:],
        )
        dataset = self.torchvision_class(str(self.data_dir), train=train, download=False)
        return dataset.data.unsqueeze(1), dataset.targets


class MNISTDataModule(IdxDataModule):
    name = "MNIST"
    torchvision_class = torchvision.datasets.MNIST
    class_names = tuple(str(digit) for digit in range(10))


class FashionMNISTDataModule(IdxDataModule):
    name = "Fashion-MNIST"
    torchvision_class = torchvision.datasets.FashionMNIST
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


# CIFAR-10's files as torchvision names them (its class attributes, not its parser).
_CIFAR = torchvision.datasets.CIFAR10


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10's python batches, read with an unpickler that admits only numpy arrays and
    plain values (torchvision's parser would run whatever code a batch file holds)."""

    name = "CIFAR-10"
    sample_shape = (3, 32, 32)
    default_val_fraction = 0.2
    published_md5: ClassVar[dict[str, str]] = {
        name: md5 for name, md5 in [*_CIFAR.train_list, *_CIFAR.test_list]
    } | {_CIFAR.meta["filename"]: _CIFAR.meta["md5"]}
    class_names = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / _CIFAR.base_folder

    def expected_files(self) -> list[str]:
        return [name for name, _ in _CIFAR.train_list + _CIFAR.test_list] + [
            _CIFAR.meta["filename"]
        ]

    def fetch_local_copies(self) -> None:
        archive = self.data_dir / _CIFAR.filename
        if archive.is_file():
            unpack_archive(self.name, archive, self.data_dir)

    def _wrong_layout(self) -> str | None:
        archive = _CIFAR.filename  # beside the batches folder is where it belongs
        names = [*self.expected_files(), archive]
        found = find_misplaced(self.data_dir, names, skip=self._layout_skip_dirs())
        if found.get(self.data_dir) == [archive]:
            del found[self.data_dir]
        return layout_message(self.name, self.data_dir, self.raw_dir, found) if found else None

    def diagnose_corrupt(self) -> str | None:
        return find_bad_cifar_file(self.name, self.raw_dir, self.expected_files())

    def offline_alternative(self) -> str:
        return _fashion_mnist_if_installed(self)

    def download_files(self) -> None:
        download_and_extract_archive(
            _CIFAR.url, str(self.data_dir), filename=_CIFAR.filename, md5=_CIFAR.tgz_md5
        )

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        meta = read_pickle(self.raw_dir / _CIFAR.meta["filename"])
        if len(meta[_CIFAR.meta["key"]]) != self.num_classes:
            raise ValueError(f"batches.meta names {len(meta[_CIFAR.meta['key']])} classes")
        rows, labels = [], []
        for name, _ in _CIFAR.train_list if train else _CIFAR.test_list:
            batch = read_pickle(self.raw_dir / name)
            rows.append(batch["data"])
            labels.extend(batch["labels"])
        # Each row is 3072 bytes: the red plane, then green, then blue (N x C x H x W).
        images = np.vstack(rows).reshape(-1, *self.sample_shape)
        return torch.from_numpy(np.ascontiguousarray(images)), torch.as_tensor(labels)
