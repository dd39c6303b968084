"""What the benchmark measures: its rows, its settings, their data and their run configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from cnnlab.data.datasets import DEBIAN_FASHION_MNIST
from cnnlab.data.synthetic import write_cifar10, write_idx_dataset


@dataclass(frozen=True)
class Row:
    net: str
    data: str  # "mnist" (MNIST-shaped) or "cifar10"
    batch_size: int
    steps: int | None  # training steps per measured epoch; None = the whole training split


DEFAULT_ROWS = (
    Row("net_1", "mnist", 32, 300),
    Row("net_2", "mnist", 32, 300),
    Row("net_1", "cifar10", 128, 100),
    Row("net_2", "cifar10", 128, 100),
)


@dataclass
class Settings:
    precision: str = "32-true"
    channels_last: bool | str = "auto"  # channels_last: the pipeline's default is auto
    optimizer: str = "adadelta"
    reps: int = 5
    accelerator: str = "auto"
    data_dir: Path | None = None  # synthetic data is written here when None
    tiny: bool = False  # a few steps on small synthetic data: checks the machinery only
    # Also train one full Fashion-MNIST epoch in fp32 and in `precision` and compare accuracy.
    accuracy_check: bool = False
    # Seeds of the accuracy check; each trains 2 full epochs (3 with cl). One seed's difference
    # moves by about a point, so the verdict needs the mean of several (docs/speed.md).
    accuracy_seeds: int = 8
    extra_overrides: list[str] = field(default_factory=list)
    load: int = 0  # busy processes beside the benchmark while it measures (`--load N`)


def bench_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def prepare_data(root: Path, tiny: bool) -> dict[str, Any]:
    """MNIST-shaped data (real Fashion-MNIST when installed) and CIFAR-10-shaped data."""
    train, test = (600, 200) if tiny else (60_000, 10_000)
    sources: dict[str, Any] = {}
    if not tiny and (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        sources["mnist"] = {"option": "fashion_mnist", "source": "real Fashion-MNIST"}
    else:
        write_idx_dataset(root / "MNIST" / "raw", train=train, test=test)
        sources["mnist"] = {"option": "mnist", "source": f"synthetic {train}/{test}"}
    cifar_train = 500 if tiny else 50_000
    write_cifar10(root / "cifar-10-batches-py", train=cifar_train, test=test)
    sources["cifar10"] = {"option": "cifar10", "source": f"synthetic {cifar_train}/{test}"}
    return sources


def compose_run(
    row: Row, settings: Settings, data_option: str, data_dir: Path, out_dir: Path, test: bool
) -> DictConfig:
    overrides = [
        f"data={data_option}",
        f"model={row.net}",
        f"optimizer={settings.optimizer}",
        f"data.batch_size={row.batch_size}",
        f"paths.data_dir={data_dir}",
        "data.verify_md5=false",  # CIFAR-10-shaped data here is the benchmark's own
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={'null' if row.steps is None else row.steps}",
        "trainer.num_sanity_val_steps=0",
        f"trainer.precision={settings.precision}",
        f"trainer.accelerator={settings.accelerator}",
        f"channels_last={str(settings.channels_last).lower()}",
        "callbacks.progress_bar.enabled=false",
        "callbacks.model_summary.enabled=false",
        f"test={str(test).lower()}",
        *settings.extra_overrides,
    ]
    if settings.tiny:
        overrides += ["trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    if not GlobalHydra.instance().is_initialized():
        raise RuntimeError(
            "compose_run composes conf/train.yaml: call it inside "
            'hydra.initialize(config_path="<path to conf>", version_base="1.3"), '
            "as src/bench.py does"
        )
    cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return cfg
