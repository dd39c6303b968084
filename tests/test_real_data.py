"""Real Fashion-MNIST from Debian's `dataset-fashion-mnist` package (skipped without it)."""

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from cnnlab.training.run import train

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(
    not (SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"no real Fashion-MNIST in {SYSTEM_DIR}: apt-get install dataset-fashion-mnist",
)


def test_net_1_adam_one_epoch_on_10000_real_images(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = compose_cfg(
        [
            "data=fashion_mnist",
            "model=net_1",
            "optimizer=adam",
            f"paths.data_dir={tmp_path}",
            "data.batch_size=50",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=200",
            "logger=csv",
            "callbacks.progress_bar.enabled=false",
        ]
    )
    summary = train(cfg)
    assert summary["steps"] * 50 == 10_000
    assert summary["data_sizes"]["test"] == 10_000
    accuracy = summary["test"]["test/acc"]
    print(f"Fashion-MNIST test accuracy after 10,000 training images: {accuracy:.4f}")
    assert accuracy >= 0.80
