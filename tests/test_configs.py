"""Every option of every config group composes and instantiates; presets say what they mean."""

from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.data import ImageDataModule
from cnnlab.errors import ConfigError
from cnnlab.models.classifier import ImageClassifier
from cnnlab.models.optimizers import build_optimizer
from cnnlab.training.checks import validate_train_config
from cnnlab.training.run import instantiate_callbacks, instantiate_loggers

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "model", "optimizer", "trainer", "logger", "callbacks", "experiment", "debug"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL_OPTIONS = [(g, o) for g in GROUPS for o in _options(g)]
# logger options whose package is an optional extra (tests/test_conventions.py covers them)
OPTIONAL_LOGGER_PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}


def test_the_config_groups_and_their_options_exist() -> None:
    assert {"mnist", "cifar10", "fashion_mnist"} <= set(_options("data"))
    assert {"net_1", "net_2"} <= set(_options("model"))
    assert {"adadelta", "adam", "adagrad", "sgd"} <= set(_options("optimizer"))
    assert {"default", "cpu", "gpu"} <= set(_options("trainer"))
    assert {"tensorboard", "csv"} <= set(_options("logger"))
    experiments = {"assignment_mnist", "assignment_cifar10", "assignment_models"}
    assert experiments <= set(_options("experiment"))
    assert "fast" in _options("debug")


def _build(cfg: DictConfig) -> tuple[ImageDataModule, ImageClassifier, pl.Trainer]:
    validate_train_config(cfg)
    dm = instantiate(cfg.data)
    model = instantiate(
        cfg.model,
        _recursive_=False,
        sample_shape=dm.sample_shape,
        num_classes=dm.num_classes,
        optimizer=instantiate(cfg.optimizer),
    )
    callbacks = instantiate_callbacks(cfg.callbacks)
    trainer_cfg = cfg.trainer
    missing = {"gpu": not torch.cuda.is_available(), "mps": not torch.backends.mps.is_available()}
    if missing.get(trainer_cfg.accelerator):
        trainer_cfg.accelerator = "cpu"  # compose and build everything else on this machine
    trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=instantiate_loggers(cfg.logger))
    return dm, model, trainer


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_instantiates(
    compose_cfg: Callable[..., DictConfig], group: str, option: str
) -> None:
    if group == "logger" and option in OPTIONAL_LOGGER_PACKAGES:  # optional extras
        pytest.importorskip(OPTIONAL_LOGGER_PACKAGES[option])
    cfg = compose_cfg([f"{group}={option}"])
    dm, model, trainer = _build(cfg)
    assert isinstance(model.configure_optimizers(), torch.optim.Optimizer)
    assert model(torch.zeros(2, *dm.sample_shape)).shape == (2, dm.num_classes)
    assert trainer.max_epochs >= 1


def test_default_run_is_the_assignments_first_experiment(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    cfg = compose_cfg()
    assert cfg.data._target_.endswith("MNISTDataModule")
    assert cfg.model.net._target_ == "cnnlab.models.nets.net_1"
    assert cfg.optimizer._target_ == "torch.optim.Adadelta"
    assert (cfg.trainer.max_epochs, cfg.data.batch_size, cfg.data.val_fraction) == (30, 32, 0.1)
    assert cfg.trainer.accelerator == "auto"


@pytest.mark.parametrize(
    ("experiment", "dataset", "batch", "val"),
    [
        ("assignment_mnist", "MNISTDataModule", 32, 0.1),
        ("assignment_cifar10", "CIFAR10DataModule", 128, 0.2),
    ],
)
def test_assignment_presets_use_keras_values(
    compose_cfg: Callable[..., DictConfig], experiment: str, dataset: str, batch: int, val: float
) -> None:
    cfg = compose_cfg([f"experiment={experiment}"])
    assert cfg.data._target_.endswith(dataset)
    assert (cfg.data.batch_size, cfg.data.val_fraction, cfg.data.val_split) == (batch, val, "last")
    assert cfg.trainer.max_epochs == 30
    assert cfg.model.net._target_ == "cnnlab.models.nets.net_1" and cfg.model.net.init == "keras"
    assert cfg.optimizer._target_ == "torch.optim.Adadelta"
    assert (cfg.optimizer.lr, cfg.optimizer.rho, cfg.optimizer.eps) == (0.001, 0.95, 1e-7)


def test_plain_optimizers_are_pytorch_defaults(compose_cfg: Callable[..., DictConfig]) -> None:
    params = [torch.nn.Parameter(torch.zeros(1))]
    for option, cls in [
        ("adadelta", torch.optim.Adadelta),
        ("adam", torch.optim.Adam),
        ("adagrad", torch.optim.Adagrad),
    ]:
        factory = instantiate(compose_cfg([f"optimizer={option}"]).optimizer)
        ours = build_optimizer(factory, params).defaults
        theirs = cls(params).defaults
        for key in ("lr", "eps", "rho", "initial_accumulator_value", "betas"):
            if key in theirs:
                got = tuple(ours[key]) if key == "betas" else ours[key]
                assert got == theirs[key], (option, key)


def test_early_stopping_is_a_switch(compose_cfg: Callable[..., DictConfig]) -> None:
    off = instantiate_callbacks(compose_cfg().callbacks)
    on = instantiate_callbacks(
        compose_cfg(
            ["callbacks.early_stopping.enabled=true", "callbacks.early_stopping.patience=2"]
        ).callbacks
    )
    stoppers = [c for c in on if isinstance(c, pl.callbacks.EarlyStopping)]
    assert not any(isinstance(c, pl.callbacks.EarlyStopping) for c in off)
    assert len(stoppers) == 1 and stoppers[0].patience == 2 and stoppers[0].monitor == "val/acc"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("optimizer.lr=0", "optimizer.lr"),
    ],
)
def test_bad_values_are_rejected_before_training(
    compose_cfg: Callable[..., DictConfig], override: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        validate_train_config(compose_cfg([override]))
