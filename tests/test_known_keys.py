"""A mistyped key or option is one line naming the closest valid ones (difflib), whether
Hydra refuses it while composing or the object it configures would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from cnnlab.errors import ConfigError, closest_names
from cnnlab.training.checks import validate_train_config
from cnnlab.training.entry import launch_problem

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+trainer.max_epoch=2",
            "trainer.max_epoch is not an argument of Trainer: did you mean trainer.max_epochs?",
        ),
        (
            "+data.batchsize=64",
            "data.batchsize is not an argument of MNISTDataModule: did you mean data.batch_size?",
        ),
        ("+optimizer.learning_rate=0.1", "optimizer.learning_rate is not an argument of Adadelta"),
        (
            "+callbacks.early_stopping.patiense=3",
            "callbacks.early_stopping.patiense is not an argument of EarlyStopping: did you "
            "mean callbacks.early_stopping.patience?",
        ),
    ],
)
def test_an_added_key_its_object_does_not_take_names_the_one_meant(
    compose_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_train_config(compose_cfg([override]))
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["trainer.max_epoch=2"],
            "trainer.max_epoch is not a config key: did you mean trainer.max_epochs?",
        ),
        (
            ["optimizer=adamm"],
            "optimizer=adamm: optimizer has no option adamm: did you mean adam? (its options: "
            "adadelta, adadelta_keras, adagrad, adagrad_keras, adam, adam_keras, sgd)",
        ),
        (
            ["trainer.barebones=true"],
            "trainer.barebones is not in the config yet: add it with +trainer.barebones=true",
        ),
        (["-m", "seeed=1,2"], "seeed is not a config key: did you mean seed?"),
    ],
)
def test_a_key_or_option_hydra_refuses_names_the_one_meant(argv: list[str], message: str) -> None:
    assert launch_problem(CONF, ["src/train.py", *argv]) == message


def test_evaluate_names_its_own_keys() -> None:
    problem = launch_problem(CONF, ["src/evaluate.py", "batchsize=5"], "eval")
    assert problem == "batchsize is not a config key: did you mean batch_size?"


def test_only_names_nearly_as_close_as_the_closest_are_offered() -> None:
    assert closest_names("max_epoch", ["max_epochs", "min_epochs", "max_steps"]) == ["max_epochs"]
    assert closest_names("zzz", ["max_epochs"]) == []
