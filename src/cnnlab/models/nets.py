"""The assignment's two CNNs, layer for layer, with Keras' 'same' padding semantics.

A net is any function `(sample_shape, num_classes, **config) -> nn.Module` returning logits;
`conf/model/*.yaml` names it in `net._target_` (docs/extending.md adds one).

Nets take normalised float images in PyTorch's (N, C, H, W) layout and return
logits; the assignment's final softmax lives in the LightningModule's predict step,
so training uses the numerically stable cross-entropy on logits (same maths).

Each net checks its own settings (`check_head_settings` for these), so another net's
`activation` or `init` can mean whatever that net says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from torch import nn

from cnnlab.errors import check_value

Activation = Literal["relu", "tanh", "sigmoid", "elu", "gelu"]
Init = Literal["torch", "keras"]
INITS = ("torch", "keras")  # PyTorch's own initialisation, or Keras' (glorot-uniform, zero bias)

# The activations a dense head can use.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after): the extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_same(in_ch: int, out_ch: int, size: tuple[int, int], stride: int) -> list[nn.Module]:
    (top, bottom), (left, right) = (same_padding(s, 3, stride) for s in size)
    if top == bottom and left == right:
        return [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=(top, left))]
    return [nn.ZeroPad2d((left, right, top, bottom)), nn.Conv2d(in_ch, out_ch, 3, stride=stride)]


def _check_shape(sample_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"sample_shape must be (channels, height, width), got {tuple(sample_shape)}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return shape  # type: ignore[return-value]


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_head_settings(hidden_sizes: Any, activation: Any, init: Any = "torch") -> None:
    """A ConfigError naming the `model.net.*` key, before any layer is built: these nets'
    settings are checked where they are read, not by the run's config check."""
    check_value(
        "model.net.hidden_sizes",
        hidden_sizes,
        lambda v: not isinstance(v, str | bytes) and all(_is_size(h) for h in v),
        "give a list of positive integers, e.g. [128] or [40,40]",
    )
    check_value(
        "model.net.activation",
        activation,
        lambda v: v in ACTIVATIONS,
        f"use one of {', '.join(ACTIVATIONS)}",
    )
    check_value("model.net.init", init, lambda v: v in INITS, f"use one of {', '.join(INITS)}")


def dense_head(
    in_features: int, hidden_sizes: Sequence[int], activation: Activation, num_classes: int
) -> list[nn.Module]:
    """Flatten -> hidden Dense layers -> logits; the assignment's "models A-F" vary this part.
    Its settings are checked by `check_head_settings`."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, int(hidden)), ACTIVATIONS[activation]()]
        width = int(hidden)
    layers.append(nn.Linear(width, num_classes))
    return layers


def keras_init_(module: nn.Module) -> nn.Module:
    """Keras' defaults: glorot-uniform kernels and zero biases for every conv and dense layer."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def _finish(layers: list[nn.Module], init: Init) -> nn.Sequential:
    net = nn.Sequential(*layers)
    if init == "keras":
        keras_init_(net)
    return net


def _two_conv_net(
    sample_shape: Sequence[int],
    num_classes: int,
    downsample: Literal["pool", "stride"],
    hidden_sizes: Sequence[int] = (128,),
    activation: Activation = "relu",
    init: Init = "torch",
) -> nn.Sequential:
    """The assignment's two convolutions, halved by pooling (net_1) or a strided conv (net_2),
    then the dense head: `hidden_sizes` and `activation` (the assignment's models A-F vary
    these) and `init` ('torch', or 'keras' for Keras' glorot-uniform kernels and zero biases)."""
    channels, height, width = _check_shape(sample_shape, num_classes)
    check_head_settings(hidden_sizes, activation, init)
    halved = (math.ceil(height / 2), math.ceil(width / 2))
    layers: list[nn.Module] = [
        *_conv_same(channels, 32, (height, width), 1),
        nn.ReLU(),
        *_conv_same(32, 64, (height, width), 2 if downsample == "stride" else 1),
        nn.ReLU(),
    ]
    if downsample == "pool":
        # Keras' 'same' max-pooling pads the far edge: PyTorch's ceil_mode is the same window set.
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    layers += dense_head(64 * halved[0] * halved[1], hidden_sizes, activation, num_classes)
    return _finish(layers, init)


def net_1(sample_shape: Sequence[int], num_classes: int, **head: Any) -> nn.Sequential:
    """Conv(32,3x3,same,relu) -> Conv(64,3x3,same,relu) -> MaxPool(2x2,same) -> Dense head
    (`head`: hidden_sizes, activation, init; see `_two_conv_net`)."""
    return _two_conv_net(sample_shape, num_classes, "pool", **head)


def net_2(sample_shape: Sequence[int], num_classes: int, **head: Any) -> nn.Sequential:
    """As net_1 without pooling; the second conv downsamples with stride 2 instead."""
    return _two_conv_net(sample_shape, num_classes, "stride", **head)


def mlp(
    sample_shape: Sequence[int],
    num_classes: int,
    hidden_sizes: Sequence[int] = (40, 40),
    activation: Activation = "relu",
    init: Init = "torch",
) -> nn.Sequential:
    """Flatten -> hidden Dense layers -> logits: the assignment's models A-F on their own."""
    channels, height, width = _check_shape(sample_shape, num_classes)
    check_head_settings(hidden_sizes, activation, init)
    return _finish(
        dense_head(channels * height * width, hidden_sizes, activation, num_classes), init
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
