"""Checkpoints read as data: sizes checked before anything is read, tensors and plain values
only, and a classifier rebuilt only from the nets the project's configs name.

A checkpoint may come from someone else. `torch.load(weights_only=True)` builds nothing but
tensors and plain values, yet a plain dict saying `{"_target_": ...}` would still be built by
Hydra's `instantiate`: the net's config is checked against `conf/model/` first
(`cnnlab.trust`). A zip entry that inflates, or tensors far larger than the model they claim to
be, are refused before they are allocated.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from hydra.utils import instantiate

from cnnlab.errors import ConfigError
from cnnlab.trust import plain_config, trusted_targets

#: A training checkpoint holds the weights, the optimizer's state (Adam and Adadelta: two
#: tensors per weight) and small extras; past this many times the model, it is not one.
MAX_TIMES_MODEL = 4
SLACK_BYTES = 16 * 2**20

Model = TypeVar("Model", bound=torch.nn.Module)


def stored_tensor_bytes(path: Path) -> int:
    """The bytes of tensor data `path` declares, checked against the file before it is read.

    torch.save writes a zip of uncompressed entries: a compressed entry (which could inflate
    to any size) or entries declaring more bytes than the file holds are refused.
    """
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        return size  # torch's legacy format: tensors are read as stored, no more than the file
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ConfigError(f"ckpt_path={path} is a damaged zip file ({err}); it is refused") from err
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise ConfigError(
            f"ckpt_path={path} holds compressed entries ({packed[0]}), which torch.save never "
            "writes and which could inflate to any size: it is refused"
        )
    declared = sum(e.file_size for e in entries)
    if declared > size:
        raise ConfigError(
            f"ckpt_path={path} declares {declared:,} bytes in a file of {size:,}: it is damaged "
            "or crafted, and refused"
        )
    return sum(e.file_size for e in entries if "/data/" in e.filename)


def check_fits_model(path: Path, model_bytes: int) -> None:
    """Refuse a checkpoint whose tensors are far more than a model of `model_bytes` needs."""
    stored = stored_tensor_bytes(path)
    limit = MAX_TIMES_MODEL * model_bytes + SLACK_BYTES
    if stored > limit:
        raise ConfigError(
            f"ckpt_path={path} holds {stored / 2**20:,.1f} MiB of tensors, more than a "
            f"checkpoint of this model can ({limit / 2**20:,.1f} MiB at most for "
            f"{model_bytes / 2**20:,.1f} MiB of weights): it is refused"
        )


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def read_checkpoint(path: Path, what_to_give: str, model: torch.nn.Module | None = None) -> Any:
    """The checkpoint file's contents, or one clear error saying why it cannot be used.

    Read with `weights_only=True`: tensors and plain values only, so a checkpoint from
    elsewhere cannot run code while it loads; every other load (resuming, testing) passes the
    same flag to Lightning. Its size is checked first (against `model` when given), and its
    tensors are mapped from the file, not copied, so reading allocates little.
    """
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path} does not exist: {what_to_give}")
    if model is not None:
        check_fits_model(path, module_bytes(model))
    else:
        stored_tensor_bytes(path)
    try:
        return torch.load(
            path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
        )
    except pickle.UnpicklingError as err:
        if "global" not in str(err):  # no object it would build: the file is not a pickle
            raise ConfigError(
                f"ckpt_path={path} could not be read (UnpicklingError: {err}); it is not a "
                "checkpoint, or it is damaged"
            ) from err
        raise ConfigError(
            f"ckpt_path={path} holds objects other than tensors and plain values, which could "
            "run code while loading, so it is refused: use a checkpoint written by cnnlab "
            f"({_refused_global(err)})"
        ) from err
    except Exception as err:
        raise ConfigError(
            f"ckpt_path={path} could not be read ({type(err).__name__}: {err}); it is not a "
            "checkpoint, or it is damaged"
        ) from err


def _refused_global(err: Exception) -> str:
    """The line of torch's message that names what the file would have built."""
    lines = [line for line in str(err).splitlines() if "global" in line]
    line = lines[0] if lines else str(err).splitlines()[-1]
    return line.split(" Please use", 1)[0].strip()[:200]


def _section(checkpoint: Any, key: str, path: Path) -> Mapping[str, Any]:
    value = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
    if not isinstance(value, Mapping):
        raise ConfigError(f"ckpt_path={path} has no '{key}': it was not written by cnnlab")
    return value


def load_classifier(
    path: Path,
    make: Callable[..., Model],
    checkpoint: Any = None,
    sample_shape: Iterable[int] | None = None,
    num_classes: int | None = None,
    extra_nets: Iterable[str] = (),
) -> Model:
    """The classifier a checkpoint holds, rebuilt from the project's own net configs.

    `sample_shape` and `num_classes` come from the dataset when known (evaluation), so the net
    is built at the data's size, whatever the file says; `extra_nets` extends the allowed
    `_target_`s (config, never the file). `make` is the classifier's class, given by the caller
    (`ImageClassifier.load_from_checkpoint` among them), so this module needs none of it.
    """
    fix = (
        "the file was not written by cnnlab's train.py, or names a net that conf/model/ does "
        "not (add yours there, or to eval's trusted_targets)"
    )
    if checkpoint is None:
        checkpoint = read_checkpoint(path, "give a checkpoint written by cnnlab's train.py")
    hparams = _section(checkpoint, "hyper_parameters", path)
    state = _section(checkpoint, "state_dict", path)
    allowed = trusted_targets("model", "net._target_", extra_nets)
    net = plain_config(hparams.get("net"), f"{path}: hyper_parameters.net", allowed, fix)
    saved_shape, saved_classes = hparams.get("sample_shape"), hparams.get("num_classes")
    shape = list(sample_shape) if sample_shape is not None else saved_shape
    classes = num_classes if num_classes is not None else saved_classes
    if [saved_shape, saved_classes] != [shape, classes]:
        raise ConfigError(
            f"ckpt_path={path} holds a net for {saved_shape} images and {saved_classes} classes, "
            f"but the data has {shape} and {classes}: evaluate it on the dataset it was trained on"
        )
    if not (
        isinstance(shape, list)
        and 1 <= len(shape) <= 4
        and all(isinstance(s, int) and 1 <= s <= 4096 for s in shape)
        and isinstance(classes, int)
        and 1 <= classes <= 100_000
    ):
        raise ConfigError(f"ckpt_path={path}: hyper_parameters.sample_shape or num_classes: {fix}")
    names = hparams.get("class_names")
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        names = None
    # The net's size, known before any weight is allocated (on the meta device).
    with torch.device("meta"):
        try:
            planned = instantiate(net, sample_shape=shape, num_classes=classes)
        except Exception as err:
            raise ConfigError(
                f"ckpt_path={path}: hyper_parameters.net cannot be built "
                f"({type(err).__name__}: {err}); {fix}"
            ) from err
    check_fits_model(path, module_bytes(planned))
    model = make(
        net=net,
        sample_shape=shape,
        num_classes=classes,
        class_names=names,
    )
    try:
        model.load_state_dict(dict(state))
    except (RuntimeError, TypeError) as err:
        first = str(err).splitlines()[0][:300]
        raise ConfigError(f"ckpt_path={path}: its weights do not fit its net ({first})") from err
    return model
