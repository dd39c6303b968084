"""The model summary as Keras' `model.summary()` prints it: each layer, its output shape and
parameters, and the total (the assignment's Figs. 1-3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def keras_summary(net: nn.Module, sample_shape: Sequence[int], title: str = "") -> str:
    """Layers in order with their output shapes (batch as None) for one input of `sample_shape`."""
    rows: list[tuple[str, str, int]] = []
    hooks = [
        layer.register_forward_hook(
            lambda layer, _, out, name=name: rows.append(
                (
                    f"{name} ({type(layer).__name__})",
                    str((None, *out.shape[1:])),
                    sum(p.numel() for p in layer.parameters()),
                )
            )
        )
        for name, layer in net.named_modules()
        if not list(layer.children())
    ]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, *sample_shape, device=next(net.parameters()).device))
    finally:
        net.train(was_training)
        for hook in hooks:
            hook.remove()
    width = max([len(r[0]) for r in rows] + [20]) + 2
    rule = "=" * (width + 40)
    lines = [f'Model: "{title}"' if title else "", rule]
    lines.append(f"{'Layer (type)':<{width}}{'Output Shape':<28}{'Param #':>12}")
    lines.append(rule)
    lines += [f"{name:<{width}}{shape:<28}{params:>12,}" for name, shape, params in rows]
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    lines += [
        rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
    ]
    return "\n".join(line for line in lines if line or title) + "\n"
