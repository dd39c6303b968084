"""Learning really happens: net_1 learns the synthetic patterns, an untrained net does not."""

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cnnlab.data import MNISTDataModule
from cnnlab.models.classifier import ImageClassifier

THRESHOLD = 0.90  # the synthetic classes are separable; chance is 0.10


def test_net_1_learns_the_synthetic_set(synthetic_data_dir: Path) -> None:
    pl.seed_everything(0)
    dm = MNISTDataModule(data_dir=synthetic_data_dir, batch_size=32)
    model = ImageClassifier(
        net={"_target_": "cnnlab.models.nets.net_1"},
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
        net={"_target_": "cnnlab.models.nets.net_2"}, sample_shape=(1, 28, 28), num_classes=10
    )
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    batches = trainer.predict(model, datamodule=dm)
    probs = torch.cat(batches)
    assert probs.shape == (200, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(200), atol=1e-5)
    assert float(probs.min()) >= 0


def test_train_epoch_metrics_are_the_epochs_sample_means(synthetic_data_dir: Path) -> None:
    """train/loss and train/acc, counted on the device and logged once per epoch, equal the
    loss and accuracy of every training batch averaged by sample (lr 0: the weights, and so
    each batch's predictions, stay those an independent pass computes)."""
    pl.seed_everything(0)
    batches = 5
    dm = MNISTDataModule(data_dir=synthetic_data_dir, batch_size=50)  # 540 images: 10 + 40
    model = ImageClassifier(
        net={"_target_": "cnnlab.models.nets.net_2"},
        sample_shape=dm.sample_shape,
        num_classes=10,
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )
    settings = {
        "max_epochs": 1,
        "limit_val_batches": 0,
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    pl.Trainer(limit_train_batches=3, **settings).fit(model, datamodule=dm)  # partly trained
    model.optimizer_factory = lambda params: torch.optim.SGD(params, lr=0.0)
    trainer = pl.Trainer(limit_train_batches=batches, **settings)
    trainer.fit(model, datamodule=dm)

    dm.trainer = None
    losses, correct, seen = [], 0, 0
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(dm.train_dataloader()):  # the same seeded order, epoch 0
            if i == batches:
                break
            images, labels = dm.on_after_batch_transfer(batch, 0)
            logits = model(images)
            losses.append(float(torch.nn.functional.cross_entropy(logits, labels)) * len(labels))
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
    logged = trainer.callback_metrics
    assert int(model.confusion("train").sum()) == seen == batches * 50
    assert float(logged["train/loss"]) == pytest.approx(sum(losses) / seen, rel=1e-5)
    assert 0.2 < correct / seen < 1  # neither chance nor trivially perfect
    assert float(logged["train/acc"]) == pytest.approx(correct / seen, abs=1e-6)
