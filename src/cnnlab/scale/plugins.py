"""The optional Hydra plugins (launchers, the Optuna sweeper): a clear word when one is missing."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Sequence

SWEEP_EXTRA = 'pip install -e ".[sweep]"'

# Command-line choice -> (what it is, the modules it needs). The launchers and the sweeper are
# Hydra plugins from cnnlab's `sweep` extra.
_PLUGINS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    ("hydra/launcher", "joblib"): (
        "Hydra's joblib launcher",
        ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    ),
    ("hydra/launcher", "submitit_local"): (
        "Hydra's submitit launcher",
        ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ),
    ("hydra/launcher", "submitit_slurm"): (
        "Hydra's submitit launcher",
        ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ),
    ("hydra/launcher", "slurm"): (
        "Hydra's submitit launcher",
        ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ),
    ("hydra/sweeper", "optuna"): (
        "Hydra's Optuna sweeper",
        ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ),
    ("hparams_search", "optuna"): (
        "Hydra's Optuna sweeper",
        ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ),
}
_CHOICE = re.compile(r"^[+~]*(?P<group>[\w/]+)=(?P<option>[\w]+)$")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_plugin_message(
    argv: Sequence[str], installed: Callable[[str], bool] = _installed
) -> str | None:
    """A message naming the extra to install if `argv` picks a plugin that is not installed.

    Hydra alone would only say that 'hydra/launcher/joblib' is not among the options.
    """
    for arg in argv:
        match = _CHOICE.match(arg)
        if not match:
            continue
        plugin = _PLUGINS.get((match["group"], match["option"]))
        if plugin is None:
            continue
        what, modules = plugin
        missing = [m for m in modules if not installed(m)]
        if missing:
            return (
                f"{arg} needs {what}, which is not installed (missing: {', '.join(missing)}).\n"
                f"Install cnnlab's scale-out extra: {SWEEP_EXTRA}  (or: make install)"
            )
    return None
