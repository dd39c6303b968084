"""Checks before training: single config values before anything is built (`validate_train_config`),
then the built pieces against each other before `fit` (`check_before_fit`).

Each mismatch is one message naming the key, not a shape error deep inside PyTorch.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cnnlab.config import is_location_key, to_plain
from cnnlab.data.datamodule import DATA_RULES, ImageDataModule
from cnnlab.errors import ConfigError, check_value
from cnnlab.models.classifier import ImageClassifier
from cnnlab.models.loading import read_checkpoint
from cnnlab.results.record import MONITOR_METRICS, MONITOR_MODES
from cnnlab.speed.cuda_graph import CUDA_GRAPH_CHOICES
from cnnlab.speed.layout import CHANNELS_LAST_CHOICES
from cnnlab.training.extras import run_tags
from cnnlab.training.known_keys import check_known_arguments

log = logging.getLogger(__name__)


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _check(cfg: DictConfig, key: str, ok: Callable[[Any], bool], allowed: str) -> None:
    value = _get(cfg, key)
    if value is not None:
        check_value(key, value, ok, allowed)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_train_config(cfg: DictConfig) -> None:
    """Reject values that would fail late (or silently train nonsense) with one clear message."""
    for name, (ok, allowed) in DATA_RULES.items():
        _check(cfg, f"data.{name}", ok, allowed)
    _check(
        cfg,
        "trainer.max_epochs",
        lambda v: int(v) == v and (v >= 1 or v == -1),
        "it must be an integer >= 1 (or -1 for no limit)",
    )
    # 0 would "complete" without a step and test the untrained weights.
    _check(
        cfg,
        "trainer.max_steps",
        lambda v: _is_int(v) and (v >= 1 or v == -1),
        "it must be an integer >= 1 (or -1 for no limit); 0 would train nothing",
    )
    _check(
        cfg,
        "trainer.limit_train_batches",
        lambda v: (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v <= 1),
        "give a number of batches >= 1 or a fraction of them in (0, 1] (null: all); "
        "0 would train nothing",
    )
    _check(cfg, "optimizer.lr", lambda v: float(v) > 0, "the learning rate must be > 0")
    _check(
        cfg,
        "optimizer.lr",
        lambda v: np.float32(v) * np.float32(1.0) > 0,
        "it rounds to 0 in float32, so no weight would ever change; use a learning rate "
        f">= {np.finfo(np.float32).tiny:.1e}",
    )
    _check(
        cfg,
        "seed",
        lambda v: int(v) == v and 0 <= v < 2**32,
        "a seed must be an integer in 0..4294967295 (2**32 - 1)",
    )
    _check(
        cfg,
        "torch_threads",
        lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "use auto (torch's count, capped by the idle cores) or a number of threads >= 1",
    )
    _check(
        cfg,
        "channels_last",
        lambda v: v in CHANNELS_LAST_CHOICES,
        "use auto (NHWC where oneDNN runs it faster: CPUs with AVX-512), true or false",
    )
    _check(
        cfg,
        "fast_exit",
        lambda v: isinstance(v, bool),
        "use true or false",
    )
    _check(
        cfg,
        "cuda_graph",
        lambda v: v in CUDA_GRAPH_CHOICES,
        "use auto (the captured step on CUDA), true or false",
    )
    # model.net's own settings are the net's to check (cnnlab.models.nets checks its nets'),
    # so a net of your own can take any activation or init it knows (docs/extending.md).
    check_known_arguments(cfg)  # +trainer.max_epoch=2: the arguments meant, in one line
    check_trainer_switches(cfg)
    check_monitor(cfg)
    run_tags(cfg)  # a list of words, or one line saying how to give them
    check_optional_loggers(cfg)


def _callback_enabled(cfg: DictConfig, name: str) -> bool:
    """As `instantiate_callbacks` reads it: present, not null, and not `enabled: false`."""
    conf = _get(cfg, f"callbacks.{name}")
    return conf is not None and bool(conf.get("enabled", True))


def check_trainer_switches(cfg: DictConfig) -> None:
    """The Trainer's checkpoint and progress bar switches agree with the callbacks that
    provide them; otherwise Lightning would add its own checkpoints, or refuse at length."""
    checkpointing = _get(cfg, "trainer.enable_checkpointing")
    saving = _callback_enabled(cfg, "model_checkpoint")
    if checkpointing is not None and bool(checkpointing) != saving:
        fix = "true" if checkpointing else "false"
        raise ConfigError(
            f"trainer.enable_checkpointing={checkpointing} but callbacks.model_checkpoint is "
            f"{'enabled' if saving else 'off'}: set callbacks.model_checkpoint.enabled={fix} "
            "instead (trainer.enable_checkpointing follows it)"
        )
    if _get(cfg, "trainer.enable_progress_bar") is False and _callback_enabled(cfg, "progress_bar"):
        raise ConfigError(
            "trainer.enable_progress_bar=false but callbacks.progress_bar is enabled: set "
            "callbacks.progress_bar.enabled=false instead (trainer.enable_progress_bar follows it)"
        )


# Loggers whose package is an optional extra of cnnlab: the logger's class name -> (the module
# it needs, the extra that installs it). Lightning alone would fail with a requirement string.
OPTIONAL_LOGGERS = {
    "MLFlowLogger": ("mlflow", "mlflow"),
    "WandbLogger": ("wandb", "wandb"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_optional_loggers(cfg: DictConfig, installed: Callable[[str], bool] = _installed) -> None:
    """A logger whose package is not installed is one line naming the extra to install."""
    for name, conf in (_get(cfg, "logger") or {}).items():
        target = str((conf or {}).get("_target_", ""))
        needs = OPTIONAL_LOGGERS.get(target.rsplit(".", 1)[-1])
        if needs is not None and not installed(needs[0]):
            module, extra = needs
            raise ConfigError(
                f"logger.{name} ({target}) needs the package {module}, which is not installed: "
                f'pip install -e ".[{extra}]" (or choose another logger, e.g. logger=tensorboard)'
            )


def check_monitor(cfg: DictConfig) -> None:
    """`monitor` names a validation metric and a direction. A `val/` name the module does not
    log is refused by the checkpoint callback at the first validation, in one line."""
    _check(
        cfg,
        "monitor.metric",
        lambda v: v in MONITOR_METRICS or (isinstance(v, str) and v.startswith("val/")),
        f"use {' or '.join(MONITOR_METRICS)} (or a val/<name> your module logs)",
    )
    _check(
        cfg,
        "monitor.mode",
        lambda v: v in MONITOR_MODES,
        "use max (higher is better, as for val/acc) or min (as for val/loss)",
    )


# Keys that would pin the net's input or output size; cnnlab takes both from the dataset.
_PINNED_SHAPE_KEYS = ("model.sample_shape", "model.net.sample_shape")
_PINNED_CLASS_KEYS = ("model.num_classes", "model.net.num_classes")
# Settings whose change between a checkpoint and its resumption breaks exact resumption.
_RESUME_SECTIONS = ("data", "model", "optimizer", "lr_scheduler", "seed")


def _shape(shape: Any) -> str:
    return "x".join(str(int(s)) for s in shape)


def check_model_fits_data(
    cfg: DictConfig, datamodule: ImageDataModule, model: ImageClassifier
) -> None:
    """The net takes the dataset's images and gives one output per class."""
    shape, classes = list(datamodule.sample_shape), datamodule.num_classes
    about = f"{datamodule.name}, whose images are {_shape(shape)} with {classes} classes"
    for key in _PINNED_SHAPE_KEYS + _PINNED_CLASS_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        wanted = shape if key in _PINNED_SHAPE_KEYS else classes
        plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if plain != wanted:
            raise ConfigError(
                f"{key}={plain} does not fit {about}: remove it (cnnlab takes the input shape "
                "and the class count from the dataset) or choose the data=... it was meant for"
            )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *shape))
    except Exception as err:
        raise ConfigError(
            f"model.net ({cfg.model.net._target_}) does not accept {about}: "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        model.train(was_training)
    if tuple(output.shape) != (2, classes):
        raise ConfigError(
            f"model.net ({cfg.model.net._target_}) gives outputs of shape "
            f"{tuple(output.shape[1:])} for {about}; it must give one logit per class ({classes})"
        )


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_flat(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    flat = _flat({k: config.get(k) for k in _RESUME_SECTIONS})
    return {k: v for k, v in flat.items() if not is_location_key(k)}


def check_resume_checkpoint(cfg: DictConfig, model: ImageClassifier) -> None:
    """`ckpt_path` exists, is a checkpoint, and holds this model; warn if other settings differ."""
    ckpt_path = cfg.get("ckpt_path")
    if not ckpt_path:
        return
    path = Path(str(ckpt_path)).expanduser()
    checkpoint = read_checkpoint(
        path,
        "give the checkpoints/last.ckpt of the run to resume (an interrupted run prints "
        "the full command)",
        model=model,
    )
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "loops" not in checkpoint:
        raise ConfigError(f"ckpt_path={ckpt_path} is not a Lightning training checkpoint")

    ours = model.state_dict()
    clashes = [
        f"{key}: {tuple(getattr(value, 'shape', ()))} in the checkpoint, "
        f"{tuple(ours[key].shape)} here"
        for key, value in state.items()
        if key in ours
        and (not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ours[key].shape))
    ]
    clashes += [
        f"{key}: only in the checkpoint"
        for key in state
        if key.startswith("net.") and key not in ours
    ]
    clashes += [
        f"{key}: not in the checkpoint"
        for key in ours
        if key.startswith("net.") and key not in state
    ]
    if clashes:
        trained = checkpoint.get("hyper_parameters")
        trained = trained if isinstance(trained, dict) else {}
        net = trained.get("net") if isinstance(trained.get("net"), dict) else {}
        shape = trained.get("sample_shape")
        built_for = (
            f" (it holds {str(net.get('_target_', 'a net'))[:100]} for "
            f"{_shape(shape)} images and {trained.get('num_classes')} classes)"
            if isinstance(shape, list) and all(isinstance(s, int) for s in shape)
            else ""
        )
        raise ConfigError(
            f"ckpt_path={ckpt_path} does not fit this run's model{built_for}: "
            f"{'; '.join(clashes[:3])}. Resume with the data=... and model options of the run "
            "that wrote it."
        )

    saved = checkpoint.get("cnnlab_config")
    if not isinstance(saved, dict):
        return
    before, now = _settings(saved), _settings(to_plain(cfg))
    old_optimizer, new_optimizer = before.get("optimizer._target_"), now.get("optimizer._target_")
    if old_optimizer and new_optimizer and old_optimizer != new_optimizer:
        raise ConfigError(
            f"ckpt_path={ckpt_path} was trained with {old_optimizer}, but this run uses "
            f"optimizer {new_optimizer}: resuming restores the optimizer's state, so use the "
            "optimizer=... of the run that wrote it"
        )
    changed = [
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]
    if changed:
        log.warning(
            "Resuming %s with settings that differ from the run that wrote it (%s). The result "
            "will not match an uninterrupted run, and the optimizer's state (its learning rate "
            "included) comes from the checkpoint.",
            ckpt_path,
            "; ".join(changed),
        )


def check_before_fit(cfg: DictConfig, datamodule: ImageDataModule, model: ImageClassifier) -> None:
    """Everything that can be known wrong before the first step."""
    check_model_fits_data(cfg, datamodule, model)
    check_resume_checkpoint(cfg, model)
