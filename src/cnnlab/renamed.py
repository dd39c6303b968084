"""Names that changed in this release: an old one is refused with one line naming the new one,
rather than Hydra's long list of options or a silent miss. To be removed in the next release."""

from __future__ import annotations

import re
from collections.abc import Sequence

# experiment=<old> -> experiment=<new>: "seed" now means the RNG seed only.
RENAMED_EXPERIMENTS = {
    "seed_mnist": "assignment_mnist",
    "seed_cifar10": "assignment_cifar10",
    "seed_models": "assignment_models",
}
# Modules that only raise an ImportError naming their new home (code that imports every
# module of cnnlab skips these).
RENAMED_MODULES = {"cnnlab.seed": "cnnlab.assignment"}
# Config keys that moved: <old>=... -> <new>=... (the speed switches left the model's config,
# so a copied LightningModule carries none of them).
RENAMED_KEYS = {"model.channels_last": "channels_last", "model.compile_net": "compile_net"}
_EXPERIMENT = re.compile(r"^[+~]*experiment=(?P<value>.*)$")


def renamed_experiment_message(argv: Sequence[str]) -> str | None:
    """`experiment=seed_mnist is now experiment=assignment_mnist` if `argv` picks an old
    name (alone, in a sweep's list or in `choice(...)`); None otherwise."""
    for arg in argv:
        match = _EXPERIMENT.match(arg)
        if not match:
            continue
        for option in re.findall(r"\w+", match["value"]):
            if option in RENAMED_EXPERIMENTS:
                return f"experiment={option} is now experiment={RENAMED_EXPERIMENTS[option]}"
    return None


def renamed_key_message(argv: Sequence[str]) -> str | None:
    """`model.channels_last is now channels_last` if `argv` overrides a moved key; else None."""
    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in RENAMED_KEYS:
            return f"{key} is now {RENAMED_KEYS[key]}: {RENAMED_KEYS[key]}={arg.partition('=')[2]}"
    return None
