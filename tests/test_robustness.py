"""The robustness pieces in-process: config and checkpoint checks, data checks, the guards.

The same faults as `test_robustness_cli.py`, more variants, without a process per case.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from cnnlab.config import to_plain
from cnnlab.data import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    IndexBatchSampler,
    MNISTDataModule,
)
from cnnlab.data.synthetic import write_cifar10, write_idx_dataset
from cnnlab.errors import (
    ConfigError,
    DatasetCorruptError,
    DatasetNotFoundError,
    Diverged,
    Interrupted,
)
from cnnlab.models import nets
from cnnlab.models.classifier import ImageClassifier
from cnnlab.training.callbacks import RunHistory
from cnnlab.training.checkpoint import ResumableModelCheckpoint
from cnnlab.training.checks import (
    check_model_fits_data,
    check_resume_checkpoint,
    validate_train_config,
)
from cnnlab.training.divergence import DivergenceGuard
from cnnlab.training.entry import as_user_error, launch_problem, run_entry
from cnnlab.training.interruption import StopOnSignal, stop_on_signals
from cnnlab.training.run import train
from conftest import CONF_DIR

# -- bad configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=abc", "data.batch_size='abc' is invalid: it must be an integer >= 1"),
        ("data.batch_size=0", "data.batch_size=0 is invalid: it must be an integer >= 1"),
        ("data.val_fraction=abc", "data.val_fraction='abc' is invalid: it must lie strictly"),
        ("data.val_fraction=1.0", "data.val_fraction=1.0 is invalid: it must lie strictly"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is invalid: it must be an integer >= 1"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is invalid: the learning rate must be > 0"),
        ("optimizer.lr=abc", "optimizer.lr='abc' is invalid: the learning rate must be > 0"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(
    compose_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_train_config(compose_cfg([override]))
    assert message in str(info.value)


@pytest.mark.parametrize("activation", sorted(nets.ACTIVATIONS))
def test_every_activation_the_nets_know_passes_the_config_check(
    compose_cfg: Callable[..., DictConfig], activation: str
) -> None:
    validate_train_config(compose_cfg([f"model.net.activation={activation}"]))
    head = nets.net_1((1, 28, 28), 10, activation=activation)
    assert isinstance(head[-2], nets.ACTIVATIONS[activation])


def test_config_that_cannot_be_built_becomes_one_message_naming_the_key(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    cfg = compose_cfg(["+model.net.dropout=0.5"])
    with pytest.raises(Exception) as info:
        instantiate(cfg.model, _recursive_=False, sample_shape=[1, 28, 28], num_classes=10)
    err = as_user_error(info.value)
    assert isinstance(err, ConfigError)
    assert str(err).startswith("model: could not be built from the config: TypeError")
    assert "dropout" in str(err)
    # A user error raised while building stays itself (its own message, its own exit code).
    bad = compose_cfg(["data.batch_size=0", f"paths.data_dir={synthetic_data_dir}"])
    with pytest.raises(Exception) as info:
        instantiate(bad.data)
    assert isinstance(as_user_error(info.value), ConfigError)
    assert "data.batch_size=0" in str(as_user_error(info.value))


def _build(cfg: DictConfig) -> tuple[Any, ImageClassifier]:
    datamodule = instantiate(cfg.data)
    model = instantiate(
        cfg.model,
        _recursive_=False,
        sample_shape=list(datamodule.sample_shape),
        num_classes=datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
    )
    return datamodule, model


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+model.net.sample_shape=[3,32,32]", "model.net.sample_shape=[3, 32, 32] does not fit"),
        ("+model.net.num_classes=5", "model.net.num_classes=5 does not fit"),
    ],
)
def test_a_shape_pinned_in_the_config_must_fit_the_dataset(
    compose_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    cfg = compose_cfg([override])
    datamodule, model = _build(cfg)
    with pytest.raises(ConfigError, match="whose images are 1x28x28 with 10 classes") as info:
        check_model_fits_data(cfg, datamodule, model)
    assert message in str(info.value)


def test_a_net_that_does_not_take_the_datasets_images_is_refused(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    _, mnist_model = _build(compose_cfg())
    cifar_cfg = compose_cfg(["data=cifar10"])
    cifar = instantiate(cifar_cfg.data)
    with pytest.raises(ConfigError) as info:
        check_model_fits_data(cifar_cfg, cifar, mnist_model)
    assert str(info.value).startswith(
        "model.net (cnnlab.models.nets.net_1) does not accept CIFAR-10, whose images are 3x32x32"
    )
    assert mnist_model.training  # the dry run left the model as it was


@pytest.fixture
def mnist_checkpoint(compose_cfg: Callable[..., DictConfig], tmp_path: Path) -> Path:
    """A training checkpoint of an MNIST net_1 with Adam (the parts cnnlab checks)."""
    cfg = compose_cfg(["optimizer=adam"])
    _, model = _build(cfg)
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "loops": {},
            "hyper_parameters": dict(model.hparams),
            "cnnlab_config": to_plain(cfg),
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt_path={missing}"], "does not exist: give the checkpoints/last.ckpt"),
        (["ckpt_path={garbage}"], "could not be read (UnpicklingError"),
        (
            ["data=cifar10", "optimizer=adam", "ckpt_path={ckpt}"],
            "does not fit this run's model (it holds cnnlab.models.nets.net_1 for 1x28x28 images "
            "and 10 classes): net.0.weight: (32, 1, 3, 3) in the checkpoint, (32, 3, 3, 3) here",
        ),
        (
            ["model=net_2", "optimizer=adam", "ckpt_path={ckpt}"],
            "net.2.weight: only in the checkpoint",
        ),
        (["optimizer=sgd", "ckpt_path={ckpt}"], "was trained with torch.optim.Adam, but this run"),
    ],
    ids=["missing", "not-a-checkpoint", "other-dataset", "other-net", "other-optimizer"],
)
def test_a_checkpoint_that_cannot_resume_this_run_is_refused_before_fit(
    compose_cfg: Callable[..., DictConfig],
    mnist_checkpoint: Path,
    tmp_path: Path,
    overrides: list[str],
    message: str,
) -> None:
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a checkpoint")
    paths = {"missing": tmp_path / "nope.ckpt", "garbage": garbage, "ckpt": mnist_checkpoint}
    cfg = compose_cfg([o.format(**paths) for o in overrides])
    _, model = _build(cfg)
    with pytest.raises(ConfigError) as info:
        check_resume_checkpoint(cfg, model)
    assert message in str(info.value)


def test_resuming_with_other_settings_says_the_run_will_differ(
    compose_cfg: Callable[..., DictConfig],
    mnist_checkpoint: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    same = compose_cfg(["optimizer=adam", f"ckpt_path={mnist_checkpoint}"])
    check_resume_checkpoint(same, _build(same)[1])
    assert "differ" not in caplog.text
    other = compose_cfg(["optimizer=adam", "optimizer.lr=0.5", f"ckpt_path={mnist_checkpoint}"])
    check_resume_checkpoint(other, _build(other)[1])
    assert "optimizer.lr: 0.001 -> 0.5" in caplog.text and "will not match" in caplog.text


def test_run_and_sweep_folders_are_unique_per_process_and_microsecond() -> None:
    """test_robustness_cli launches runs at once; this pins the naming that makes it safe."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra = compose(config_name="train", return_hydra_config=True).hydra
    for key in ("run", "sweep"):
        folder = OmegaConf.to_container(hydra[key], resolve=False)["dir"]
        assert folder.endswith("%Y-%m-%d_%H-%M-%S-%f}_${cnnlab_pid:}"), (key, folder)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.limit_train_batches=0", "trainer.limit_train_batches=0 is invalid: give a"),
        ("trainer.limit_train_batches=0.0", "trainer.limit_train_batches=0.0 is invalid"),
        ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5 is invalid"),
        ("+trainer.max_steps=0", "trainer.max_steps=0 is invalid: it must be an integer >= 1"),
    ],
)
def test_a_run_that_would_train_nothing_is_refused(
    compose_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    """Zero steps would end `completed`, testing untrained weights as if they were trained."""
    with pytest.raises(ConfigError) as info:
        validate_train_config(compose_cfg([override]))
    assert message in str(info.value) and "0 would train nothing" in str(info.value)
    for fine in ("trainer.limit_train_batches=3", "trainer.limit_train_batches=0.5"):
        validate_train_config(compose_cfg([fine]))


def test_a_lightning_misconfiguration_is_a_user_error() -> None:
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    raised = MisconfigurationException("0.001 * 17 < 1. Please increase `limit_train_batches`")
    err = as_user_error(raised)
    assert isinstance(err, ConfigError) and err.__cause__ is raised
    assert str(err) == (
        "Lightning refused the configuration: 0.001 * 17 < 1. Please increase `limit_train_batches`"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["optimizer.lr=${paths.nope}"],
            "optimizer.lr=${paths.nope} cannot be resolved: Interpolation key 'paths.nope' not "
            "found. Fix: give optimizer.lr a value that resolves.",
        ),
        (
            ["paths.log_dir=${oc.env:CNNLAB_NOT_SET}"],
            "paths.log_dir=${oc.env:CNNLAB_NOT_SET} cannot be resolved: the environment variable "
            "CNNLAB_NOT_SET is not set.",
        ),
        (
            ["-m", "optimizer=adam,sgd", "run_label=${oc.env:CNNLAB_NOT_SET}"],
            "run_label=${oc.env:CNNLAB_NOT_SET} cannot be resolved",
        ),
        (["paths.log_dir={file}/below"], "as {file} is a file, not a folder. Fix: point paths."),
        (["hydra.run.dir={file}/run"], "hydra.run.dir={file}/run: the run folder {file}/run "),
        (["-m", "seed=1,2", "paths.log_dir={file}"], "the sweep folder {file}/train/multiruns/"),
        (["optimizer=adamm", "paths.log_dir={file}"], "did you mean adam? (its options: "),
        (["--cfg", "job", "run_label=${oc.env:CNNLAB_NOT_SET}"], None),  # no run
        (["paths.log_dir={tmp}"], None),
    ],
)
def test_what_would_stop_hydra_before_the_run_is_one_line(
    tmp_path: Path, argv: list[str], message: str | None
) -> None:
    """A value that does not resolve, or an outputs folder that cannot be made: one line
    before Hydra starts (src/train.py), not Hydra's traceback."""
    file = tmp_path / "a-file"
    file.write_text("")
    argv = [arg.replace("{file}", str(file)).replace("{tmp}", str(tmp_path)) for arg in argv]
    problem = launch_problem(CONF_DIR, ["src/train.py", *argv])
    if message is None:
        assert problem is None
    else:
        assert problem is not None and message.replace("{file}", str(file)) in problem, problem


# -- data problems -------------------------------------------------------------------------------


def _mnist_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source / "MNIST", target / "MNIST")
    return target / "MNIST" / "raw"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:5000])


def _pad(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0\0")


def _gzip_in_place(path: Path) -> None:
    path.write_bytes(gzip.compress(path.read_bytes()))


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("train-images-idx3-ubyte", _truncate, "is truncated: its header promises a 600x28x28"),
        ("t10k-labels-idx1-ubyte", _pad, "has 2 bytes more than its header promises (200)"),
        ("train-labels-idx1-ubyte", _gzip_in_place, "is gzip-compressed: rename it to"),
        ("t10k-images-idx3-ubyte", lambda p: p.write_bytes(b"<html>404</html>"), "is not an IDX"),
    ],
    ids=["truncated", "padded", "gzip-without-.gz", "not-idx"],
)
def test_a_damaged_idx_file_is_named(
    synthetic_data_dir: Path, tmp_path: Path, name: str, damage: Callable, message: str
) -> None:
    raw = _mnist_copy(synthetic_data_dir, tmp_path)
    damage(raw / name)
    with pytest.raises(DatasetCorruptError) as info:
        MNISTDataModule(data_dir=tmp_path).setup()
    assert f"MNIST: {raw / name} {message}" in str(info.value)


def test_images_and_labels_of_different_copies_are_refused(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    raw = _mnist_copy(synthetic_data_dir, tmp_path)
    other = write_idx_dataset(tmp_path / "other", train=500, test=10)
    shutil.copy(other / "train-labels-idx1-ubyte", raw / "train-labels-idx1-ubyte")
    with pytest.raises(DatasetCorruptError, match=r"holds 600 images but .* holds 500 labels"):
        MNISTDataModule(data_dir=tmp_path).setup()


def test_a_damaged_cifar10_batch_is_named(synthetic_data_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(synthetic_data_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DatasetCorruptError) as info:
        CIFAR10DataModule(data_dir=tmp_path, verify_md5=False).setup()
    assert f"CIFAR-10: {batch} cannot be unpickled (UnpicklingError" in str(info.value)


def _deep(root: Path) -> Path:
    write_idx_dataset(root / "MNIST" / "raw" / "MNIST" / "raw", train=50, test=20)
    return root


def _gz_beside_raw(root: Path) -> Path:
    write_idx_dataset(root / "MNIST", train=50, test=20, compress=True)
    return root


def _pointing_at_raw(root: Path) -> Path:
    write_idx_dataset(root / "MNIST" / "raw", train=50, test=20)
    return root / "MNIST" / "raw"


@pytest.mark.parametrize(
    ("layout", "found_in", "fix"),
    [
        (_deep, "MNIST/raw/MNIST/raw", "or set paths.data_dir={root}/MNIST/raw."),
        (_gz_beside_raw, "MNIST", "(they may stay packed: cnnlab unpacks .gz files there)."),
        (_pointing_at_raw, "MNIST/raw", "or set paths.data_dir={root}."),
    ],
    ids=["one-folder-too-deep", "gz-beside-raw", "data_dir-is-raw"],
)
def test_a_wrong_folder_layout_is_reported_as_such(
    tmp_path: Path, layout: Callable[[Path], Path], found_in: str, fix: str
) -> None:
    data_dir = layout(tmp_path)
    module = MNISTDataModule(data_dir=data_dir)
    with pytest.raises(DatasetNotFoundError) as info:
        module.setup()
    message = str(info.value)
    assert message.startswith("MNIST: wrong folder layout: found ")
    assert f" in {tmp_path / found_in}, but cnnlab reads MNIST from {module.raw_dir}." in message
    assert fix.format(root=tmp_path) in message
    assert not list(module.raw_dir.glob("*-ubyte"))  # nothing unpacked or made up


def test_cifar10_batches_outside_their_folder_are_a_wrong_layout(tmp_path: Path) -> None:
    write_cifar10(tmp_path, train=50, test=20)
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10DataModule(data_dir=tmp_path, verify_md5=False).setup()
    assert "found batches.meta, data_batch_1" in str(info.value)
    assert f"in {tmp_path}, but cnnlab reads CIFAR-10 from {tmp_path}/cifar-10-batches-py" in str(
        info.value
    )


def test_mnist_files_are_not_taken_for_misplaced_fashion_mnist(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    _mnist_copy(synthetic_data_dir, tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"^Fashion-MNIST not found"):
        FashionMNISTDataModule(data_dir=tmp_path).setup()


def _cifar_archive(source: Path, data_dir: Path) -> Path:
    """CIFAR-10's archive, as a download leaves it, built from a folder of batches."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(data_dir / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return data_dir


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files or folders that unpacking left behind."""
    return sorted(folder.rglob(".*.tmp"))


@pytest.mark.parametrize("dataset", ["MNIST", "CIFAR-10"])
def test_a_folder_where_a_dataset_file_belongs_is_named_and_nothing_is_left(
    synthetic_data_dir: Path, tmp_path: Path, dataset: str
) -> None:
    if dataset == "MNIST":
        raw = write_idx_dataset(tmp_path / "MNIST" / "raw", train=50, test=20, compress=True)
        module = MNISTDataModule(data_dir=tmp_path)
        blocked = raw / "train-images-idx3-ubyte"
    else:
        module = CIFAR10DataModule(data_dir=_cifar_archive(synthetic_data_dir, tmp_path))
        blocked = module.raw_dir / "data_batch_2"
    blocked.mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError) as info:
        module.setup()
    assert str(info.value) == (
        f"{dataset}: {blocked} is a folder, where cnnlab expects the file {blocked.name}. "
        "Fix: move it away (or delete it): cnnlab then unpacks or downloads the file there."
    )
    assert not _leftovers(tmp_path) and blocked.is_dir()


def test_a_folder_holding_the_file_itself_says_to_put_the_file_in_its_place(
    tmp_path: Path,
) -> None:
    labels = write_idx_dataset(tmp_path / "MNIST" / "raw", train=50, test=20) / (
        "t10k-labels-idx1-ubyte"
    )
    content = labels.read_bytes()
    labels.unlink()
    labels.mkdir()
    (labels / labels.name).write_bytes(content)  # unpacked one folder too far
    with pytest.raises(DatasetNotFoundError) as info:
        MNISTDataModule(data_dir=tmp_path).setup()
    assert f"it holds the file itself: put {labels / labels.name} at {labels}" in str(info.value)


def test_a_file_where_the_datasets_folder_belongs_is_named(tmp_path: Path) -> None:
    (tmp_path / "MNIST").write_bytes(b"not a folder")
    with pytest.raises(DatasetNotFoundError) as info:
        MNISTDataModule(data_dir=tmp_path).setup()
    assert str(info.value).startswith(
        f"MNIST: {tmp_path / 'MNIST'} is a file, where cnnlab expects a folder"
    )


@pytest.mark.parametrize("dataset", ["MNIST", "CIFAR-10"])
def test_unpacking_stopped_by_ctrl_c_leaves_no_temporary_file(
    synthetic_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str
) -> None:
    if dataset == "MNIST":
        write_idx_dataset(tmp_path / "MNIST" / "raw", train=50, test=20, compress=True)
        module: Any = MNISTDataModule(data_dir=tmp_path)
    else:
        module = CIFAR10DataModule(
            data_dir=_cifar_archive(synthetic_data_dir, tmp_path), verify_md5=False
        )
    renames: list[object] = []

    def ctrl_c_at_the_second_rename(source: object, target: object) -> None:
        renames.append(target)
        if len(renames) == 2:
            raise KeyboardInterrupt
        shutil.move(str(source), str(target))

    monkeypatch.setattr(os, "replace", ctrl_c_at_the_second_rename)
    with pytest.raises(KeyboardInterrupt):
        module.prepare_data()
    assert len(renames) == 2 and not _leftovers(tmp_path)
    monkeypatch.undo()
    module.setup()  # the next run unpacks what is still missing
    assert module.describe()["sizes"]["test"] in (20, 200) and not _leftovers(tmp_path)


def test_unpacking_onto_a_full_disk_is_one_message_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = write_idx_dataset(tmp_path / "MNIST" / "raw", train=50, test=20, compress=True)

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(args[0]))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(DatasetNotFoundError) as info:
        MNISTDataModule(data_dir=tmp_path).prepare_data()
    assert f"could not unpack {raw / 'train-images-idx3-ubyte.gz'} into " in str(info.value)
    assert "(No space left on device). Fix: free some space there" in str(info.value)
    assert not _leftovers(tmp_path)


# -- divergence ----------------------------------------------------------------------------------


def _trainer(step: int = 0) -> SimpleNamespace:
    """What the guards read from a Trainer."""
    optimizer = torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))], lr=1e8)
    return SimpleNamespace(
        current_epoch=0,
        global_step=step,
        optimizers=[optimizer],
        callbacks=[],
        checkpoint_callback=None,
        ckpt_path=None,
        sanity_checking=False,
        callback_metrics={},
    )


def _feed(guard: DivergenceGuard, trainer: SimpleNamespace, losses: list[float]) -> None:
    for value in losses:
        trainer.global_step += 1
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_divergence_is_checked_every_n_steps_and_names_the_first_bad_step(bad: float) -> None:
    guard, trainer = DivergenceGuard(check_every_n_steps=4), _trainer()
    _feed(guard, trainer, [2.3, bad, 2.0])  # nothing is read from the device yet
    with pytest.raises(Diverged) as info:
        _feed(guard, trainer, [bad])
    assert info.value.record["diverged_at"] == {"epoch": 0, "step": 2, "batch": 0, "loss": str(bad)}
    assert f"Training diverged with Adagrad, lr 1e+08: the training loss was {bad}" in str(
        info.value
    )
    assert info.value.exit_code == 3 and info.value.status == "diverged"


def test_divergence_is_checked_before_validation_so_no_bad_checkpoint_is_written() -> None:
    guard, trainer = DivergenceGuard(check_every_n_steps=50), _trainer()
    _feed(guard, trainer, [2.3, float("nan")])
    with pytest.raises(Diverged, match="No checkpoint had been written yet"):
        guard.on_validation_start(trainer, None)  # type: ignore[arg-type]


def test_max_loss_also_stops_a_loss_that_explodes_but_stays_finite() -> None:
    guard, trainer = DivergenceGuard(check_every_n_steps=2, max_loss=1e6), _trainer()
    _feed(guard, trainer, [2.3, 1e3])
    with pytest.raises(Diverged, match="above max_loss=1e\\+06"):
        _feed(guard, trainer, [4e30, 2.0])
    _feed(DivergenceGuard(check_every_n_steps=2), _trainer(), [4e30, 4e30])  # default: finite ok


# -- interruption --------------------------------------------------------------------------------


def test_first_signal_asks_to_stop_at_a_batch_boundary_second_stops_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signals() as request:
        StopOnSignal().on_train_batch_end(_trainer())  # no signal: nothing happens
        os.kill(os.getpid(), signal.SIGINT)
        assert request.signum == signal.SIGINT  # recorded, no KeyboardInterrupt
        with pytest.raises(Interrupted) as info:
            StopOnSignal().on_train_batch_end(_trainer(step=7))
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert info.value.exit_code == 130 and info.value.status == "interrupted"
    assert info.value.record["interrupted_at"] == {"epoch": 0, "step": 7, "signal": "SIGINT"}
    assert "No epoch had finished, so there is no checkpoint" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is before and request.signum is None


class _CtrlCWhileTesting(pl.Callback):
    """Sends this process a real SIGINT at the first test batch, as Ctrl-C would."""

    def __init__(self) -> None:
        self.sent = False

    def on_test_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_testing_keeps_every_finished_epoch_in_the_record(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, tmp_path: Path
) -> None:
    """Testing loads the best checkpoint, callbacks' state included: an earlier epoch's
    history must not replace the run's own."""
    cfg = compose_cfg(
        [
            f"paths.data_dir={synthetic_data_dir}",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0",
            "callbacks.progress_bar.enabled=false",
            "logger=csv",
            "callbacks.model_checkpoint.mode=min",  # the worst epoch as "best": an early one
        ]
    )
    ctrl_c = _CtrlCWhileTesting()
    with pytest.raises(SystemExit) as info:
        run_entry(lambda c: train(c, extra_callbacks=[ctrl_c]), cfg)
    assert ctrl_c.sent and info.value.code == 130
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "interrupted" and "during test" in record["error"]
    assert record["epochs"] == 3 and [e["epoch"] for e in record["history"]] == [0, 1, 2]
    tested = [p.name for p in (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")]
    assert len(tested) == 1 and not tested[0].startswith("epoch002")  # an earlier epoch
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"  # not the tested one
    assert record["last_checkpoint"] == str(last) and str(last) in record["resume_command"]


def test_loading_a_checkpoint_fills_in_the_history_and_never_drops_later_epochs() -> None:
    saved = RunHistory()
    saved.epochs = [{"epoch": 0, "val/acc": 0.5}, {"epoch": 1, "val/acc": 0.9}]
    resumed = RunHistory()
    resumed.load_state_dict(saved.state_dict())  # resuming: the epochs before the checkpoint
    assert resumed.epochs == saved.epochs
    resumed.epochs.append({"epoch": 2, "val/acc": 0.8})
    resumed.load_state_dict({"epochs": saved.epochs[:1]})  # testing an earlier best checkpoint
    assert [e["epoch"] for e in resumed.epochs] == [0, 1, 2]


def test_a_run_folder_that_vanishes_is_one_line_and_its_writer_threads_stay_quiet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    cfg = OmegaConf.create({"paths": {"output_dir": str(run)}})

    def task(cfg: DictConfig) -> None:
        shutil.rmtree(run)

        def write_events() -> None:  # what TensorBoard's writer thread does next
            (run / "tensorboard" / "events").write_bytes(b"")

        writer = threading.Thread(target=write_events)
        writer.start()
        writer.join()
        (run / "metrics.json").write_text("{}")

    with pytest.raises(SystemExit) as info:
        run_entry(task, cfg)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"Error: The run folder {run} vanished")
    assert err.count("\n") == 1 and "Exception in thread" not in err
    assert not run.exists(), "no new folder is made for the record"


# -- exact resumption ----------------------------------------------------------------------------


def test_the_sampler_order_is_drawn_when_iterated_not_when_the_iterator_is_made() -> None:
    sampler = IndexBatchSampler(100, 10, shuffle=True, seed=3)
    sampler.set_epoch(1)
    expected = torch.cat(list(sampler))
    sampler.set_epoch(0)
    early = iter(sampler)  # Lightning does this before set_epoch() when it resumes
    sampler.set_epoch(1)
    assert torch.equal(torch.cat(list(early)), expected)


def test_the_best_val_accuracy_is_part_of_the_checkpoint() -> None:
    def model() -> ImageClassifier:
        return ImageClassifier(
            {"_target_": "cnnlab.models.nets.net_1"}, (1, 28, 28), num_classes=10
        )

    trained = model()
    trained.val_acc_best(torch.tensor(0.75))
    resumed = model()
    resumed.load_state_dict(trained.state_dict())
    assert float(resumed.val_acc_best.max_value) == 0.75


def test_a_resumed_run_keeps_the_best_checkpoint_in_its_own_folder(tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    old.mkdir(parents=True)
    best = old / "epoch000-val_acc0.9000.ckpt"
    best.write_bytes(b"weights")
    saved = ModelCheckpoint(dirpath=old, monitor="val/acc", mode="max")
    saved.best_model_path, saved.best_model_score = str(best), torch.tensor(0.9)
    saved.best_k_models, saved.kth_best_model_path = {str(best): torch.tensor(0.9)}, str(best)
    callback = ResumableModelCheckpoint(dirpath=new, monitor="val/acc", mode="max")
    assert callback.state_key == saved.state_key  # checkpoints of either class resume
    callback.load_state_dict(saved.state_dict())
    assert callback.best_model_path == str(new / best.name)
    assert (new / best.name).read_bytes() == b"weights" and best.is_file()
    assert float(callback.best_model_score) == pytest.approx(0.9)
    assert list(callback.best_k_models) == [str(new / best.name)]


def test_pickle_of_cifar_meta_without_label_names_is_named(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path / "cifar-10-batches-py", train=50, test=20)
    (folder / "batches.meta").write_bytes(pickle.dumps({"num_vis": 3072}))
    with pytest.raises(DatasetCorruptError, match=r"batches\.meta has no 'label_names'"):
        CIFAR10DataModule(data_dir=tmp_path, verify_md5=False).setup()


def test_results_import_no_torch() -> None:
    """cnnlab.results (the records, the report, the sweep's verdict) must not pull in torch."""
    code = (
        "import sys, cnnlab.results.record, cnnlab.results.report, cnnlab.results.sweep_summary;"
        " print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr
