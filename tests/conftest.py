"""Shared fixtures: synthetic datasets in the real on-disk formats, and config composition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from cnnlab.data.synthetic import write_all
from cnnlab.process_setup import set_up_process

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

set_up_process(ROOT)  # as the entry points do: resolvers, CNNLAB_ROOT, quiet warnings
# Tests never reach the network: a download goes to a proxy on a closed local port and fails
# at once (the discard port, where nothing listens), in this process and in every run it starts.
NO_NETWORK = {name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy")}
NO_NETWORK |= {name.upper(): value for name, value in NO_NETWORK.items()}
os.environ.update(NO_NETWORK)
for _name in ("no_proxy", "NO_PROXY"):
    os.environ.pop(_name, None)
# Tests compare runs bit for bit across processes, so every run takes the same thread count
# (torch's own), whatever else the machine runs meanwhile (torch_threads=auto would not).
os.environ.setdefault("CNNLAB_TORCH_THREADS", str(os.cpu_count() or 1))


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST, Fashion-MNIST (IDX) and CIFAR-10 (pickles): 600 train / 200 test images each."""
    return write_all(tmp_path_factory.mktemp("data"), train=600, test=200)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose `conf/<config_name>.yaml` with overrides, writing outputs under tmp_path."""

    def _compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "outputs")
        return cfg

    return _compose


def only(pattern: str, folder: Path) -> Path:
    """The single path matching `pattern` in `folder` (a run or sweep folder, say)."""
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


def metrics_of(run_dir: Path) -> dict[str, Any]:
    """A run's `metrics.json` record."""
    return json.loads((run_dir / "metrics.json").read_text())


def run_cli(
    script: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: int = 300,
    script_root: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    """Run one of the real entry points (`src/train.py`, ...) as a user would; `script_root`
    is the project whose `src/` it runs (a scratch copy, say)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(script_root / "src" / script), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_sweep(
    data_dir: Path, log_dir: Path, *overrides: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`python src/train.py -m <overrides>` writing under `log_dir`; the result and the
    sweep's folder (its single `train/multiruns/*`)."""
    result = run_cli(
        "train.py",
        "-m",
        *overrides,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={log_dir}",
        env=env,
    )
    sweeps = sorted(log_dir.glob("train/multiruns/*"))
    found = f"expected one sweep in {log_dir}, found {sweeps}"
    assert len(sweeps) == 1, f"{found}:\n{result.stderr[-3000:]}"
    return result, sweeps[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where CUDA is (make gpu-check); elsewhere they say why not."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run make gpu-check on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
