"""Learning really happens: net_1 learns the synthetic patterns, an untrained net does not."""

from pathlib import Path

import pytorch_lightning as pl
import torch

from cnnlab.data import MNISTDataModule
from cnnlab.module import ImageClassifier

THRESHOLD = 0.90  # the synthetic classes are separable; chance is 0.10


def test_net_1_learns_the_synthetic_set(synthetic_data_dir: Path) -> None:
    pl.seed_everything(0)
    dm = MNISTDataModule(data_dir=synthetic_data_dir, batch_size=32)
    model = ImageClassifier(
        net={"_target_": "cnnlab.nets.net_1"},
        sample_shape=dm.sample_shape,
        num_classes=10,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    untrained = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    trainer.fit(model, datamodule=dm)
    trained = trainer.test(model, datamodule=dm, verbose=False)[0]["test/acc"]
    assert untrained < 0.3, untrained
    assert trained >= THRESHOLD, trained


def test_predict_step_returns_probabilities(synthetic_data_dir: Path) -> None:
    dm = MNISTDataModule(data_dir=synthetic_data_dir, eval_batch_size=64)
    model = ImageClassifier(
        net={"_target_": "cnnlab.nets.net_2"}, sample_shape=(1, 28, 28), num_classes=10
    )
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    batches = trainer.predict(model, datamodule=dm)
    probs = torch.cat(batches)
    assert probs.shape == (200, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(200), atol=1e-5)
    assert float(probs.min()) >= 0
