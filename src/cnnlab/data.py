"""LightningDataModules that hold a whole small image dataset in memory as uint8 tensors.

torchvision parses the files once; batches are then gathered by index from one
tensor (no per-sample PIL images, no collation) and normalised on the device
with the same maths as `cnnlab.preprocessing.normalize_images`.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import pickle
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.datasets.utils import extract_archive

from cnnlab.data_checks import (
    check_idx_split,
    find_bad_cifar_file,
    find_misplaced,
    layout_message,
)
from cnnlab.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError
from cnnlab.preprocessing import normalize_tensor

ValSplit = Literal["random", "last"]


class IndexBatchSampler(Sampler[torch.Tensor]):
    """Yields whole batches of indices, reshuffled per epoch from `seed + epoch` (resumable).

    Under DDP (`num_replicas` > 1) every rank draws the same order and keeps every
    `num_replicas`-th sample from `rank` on, as torch's DistributedSampler does. Training pads
    the order by wrapping around (`pad=True`), so all ranks take the same number of steps;
    evaluation does not, so each sample is counted exactly once.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = False,
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.device = torch.device(device)
        self.num_replicas, self.rank, self.pad = num_replicas, rank, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        if self.num_replicas == 1:
            return self.size
        if self.pad:
            return -(-self.size // self.num_replicas)
        return len(range(self.rank, self.size, self.num_replicas))

    def __iter__(self) -> Iterator[torch.Tensor]:
        # A generator, so the order is drawn at the first batch, not when iter() is called:
        # on resume Lightning calls iter() before set_epoch(), and the resumed epoch must still
        # get its own order.
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        if self.num_replicas > 1:
            if self.pad:
                total = self._shard_size() * self.num_replicas
                order = order.repeat(-(-total // self.size))[:total]
            order = order[self.rank :: self.num_replicas]
        # One host-to-device copy per epoch; each batch's indices are then a view on the device.
        yield from order.to(self.device).split(self.batch_size)

    def __len__(self) -> int:
        return -(-self._shard_size() // self.batch_size)


class TensorBatches(Dataset):
    """A dataset indexed by a tensor of indices, returning a whole (images, labels) batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __getitem__(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __len__(self) -> int:
        return len(self.labels)


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


class ImageDataModule(pl.LightningDataModule):
    """Common machinery; subclasses say where the files are and how torchvision reads them."""

    name: ClassVar[str]
    sample_shape: ClassVar[tuple[int, int, int]]
    class_names: ClassVar[tuple[str, ...]]
    default_val_fraction: ClassVar[float] = 0.1

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        val_fraction: float | None = None,
        val_split: ValSplit = "random",
        seed: int = 42,
        download: bool = False,
        system_dirs: Sequence[str] = (),
        on_device: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or max(batch_size, 1000))
        self.val_fraction = self.default_val_fraction if val_fraction is None else val_fraction
        self.val_split = val_split
        self.seed = int(seed)
        self.download = bool(download)
        self.system_dirs = [Path(d) for d in system_dirs]
        self.on_device = on_device
        self._validate()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size={self.batch_size} is invalid: it must be >= 1")
        if self.eval_batch_size < 1:
            raise ConfigError(
                f"data.eval_batch_size={self.eval_batch_size} is invalid: it must be >= 1"
            )
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} is invalid: it must lie strictly between "
                "0 and 1 (the seed uses 0.1 for MNIST, 0.2 for CIFAR-10)"
            )
        if self.val_split not in ("random", "last"):
            raise ConfigError(
                f"data.val_split={self.val_split!r} is invalid: use 'random' (seeded) or 'last' "
                "(Keras' validation_split: the last fraction of the training arrays)"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- files ---------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        """Folder holding the files torchvision parses."""
        raise NotImplementedError

    def expected_files(self) -> list[str]:
        raise NotImplementedError

    def missing_files(self) -> list[str]:
        return [name for name in self.expected_files() if not (self.raw_dir / name).is_file()]

    def _fill_from_local_copies(self) -> None:
        """Use files that are already on the machine (gz next to the target, system packages)."""

    def _download(self) -> None:
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Make the files present: local copies first, then a download if allowed."""
        with folder_lock(self.data_dir):
            if not self.missing_files():
                return
            self._fill_from_local_copies()
            if not self.missing_files():
                return
            if self.download:
                try:
                    self._download()
                except Exception as err:  # network errors come in many types
                    raise DatasetNotFoundError(
                        f"{self.name}: downloading into {self.raw_dir} failed ({err}).\n"
                        f"{self._how_to_fix()}"
                    ) from err
            missing = self.missing_files()
            if missing and (wrong_layout := self._wrong_layout()):
                raise DatasetNotFoundError(wrong_layout)
            if missing:
                raise DatasetNotFoundError(
                    f"{self.name} not found: {self.raw_dir} lacks {', '.join(missing)}.\n"
                    f"{self._how_to_fix()}"
                )

    def _layout_skip_dirs(self) -> list[Path]:
        """Folders where found files are not misplaced (they belong to another dataset)."""
        return [self.raw_dir]

    def _wrong_layout(self) -> str | None:
        """The expected files sitting in the wrong folder near `data_dir`, reported as such."""
        names = [*self.expected_files(), *(f"{name}.gz" for name in self.expected_files())]
        found = find_misplaced(self.data_dir, names, skip=self._layout_skip_dirs())
        return layout_message(self.name, self.data_dir, self.raw_dir, found) if found else None

    def _find_corrupt_file(self) -> str | None:
        """Which file made parsing fail, and why (None: unknown)."""
        return None

    def _how_to_fix(self) -> str:
        return (
            f"Fix: copy the files into {self.raw_dir} (see README, 'Data offline'), point "
            f"data.data_dir at a folder that has them, or set data.download=true on a machine "
            f"with internet access."
        )

    def _read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images N x C x H x W, int64 labels) of the official train or test split."""
        raise NotImplementedError

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            images, labels = self._read_split(train)
        except (DatasetNotFoundError, DatasetCorruptError):
            raise
        except Exception as err:
            culprit = self._find_corrupt_file()
            raise DatasetCorruptError(
                f"{self.name}: {culprit}. Delete it and fetch a fresh copy."
                if culprit
                else f"{self.name}: the files in {self.raw_dir} could not be read ({err}). "
                "Delete them and fetch fresh copies."
            ) from err
        if tuple(images.shape[1:]) != self.sample_shape or len(images) != len(labels):
            raise DatasetCorruptError(
                f"{self.name}: {self.raw_dir} holds images of shape {tuple(images.shape)} and "
                f"{len(labels)} labels; expected N x {self.sample_shape} with one label each."
            )
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise DatasetCorruptError(
                f"{self.name}: labels in {self.raw_dir} fall outside 0..{self.num_classes - 1}."
            )
        return images.contiguous(), labels.to(torch.int64)

    # -- splits ----------------------------------------------------------------------------
    def split_indices(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, validation) indices into the official training split.

        Keras' `validation_split` keeps the first int(n * (1 - f)) samples for training;
        'last' reproduces that exactly, 'random' takes a seeded random subset of that size.
        """
        split_at = int(size * (1.0 - float(self.val_fraction)))
        if split_at < 1 or split_at >= size:
            raise ConfigError(
                f"data.val_fraction={self.val_fraction} leaves {split_at} of {size} images "
                "for training; choose a fraction that keeps both splits non-empty"
            )
        if self.val_split == "last":
            order = torch.arange(size)
        else:
            order = torch.randperm(size, generator=torch.Generator().manual_seed(self.seed))
        return order[:split_at], order[split_at:]

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()  # idempotent; makes `setup` usable outside a Trainer
        images, labels = self._load(train=True)
        train_idx, val_idx = self.split_indices(len(labels))
        self.splits["train"] = (images[train_idx], labels[train_idx])
        self.splits["val"] = (images[val_idx], labels[val_idx])
        self.splits["test"] = self._load(train=False)
        device = self.storage_device()
        if device.type != "cpu":
            # The whole dataset lives on the accelerator as uint8; batches are gathered there.
            self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}

    def storage_device(self) -> torch.device:
        """Where the tensors live: the accelerator's memory when training there (auto)."""
        trainer = getattr(self, "trainer", None)
        if self.on_device is False or trainer is None:
            return torch.device("cpu")
        device = trainer.strategy.root_device
        if self.on_device == "auto" and device.type not in ("cuda", "mps"):
            return torch.device("cpu")
        return device

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        images, labels = self.splits[split]
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        # Under DDP each rank takes its own shard (trainer configs set use_distributed_sampler
        # false: Lightning's wrapper would shard whole batches and pad validation).
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = IndexBatchSampler(
            len(labels),
            batch_size,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=replicas,
            rank=rank,
            pad=split == "train",
            device=labels.device,
        )
        # batch_size=None: the sampler already yields whole batches, so no collation.
        return DataLoader(TensorBatches(images, labels), sampler=sampler, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """uint8 -> float32 in [0, 1] on the device (the model summary's example input is
        already float, so only uint8 tensors are converted)."""
        if isinstance(batch, torch.Tensor):
            return normalize_tensor(batch) if batch.dtype == torch.uint8 else batch
        images, labels = batch
        return normalize_tensor(images), labels

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sample_shape": list(self.sample_shape),
            "num_classes": self.num_classes,
            "sizes": {split: len(labels) for split, (_, labels) in self.splits.items()},
        }


class _IdxDataModule(ImageDataModule):
    """MNIST-format datasets (IDX files), parsed by torchvision's MNIST classes."""

    torchvision_class: ClassVar[type[torchvision.datasets.MNIST]]
    sample_shape = (1, 28, 28)

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / self.torchvision_class.__name__ / "raw"

    def expected_files(self) -> list[str]:
        return [Path(name).stem for name, _ in self.torchvision_class.resources]

    def _fill_from_local_copies(self) -> None:
        candidates = [self.raw_dir, *self.system_dirs]
        for name in self.missing_files():
            for folder in candidates:
                packed = folder / f"{name}.gz"
                if packed.is_file():
                    self.raw_dir.mkdir(parents=True, exist_ok=True)
                    tmp = self.raw_dir / f".{name}.{os.getpid()}.tmp"
                    try:
                        with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                    except (OSError, EOFError) as err:
                        tmp.unlink(missing_ok=True)
                        raise DatasetCorruptError(
                            f"{self.name}: {packed} is not a readable gzip file ({err}). "
                            "Replace it with a fresh copy."
                        ) from err
                    tmp.replace(self.raw_dir / name)  # atomic: readers never see half a file
                    break

    def _download(self) -> None:
        self.torchvision_class(str(self.data_dir), train=True, download=True)

    def _layout_skip_dirs(self) -> list[Path]:
        # MNIST and Fashion-MNIST files share their names: one is not the other misplaced.
        families = ("MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST")
        return [self.raw_dir, *(self.data_dir / name / "raw" for name in families)]

    def _read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if train else "t10k"
        check_idx_split(
            self.name,
            self.raw_dir / f"{prefix}-images-idx3-ubyte",
            self.raw_dir / f"{prefix}-labels-idx1-ubyte",
            self.sample_shape[1:],
        )
        dataset = self.torchvision_class(str(self.data_dir), train=train, download=False)
        return dataset.data.unsqueeze(1), dataset.targets


class MNISTDataModule(_IdxDataModule):
    name = "MNIST"
    torchvision_class = torchvision.datasets.MNIST
    class_names = tuple(str(digit) for digit in range(10))


class FashionMNISTDataModule(_IdxDataModule):
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


class _CIFAR10Files(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 parser, checking that files exist rather than their md5.

    The md5 check would reject any file that is not the official download (such as the
    tests' synthetic batches); malformed files are still caught when they are parsed.
    """

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as infile:
            self.classes = pickle.load(infile, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class CIFAR10DataModule(ImageDataModule):
    name = "CIFAR-10"
    sample_shape = (3, 32, 32)
    default_val_fraction = 0.2
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
        return self.data_dir / _CIFAR10Files.base_folder

    def expected_files(self) -> list[str]:
        files = _CIFAR10Files.train_list + _CIFAR10Files.test_list
        return [name for name, _ in files] + [_CIFAR10Files.meta["filename"]]

    def _fill_from_local_copies(self) -> None:
        archive = self.data_dir / _CIFAR10Files.filename
        if archive.is_file():
            try:
                extract_archive(str(archive), str(self.data_dir))
            except Exception as err:
                raise DatasetCorruptError(
                    f"{self.name}: {archive} is not a readable tar.gz archive ({err}). "
                    "Replace it with a fresh copy."
                ) from err

    def _wrong_layout(self) -> str | None:
        archive = _CIFAR10Files.filename  # beside the batches folder is where it belongs
        names = [*self.expected_files(), archive]
        found = find_misplaced(self.data_dir, names, skip=self._layout_skip_dirs())
        if found.get(self.data_dir) == [archive]:
            del found[self.data_dir]
        return layout_message(self.name, self.data_dir, self.raw_dir, found) if found else None

    def _find_corrupt_file(self) -> str | None:
        return find_bad_cifar_file(self.name, self.raw_dir, self.expected_files())

    def _download(self) -> None:
        torchvision.datasets.CIFAR10(str(self.data_dir), train=True, download=True)

    def _read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = _CIFAR10Files(str(self.data_dir), train=train, download=False)
        images = torch.from_numpy(np.ascontiguousarray(dataset.data.transpose(0, 3, 1, 2)))
        return images, torch.as_tensor(dataset.targets)
