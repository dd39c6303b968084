"""Datamodules read the real formats once into tensors, split like the assignment, fail clearly."""

import shutil
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.assignment import normalize_images, normalize_tensor
from cnnlab.data import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    IndexBatchSampler,
    MNISTDataModule,
)
from cnnlab.data.synthetic import write_idx_dataset
from cnnlab.errors import ConfigError, DatasetCorruptError, DatasetNotFoundError


@pytest.mark.parametrize(
    ("module", "shape", "val"),
    [
        (MNISTDataModule, (1, 28, 28), 60),
        (FashionMNISTDataModule, (1, 28, 28), 60),
        (CIFAR10DataModule, (3, 32, 32), 120),
    ],
)
def test_files_become_uint8_tensors_with_the_assignments_split(
    synthetic_data_dir: Path, module: type, shape: tuple, val: int
) -> None:
    dm = module(data_dir=synthetic_data_dir, batch_size=32, verify_md5=False)
    dm.setup("fit")
    images, labels = dm.splits["train"]
    assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == shape
    assert labels.dtype == torch.int64
    assert dm.describe()["sizes"] == {"train": 600 - val, "val": val, "test": 200}
    assert set(labels.tolist()) == set(range(10))


def test_cifar10_pixels_round_trip_from_the_pickle_layout(tmp_path: Path) -> None:
    import pickle

    from cnnlab.data.synthetic import write_cifar10

    folder = write_cifar10(tmp_path / "cifar-10-batches-py", train=50, test=20)
    row = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]
    dm = CIFAR10DataModule(data_dir=tmp_path, val_split="last", verify_md5=False)
    dm.setup()
    first = dm.splits["train"][0][0]
    assert first.shape == (3, 32, 32)
    assert np.array_equal(first.numpy().reshape(-1), row)  # R plane, then G, then B


def test_last_split_is_keras_validation_split(synthetic_data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=synthetic_data_dir, val_fraction=0.1, val_split="last")
    train_idx, val_idx = dm.split_indices(600)
    assert train_idx.tolist() == list(range(540))
    assert val_idx.tolist() == list(range(540, 600))


def test_random_split_is_seeded_and_disjoint(synthetic_data_dir: Path) -> None:
    a = MNISTDataModule(data_dir=synthetic_data_dir, seed=1).split_indices(600)
    b = MNISTDataModule(data_dir=synthetic_data_dir, seed=1).split_indices(600)
    c = MNISTDataModule(data_dir=synthetic_data_dir, seed=2).split_indices(600)
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    assert not set(a[0].tolist()) & set(a[1].tolist())
    assert len(a[0]) + len(a[1]) == 600


def test_batches_are_whole_tensors_normalised_like_the_assignment(synthetic_data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=synthetic_data_dir, batch_size=32)
    dm.setup()
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 17  # 540 images, the last batch partial
    images, labels = batches[0]
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.uint8
    seen = torch.cat([b[1] for b in batches])
    assert len(seen) == 540
    normalised, same_labels = dm.on_after_batch_transfer((images, labels), 0)
    assert normalised.dtype == torch.float32 and same_labels is labels
    assert np.array_equal(normalised.numpy(), normalize_images(images.numpy()))


def test_training_order_reshuffles_per_epoch_and_replays_by_epoch() -> None:
    sampler = IndexBatchSampler(100, 10, shuffle=True, seed=3)
    first = torch.cat(list(sampler))
    sampler.set_epoch(1)
    second = torch.cat(list(sampler))
    sampler.set_epoch(0)
    assert torch.equal(torch.cat(list(sampler)), first)
    assert not torch.equal(first, second)
    assert sorted(first.tolist()) == list(range(100))


def test_missing_files_name_the_folder_and_the_fix(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=tmp_path / "nowhere", download=False)
    with pytest.raises(DatasetNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "data.download=true" in message


def test_gzipped_files_from_a_system_folder_are_used_offline(tmp_path: Path) -> None:
    system = write_idx_dataset(tmp_path / "system", train=100, test=50, compress=True)
    dm = FashionMNISTDataModule(data_dir=tmp_path / "data", system_dirs=[str(system)])
    dm.setup()
    assert dm.describe()["sizes"] == {"train": 90, "val": 10, "test": 50}
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_truncated_idx_file_is_reported_as_corrupt(
    tmp_path: Path, synthetic_data_dir: Path
) -> None:
    shutil.copytree(synthetic_data_dir / "MNIST", tmp_path / "MNIST")
    images = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(DatasetCorruptError, match="train-images-idx3-ubyte is truncated"):
        MNISTDataModule(data_dir=tmp_path).setup()


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"val_split": "first"}, "data.val_split"),
    ],
)
def test_bad_data_settings_are_rejected(tmp_path: Path, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        MNISTDataModule(data_dir=tmp_path, **kwargs)


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("bf16-true", torch.bfloat16), ("32-true", torch.float32), ("bf16-mixed", torch.float32)],
)
def test_batches_take_the_dtype_the_trainers_precision_feeds_its_weights(
    synthetic_data_dir: Path, precision: str, dtype: torch.dtype
) -> None:
    """Lightning converts inputs while they are still uint8, before normalisation."""
    import pytorch_lightning as pl

    dm = MNISTDataModule(data_dir=synthetic_data_dir, batch_size=8)
    dm.trainer = pl.Trainer(precision=precision, accelerator="cpu", logger=False)
    dm.setup()
    images, labels = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.dtype == dtype and labels.dtype == torch.int64
    assert dm.on_after_batch_transfer(torch.zeros(1, 1, 28, 28), 0).dtype == dtype


def _batch_as_the_run_sees_it(dm: MNISTDataModule, raw: Any, training: bool) -> torch.Tensor:
    """`raw` through the datamodule's on-device hook, while a trainer trains or evaluates."""
    plugin = types.SimpleNamespace(convert_input=lambda images: images)  # 32-true
    dm.trainer = types.SimpleNamespace(training=training, precision_plugin=plugin)
    images, _ = dm.on_after_batch_transfer(raw, 0)
    return images


def test_a_train_transform_changes_training_batches_and_no_others(
    synthetic_data_dir: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    cfg = compose_cfg(
        [
            f"paths.data_dir={synthetic_data_dir}",
            "data.train_transform={_target_:torch.flip,_partial_:true,_convert_:all,dims:[3]}",
        ]
    )
    flipping, plain = instantiate(cfg.data), MNISTDataModule(data_dir=synthetic_data_dir)
    for dm in (flipping, plain):
        dm.setup()
    raw = next(iter(plain.train_dataloader()))
    today = normalize_tensor(raw[0])  # what every batch was before transforms existed
    flipped = torch.flip(today, dims=[3])
    assert not torch.equal(flipped, today)
    assert torch.equal(_batch_as_the_run_sees_it(flipping, raw, training=True), flipped)
    assert torch.equal(_batch_as_the_run_sees_it(flipping, raw, training=False), today)
    for training in (True, False):
        assert torch.equal(_batch_as_the_run_sees_it(plain, raw, training), today)


def test_a_transform_that_is_not_a_function_is_one_line(synthetic_data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data.eval_transform=3 is not a function"):
        MNISTDataModule(data_dir=synthetic_data_dir, eval_transform=3)  # type: ignore[arg-type]


def _dotted(folder: Path, compress: bool = False) -> Path:
    """The four IDX files as the original site names them: `train-images.idx3-ubyte`."""
    write_idx_dataset(folder, train=100, test=50, compress=compress)
    for path in list(folder.iterdir()):
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    return folder


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_files_named_with_a_dot_before_idx_are_read_without_a_download(
    tmp_path: Path, compress: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = _dotted(tmp_path / "MNIST" / "raw", compress)
    monkeypatch.setattr(MNISTDataModule, "download_files", _no_download)
    dm = MNISTDataModule(data_dir=tmp_path, download=True)  # offline-ok: download refused
    dm.setup()
    assert dm.describe()["sizes"] == {"train": 90, "val": 10, "test": 50}
    assert (raw / "t10k-labels-idx1-ubyte").is_file()
    assert (raw / f"t10k-labels.idx1-ubyte{'.gz' if compress else ''}").is_file()  # kept


def _no_download(self: Any) -> None:
    raise AssertionError("downloaded although the files were there")


def test_files_under_close_names_get_a_rename_and_no_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", train=100, test=50)
    (raw / "train-images-idx3-ubyte").rename(raw / "train-images-idx3-ubyte.bin")
    (raw / "t10k-labels-idx1-ubyte").rename(raw / "t10k_labels_idx1_ubyte")
    monkeypatch.setattr(FashionMNISTDataModule, "download_files", _no_download)
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNISTDataModule(data_dir=tmp_path, download=True).prepare_data()  # offline-ok
    message = str(info.value)
    assert "rename train-images-idx3-ubyte.bin to train-images-idx3-ubyte, " in message
    assert "t10k_labels_idx1_ubyte to t10k-labels-idx1-ubyte in " in message


def test_files_misplaced_under_the_dotted_names_are_a_wrong_layout(tmp_path: Path) -> None:
    _dotted(tmp_path / "mnist_files")
    with pytest.raises(DatasetNotFoundError, match=r"wrong folder layout: found t10k-images\.idx3"):
        MNISTDataModule(data_dir=tmp_path, download=False).prepare_data()


def test_a_read_only_folder_with_dotted_names_says_which_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dotted(tmp_path / "MNIST" / "raw")

    def read_only(folder: Path) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("cnnlab.data.datamodule.folder_lock", read_only)
    monkeypatch.setattr(MNISTDataModule, "download_files", _no_download)
    with pytest.raises(DatasetNotFoundError) as info:
        MNISTDataModule(data_dir=tmp_path, download=True).prepare_data()  # offline-ok
    assert "Fix: rename train-images.idx3-ubyte to train-images-idx3-ubyte, " in str(info.value)
