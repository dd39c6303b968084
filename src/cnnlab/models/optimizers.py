"""The optimizer's speed flags, decided when it is built, from the device and the torch at hand.

Which optimizers have a fused kernel differs by torch version and device (Adagrad's is CPU-only
in torch 2.11 and CUDA too in 2.14; Adam's CPU kernel came in 2.4; Adadelta has none), and a
flag the kernel lacks fails at the first step. So configs ask for `fused: auto` (or `foreach`),
and the flag is tried once per optimizer, device and dtype on a throwaway parameter: used where
it works, dropped where it does not, with one log line when it was asked for explicitly.
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from collections.abc import Callable, Iterable

import torch

log = logging.getLogger(__name__)

FLAGS = ("fused", "foreach")
AUTO = "auto"


def _accepts(optimizer: type, flag: str) -> bool:
    return flag in inspect.signature(optimizer).parameters


@functools.cache
def flag_works(
    optimizer: type[torch.optim.Optimizer], flag: str, device: torch.device, dtype: torch.dtype
) -> bool:
    """Whether `optimizer(..., flag=True)` builds and steps parameters of `device` and `dtype`
    with this torch (tried on a throwaway parameter, once per process)."""
    if not _accepts(optimizer, flag):
        return False
    param = torch.zeros(4, device=device, dtype=dtype, requires_grad=True)
    param.grad = torch.ones_like(param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer([param], lr=1e-3, **{flag: True}).step()
    except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError):
        return False
    return True


def build_optimizer(
    factory: Callable[..., torch.optim.Optimizer], params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """`factory(params)`, with its `fused` / `foreach` flags (True, False, None or "auto")
    settled for these parameters: "auto" and True become True where the flag works here;
    otherwise the flag is left to torch's default, and an explicit True says so in one line."""
    params = list(params)
    if not isinstance(factory, functools.partial) or not isinstance(factory.func, type):
        return factory(params)
    optimizer, kwargs = factory.func, dict(factory.keywords)
    first = next((p for p in params if isinstance(p, torch.Tensor) and p.requires_grad), None)
    for flag in FLAGS:
        wanted = kwargs.get(flag)
        if wanted not in (True, AUTO):
            continue
        if flag == "foreach" and kwargs.get("fused") is True:
            kwargs[flag] = None  # one or the other: the fused kernel is the faster
            continue
        if first is not None and flag_works(optimizer, flag, first.device, first.dtype):
            kwargs[flag] = True
            continue
        if _accepts(optimizer, flag):
            kwargs[flag] = None
        else:
            kwargs.pop(flag)
        if wanted is True:
            where = f"{first.device.type} {first.dtype}" if first is not None else "these"
            log.info(
                "%s: %s=True is not available for %s parameters with torch %s; using its default",
                optimizer.__name__,
                flag,
                where,
                torch.__version__.split("+")[0],
            )
    return optimizer(params, *factory.args, **kwargs)
