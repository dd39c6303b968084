"""Config checks that run before any data is read or any step is taken."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import CnnlabError, ConfigError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "gelu")  # those of cnnlab.nets


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
    value = _get(cfg, key)
    if value is None:
        return
    try:
        valid = ok(value)
    except (TypeError, ValueError):  # e.g. data.batch_size=abc
        valid = False
    if not valid:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def validate_train_config(cfg: DictConfig) -> None:
    """Reject values that would fail late (or silently train nonsense) with one clear message."""
    _check(cfg, "data.batch_size", lambda v: int(v) == v and v >= 1, "it must be an integer >= 1")
    _check(
        cfg,
        "data.eval_batch_size",
        lambda v: int(v) == v and v >= 1,
        "it must be an integer >= 1 (or null for the default)",
    )
    _check(
        cfg,
        "data.val_fraction",
        lambda v: 0 < float(v) < 1,
        "it must lie strictly between 0 and 1 (the seed uses 0.1 for MNIST, 0.2 for CIFAR-10)",
    )
    _check(
        cfg,
        "data.val_split",
        lambda v: v in ("random", "last"),
        "use 'random' (seeded subset) or 'last' (Keras' validation_split)",
    )
    _check(
        cfg,
        "trainer.max_epochs",
        lambda v: int(v) == v and (v >= 1 or v == -1),
        "it must be an integer >= 1 (or -1 for no limit)",
    )
    _check(cfg, "optimizer.lr", lambda v: float(v) > 0, "the learning rate must be > 0")
    _check(cfg, "model.net.init", lambda v: v in ("torch", "keras"), "use 'torch' or 'keras'")
    _check(
        cfg,
        "model.net.activation",
        lambda v: v in ACTIVATIONS,
        f"use one of {', '.join(ACTIVATIONS)}",
    )
    hidden = _get(cfg, "model.net.hidden_sizes")
    if hidden is not None and (
        not OmegaConf.is_list(hidden) or not all(isinstance(h, int) and h >= 1 for h in hidden)
    ):
        raise ConfigError(
            f"model.net.hidden_sizes={hidden!r} is invalid: give a list of positive integers, "
            "e.g. [128] or [40,40]"
        )


def to_plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as plain Python values, for JSON and checkpoints."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
    return dict(cfg)


def full_error_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def as_user_error(err: Exception) -> Exception:
    """Unwrap Hydra's InstantiationException: the config could not be turned into an object.

    A user error inside it is returned as is; any other cause (an unknown activation, an
    unexpected keyword, a GPU asked for on a machine without one) becomes a ConfigError
    naming the config key, so it is reported in one line like other bad values.
    """
    if not isinstance(err, InstantiationException):
        return err
    root: BaseException = err
    while isinstance(root, InstantiationException) and root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, CnnlabError):
        return root
    message = str(err)
    key = message.rsplit("full_key: ", 1)[1].strip() if "full_key: " in message else "config"
    cause = str(root) if root is not err else message.split("\n", 1)[-1]
    return ConfigError(f"{key}: could not be built from the config: {type(root).__name__}: {cause}")
