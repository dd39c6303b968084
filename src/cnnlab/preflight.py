"""Checks that need the built datamodule and model, run after building them and before `fit`.

`cnnlab.config.validate_train_config` checks single values; these check that the pieces fit
together (the net and the dataset, a checkpoint to resume and this run), so a mismatch is
reported as one message naming the key instead of a shape error deep inside PyTorch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from cnnlab.config import to_plain
from cnnlab.data import ImageDataModule
from cnnlab.errors import ConfigError
from cnnlab.module import ImageClassifier

log = logging.getLogger(__name__)

# Keys that would pin the net's input or output size; cnnlab takes both from the dataset.
_PINNED_SHAPE_KEYS = ("model.sample_shape", "model.net.sample_shape")
_PINNED_CLASS_KEYS = ("model.num_classes", "model.net.nb_classes")
# Settings whose change between a checkpoint and its resumption breaks exact resumption.
_RESUME_SECTIONS = ("data", "model", "optimizer", "lr_scheduler", "seed")
_LOCATION_KEYS = {"data.data_dir", "data.download", "data.system_dirs"}


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
    return {k: v for k, v in flat.items() if k not in _LOCATION_KEYS}


def read_checkpoint(path: Path, what_to_give: str) -> Any:
    """The checkpoint file's contents, or one clear error saying why it cannot be used."""
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: {what_to_give}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ConfigError(
            f"ckpt_path={path} could not be read ({type(err).__name__}: {err}); it is not a "
            "checkpoint, or it is damaged"
        ) from err


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
    )
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "loops" not in checkpoint:
        raise ConfigError(f"ckpt_path={ckpt_path} is not a Lightning training checkpoint")

    ours = model.state_dict()
    clashes = [
        f"{key}: {tuple(value.shape)} in the checkpoint, {tuple(ours[key].shape)} here"
        for key, value in state.items()
        if key in ours and tuple(value.shape) != tuple(ours[key].shape)
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
        trained = checkpoint.get("hyper_parameters", {})
        built_for = (
            f" (it holds {trained.get('net', {}).get('_target_', 'a net')} for "
            f"{_shape(trained['sample_shape'])} images and {trained.get('num_classes')} classes)"
            if "sample_shape" in trained
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
