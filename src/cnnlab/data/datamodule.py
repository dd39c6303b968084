"""The LightningDataModule behind every dataset: a whole small dataset in memory as uint8 tensors.

The files are parsed once; batches are then gathered by index from one tensor (no per-sample
PIL images, no collation) and normalised on the device with the same maths as the
assignment's `normalize_images`. The datasets themselves are in `cnnlab.data.datasets`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from cnnlab.assignment import normalize_tensor
from cnnlab.data.cache import read_cached_splits, source_key, write_cached_splits
from cnnlab.data.checks import (
    check_published_md5,
    find_misplaced,
    layout_message,
    near_misses,
    rename_hint,
)
from cnnlab.data.files import folder_lock
from cnnlab.data.sampling import IndexBatchSampler, InOrderBatchSampler, TensorBatches
from cnnlab.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError, check_value

ValSplit = Literal["random", "last"]
# A function of a batch of normalised float images (N, C, H, W), on the device, to images.
BatchTransform = Callable[[torch.Tensor], torch.Tensor]


def _positive_int(value: Any) -> bool:
    return int(value) == value and value >= 1


# What each data setting accepts: the datamodule checks its arguments against this table, and
# the run's config check (cnnlab.training.checks) reads the same one before any data is read.
DATA_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (_positive_int, "it must be an integer >= 1"),
    "eval_batch_size": (_positive_int, "it must be an integer >= 1 (or null for the default)"),
    "val_fraction": (
        lambda v: 0 < float(v) < 1,
        "it must lie strictly between 0 and 1 (the assignment: 0.1 for MNIST, 0.2 for CIFAR-10)",
    ),
    "val_split": (
        lambda v: v in ("random", "last"),
        "use 'random' (a seeded subset) or 'last' (Keras' validation_split: the last fraction "
        "of the training arrays)",
    ),
}


class ImageDataModule(pl.LightningDataModule):
    """Common machinery; a subclass says where its files are and how to read them.

    A subclass sets `name`, `sample_shape` and `class_names`, and defines `raw_dir`,
    `expected_files` and `read_split`; the hooks below it (`fetch_local_copies`,
    `download_files`, `diagnose_corrupt`) are optional (docs/extending.md).
    """

    name: ClassVar[str]
    sample_shape: ClassVar[tuple[int, int, int]]
    class_names: ClassVar[tuple[str, ...]]
    default_val_fraction: ClassVar[float] = 0.1
    # Published md5 of files in `raw_dir`, by name: checked before parsing (`verify_md5`).
    published_md5: ClassVar[dict[str, str]] = {}

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
        verify_md5: bool = True,
        train_transform: BatchTransform | None = None,
        eval_transform: BatchTransform | None = None,
    ) -> None:
        super().__init__()
        val_fraction = self.default_val_fraction if val_fraction is None else val_fraction
        given = {
            "batch_size": batch_size,
            "eval_batch_size": eval_batch_size,
            "val_fraction": val_fraction,
            "val_split": val_split,
        }
        for name, value in given.items():
            if value is not None:
                check_value(f"data.{name}", value, *DATA_RULES[name])
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or max(self.batch_size, 1000))
        self.val_fraction = float(val_fraction)
        self.val_split = val_split
        self.seed = int(seed)
        self.download = bool(download)
        self.system_dirs = [Path(d) for d in system_dirs]
        self.on_device = on_device
        self.verify_md5 = bool(verify_md5)
        for key, transform in (
            ("train_transform", train_transform),
            ("eval_transform", eval_transform),
        ):
            if transform is not None and not callable(transform):
                raise ConfigError(
                    f"data.{key}={transform!r} is not a function of a batch of images: give a "
                    '_target_ with _partial_: true (docs/extending.md, "A transform")'
                )
        # On the device, after normalisation: train_transform to training batches,
        # eval_transform to validation, test and predict batches; None costs nothing per step.
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- files ---------------------------------------------------------------------------
    @property
    def raw_dir(self) -> Path:
        """Folder holding the files `read_split` parses."""
        raise NotImplementedError

    def expected_files(self) -> list[str]:
        """The file names `read_split` needs in `raw_dir`."""
        raise NotImplementedError

    def missing_files(self) -> list[str]:
        return [name for name in self.expected_files() if not (self.raw_dir / name).is_file()]

    def file_spellings(self, name: str) -> list[str]:
        """The names under which `fetch_local_copies` accepts the file `name`."""
        return [name, f"{name}.gz"]

    def fetch_local_copies(self) -> None:
        """Use files that are already on the machine (gz next to the target, system packages)."""

    def download_files(self) -> None:
        """Fetch the files from the internet (only with `data.download=true`)."""
        raise NotImplementedError(f"{self.name} cannot be downloaded: provide its files")

    def prepare_data(self) -> None:
        """Make the files present: local copies first, then a download if allowed.

        Complete files need no lock, so a read-only data folder (a cluster's shared copy) works
        as it is; the lock is taken only when something must be written.
        """
        if not self.missing_files():
            return
        if blocked := self._blocked_path_message():
            raise DatasetNotFoundError(blocked)
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(folder_lock(self.data_dir))
            except OSError as err:
                missing = self.missing_files()
                fix = "point data.data_dir at a writable folder (the files are unpacked or "
                fix += "downloaded into it)"
                if renames := self._near_misses():
                    fix = f"{rename_hint(self.raw_dir, renames)}, or {fix}"
                raise DatasetNotFoundError(
                    f"{self.name}: {self.raw_dir} lacks {', '.join(missing)} and "
                    f"{self.data_dir} cannot be written ({err.strerror}), so they cannot be "
                    f"unpacked, linked or downloaded there. Fix: {fix}."
                ) from err
            if not self.missing_files():
                return
            self.fetch_local_copies()
            if not self.missing_files():
                return
            # Files under names close to the expected ones are the user's own: say how to
            # name them rather than download a copy (or report a download failure).
            if renames := self._near_misses():
                raise DatasetNotFoundError(
                    f"{self.name}: {self.raw_dir} lacks {', '.join(self.missing_files())}, "
                    f"but holds files with close names. Fix: {rename_hint(self.raw_dir, renames)}"
                    " (cnnlab reads torchvision's names; .gz files may stay packed)."
                )
            if self.download:
                try:
                    self.download_files()
                except Exception as err:  # network errors come in many types
                    reason = " ".join(str(err).split())  # torchvision's lines, on one
                    raise DatasetNotFoundError(
                        f"{self.name}: downloading into {self.raw_dir} failed ({reason}).\n"
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

    def _near_misses(self) -> list[tuple[str, str]]:
        """Files in `raw_dir` under names close to a missing file's, paired with it."""
        missing = self.missing_files()
        present = [name for name in self.expected_files() if name not in missing]
        ignore = [
            *(s for name in missing for s in (name, f"{name}.gz")),
            *(s for name in present for s in self.file_spellings(name)),
        ]
        return near_misses(self.raw_dir, missing, ignore)

    def _blocked_path_message(self) -> str | None:
        """A folder where a dataset file belongs, or a file where a folder belongs: nothing
        could be unpacked or downloaded there, so say which path is in the way."""
        chain = [self.raw_dir]
        while chain[-1] != self.data_dir and chain[-1].parent != chain[-1]:
            chain.append(chain[-1].parent)
        for folder in reversed(chain):
            if folder.exists() and not folder.is_dir():
                return (
                    f"{self.name}: {folder} is a file, where cnnlab expects a folder of "
                    f"{self.name}'s files. Fix: move that file away, or point data.data_dir "
                    "at another folder."
                )
        for name in self.missing_files():
            path = self.raw_dir / name
            if not path.exists():
                continue
            kind = "a folder" if path.is_dir() else "not a regular file"
            fix = "move it away (or delete it): cnnlab then unpacks or downloads the file there"
            if (path / name).is_file():
                fix = f"it holds the file itself: put {path / name} at {path}, in its place"
            return (
                f"{self.name}: {path} is {kind}, where cnnlab expects the file {name}. Fix: {fix}."
            )
        return None

    def _layout_skip_dirs(self) -> list[Path]:
        """Folders where found files are not misplaced (they belong to another dataset)."""
        return [self.raw_dir]

    def _wrong_layout(self) -> str | None:
        """The expected files sitting in the wrong folder near `data_dir`, reported as such."""
        names = [
            spelling for name in self.expected_files() for spelling in self.file_spellings(name)
        ]
        found = find_misplaced(self.data_dir, names, skip=self._layout_skip_dirs())
        return layout_message(self.name, self.data_dir, self.raw_dir, found) if found else None

    def diagnose_corrupt(self) -> str | None:
        """Which file made parsing fail, and why (None: unknown)."""
        return None

    def _how_to_fix(self) -> str:
        fix = (
            f"Fix: copy the files into {self.raw_dir} (see docs/data.md) or point "
            "data.data_dir at a folder that has them"
        )
        if not self.download:
            fix += ", or set data.download=true on a machine with internet access"
        return f"{fix}.{self.offline_alternative()}"

    def offline_alternative(self) -> str:
        """A dataset this machine has, to suggest when this one cannot be had ('' for none)."""
        return ""

    def read_split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images N x C x H x W, int64 labels) of the official train or test split."""
        raise NotImplementedError

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            images, labels = self.read_split(train)
        except (DatasetNotFoundError, DatasetCorruptError):
            raise
        except Exception as err:
            culprit = self.diagnose_corrupt()
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

    def _official_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The official train and test splits: parsed from the raw files once, then read from
        the cache beside them while those files are unchanged (`cnnlab.data.cache`)."""
        md5_checked = self.verify_md5 and bool(self.published_md5)
        try:
            folder = self.raw_dir
            key = source_key(folder, self.expected_files())
        except NotImplementedError:  # a datamodule of your own that names no files
            folder, key = Path(), None
        if key is not None:
            shape, classes = self.sample_shape, self.num_classes
            if cached := read_cached_splits(folder, key, shape, classes, md5_checked):
                return cached
        if self.verify_md5:
            check_published_md5(self.name, self.raw_dir, self.published_md5)
        splits = {"train": self._load(train=True), "test": self._load(train=False)}
        write_cached_splits(folder, key, splits, md5_checked)
        return splits

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
        official = self._official_splits()
        images, labels = official["train"]
        train_idx, val_idx = self.split_indices(len(labels))
        if self.batch_size > len(train_idx):
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than {self.name}'s training split "
                f"({len(train_idx)} images with data.val_fraction={self.val_fraction}): choose "
                f"at most {len(train_idx)}"
            )
        self.splits["train"] = (images[train_idx], labels[train_idx])
        self.splits["val"] = (images[val_idx], labels[val_idx])
        self.splits["test"] = official["test"]
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
        # trainer.overfit_batches (debug=overfit): the same batches every epoch, in order.
        overfit = bool(trainer is not None and getattr(trainer, "overfit_batches", 0))
        sampler = (InOrderBatchSampler if overfit else IndexBatchSampler)(
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
        already float, so only uint8 tensors are converted), then to the precision's input
        dtype: Lightning converts inputs before this hook, when they are still uint8, so
        `trainer.precision=bf16-true` would feed float32 images to bfloat16 weights. A
        `train_transform` or `eval_transform` applies to the normalised images."""
        if isinstance(batch, torch.Tensor):
            images = normalize_tensor(batch) if batch.dtype == torch.uint8 else batch
            return self._precision_input(images)
        images, labels = batch
        images = normalize_tensor(images)
        if self.train_transform is not None or self.eval_transform is not None:
            images = self._transformed(images)
        return self._precision_input(images), labels

    def _transformed(self, images: torch.Tensor) -> torch.Tensor:
        """`train_transform` while the trainer trains, `eval_transform` otherwise."""
        trainer = getattr(self, "trainer", None)
        training = trainer is not None and trainer.training
        transform = self.train_transform if training else self.eval_transform
        return images if transform is None else transform(images)

    def _precision_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the dtype the trainer's precision feeds its module (float32 unless a
        true half precision, e.g. bf16-true, or 64-true)."""
        trainer = getattr(self, "trainer", None)
        return trainer.precision_plugin.convert_input(images) if trainer is not None else images

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sample_shape": list(self.sample_shape),
            "num_classes": self.num_classes,
            "sizes": {split: len(labels) for split, (_, labels) in self.splits.items()},
        }
