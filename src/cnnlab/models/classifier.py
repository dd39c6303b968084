"""The LightningModule: an image classifier around any net (`cnnlab.models.nets` or your own)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

from cnnlab.models.loading import load_classifier
from cnnlab.models.metrics import ConfusionMatrix, SampleMean
from cnnlab.models.nets import count_parameters
from cnnlab.models.optimizers import build_optimizer

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class ImageClassifier(pl.LightningModule):
    """Cross-entropy on logits with torchmetrics accuracy; per-epoch train/val/test metrics.

    Every metric is counted on the device inside the steps and logged once, at its epoch's
    end: a `self.log` call per step would cost Lightning's bookkeeping on every step
    (docs/speed.md). The run's callbacks read them through `epoch_metrics`, `confusion` and
    `class_metrics` (docs/extending.md, "A metric").

    `net` is the net's config (with `_target_`), built here with the datamodule's input
    shape and class count, so a checkpoint alone is enough to rebuild the model.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        sample_shape: Sequence[int],
        num_classes: int,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(net, DictConfig):
            net = OmegaConf.to_container(net, resolve=True)  # type: ignore[assignment]
        sample_shape = [int(s) for s in sample_shape]
        class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.save_hyperparameters(
            {
                "net": dict(net),
                "sample_shape": sample_shape,
                "num_classes": num_classes,
                "class_names": class_names,
            },
            logger=False,  # cnnlab logs hparams once, with real metrics, at the end of a run
        )
        self.net: torch.nn.Module = instantiate(
            dict(net), sample_shape=sample_shape, num_classes=num_classes
        )
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(1, *sample_shape)

        # validate_args=False: no per-step input checks (they cost host syncs on GPU).
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc_best = MaxMetric()
        # Under DDP the ranks evaluate different numbers of samples: see SampleMean.
        self.train_loss = SampleMean()
        self.val_loss = SampleMean()
        self.test_loss = SampleMean()
        # One matrix per epoch and split, counted in the steps (`confusion`).
        self.train_confusion = ConfusionMatrix(num_classes)
        self.val_confusion = ConfusionMatrix(num_classes)
        self.test_confusion = ConfusionMatrix(num_classes)
        per_class = {"average": None, "validate_args": False}
        self.test_per_class = MetricCollection(
            {
                "precision": MulticlassPrecision(num_classes, **per_class),
                "recall": MulticlassRecall(num_classes, **per_class),
                "specificity": MulticlassSpecificity(num_classes, **per_class),
            }
        )
        self.val_acc_best.persistent(True)  # in checkpoints, so a resumed run keeps its best

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = None, **kwargs: Any
    ) -> ImageClassifier:
        """The checkpoint's classifier, its net rebuilt only from a `_target_` the project's
        configs name: the file's config is data, never code (`cnnlab.models.loading`)."""
        if kwargs.get("weights_only") is False or set(kwargs) - {"weights_only", "strict"}:
            raise TypeError(
                "ImageClassifier.load_from_checkpoint takes map_location only: the net and its "
                "sizes come from the checkpoint, checked against conf/model/"
            )
        model = load_classifier(Path(checkpoint_path), ImageClassifier)
        return model.to(map_location) if isinstance(map_location, str | torch.device) else model

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.net)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def compute_loss(
        self, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, logits and labels of a batch: tensor maths only, so the CUDA-graph step
        (`cnnlab.speed.cuda_graph`) can capture it with the backward and the optimizer step."""
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), logits, labels

    def count_training_batch(
        self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Counts a trained batch into the epoch's training metrics (logged once per epoch,
        see `epoch_metrics`); outside `compute_loss`, so a captured step counts it too."""
        self.train_confusion.update(logits, labels)
        self.train_loss.update(loss, len(labels))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        loss, logits, labels = self.compute_loss(batch)
        self.count_training_batch(loss, logits, labels)
        return loss

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """The stage's ("train", "val" or "test") metrics of this epoch so far, over all ranks,
        named as they are logged (`val/acc`); empty before the stage's first batch.

        What the run records per epoch: RunHistory and the epoch lines read the training
        metrics here, at the epoch's end, before Lightning calls `on_train_epoch_end`. The
        training accuracy is the confusion matrix's trace over its total: the same count as a
        per-step accuracy averaged by batch size, at no extra cost per step. torchmetrics
        caches each value until the next update, so reading twice syncs once.
        """
        if stage == "train":
            if self.train_loss.update_count == 0:
                return {}
            counts = self.train_confusion.compute()
            return {
                "train/loss": self.train_loss.compute(),
                "train/acc": counts.trace().float() / counts.sum().clamp(min=1),
            }
        loss, accuracy = (
            (self.val_loss, self.val_acc) if stage == "val" else (self.test_loss, self.test_acc)
        )
        if loss.update_count == 0:
            return {}
        return {f"{stage}/loss": loss.compute(), f"{stage}/acc": accuracy.compute()}

    def confusion(self, stage: str) -> torch.Tensor | None:
        """The stage's confusion counts of this epoch (true class x predicted class), over
        all ranks; None before the stage's first batch."""
        matrix = {
            "train": self.train_confusion,
            "val": self.val_confusion,
            "test": self.test_confusion,
        }[stage]
        return matrix.compute() if matrix.update_count else None

    def class_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """Per-class precision, recall and specificity, counted on the test split only."""
        if stage != "test" or self.test_loss.update_count == 0:
            return {}
        return dict(self.test_per_class.compute())

    def on_train_epoch_end(self) -> None:
        # Already reduced over DDP ranks by torchmetrics, so no sync_dist.
        for name, value in self.epoch_metrics("train").items():
            self.log(name, value, on_epoch=True, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        self.train_confusion.reset()
        self.train_loss.reset()

    def on_validation_epoch_start(self) -> None:
        for metric in (self.val_acc, self.val_loss, self.val_confusion):
            metric.reset()

    def on_test_epoch_start(self) -> None:
        for metric in (self.test_acc, self.test_loss, self.test_confusion, self.test_per_class):
            metric.reset()

    def validation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        """Counts the batch into the validation metrics; returns its logits, for a subclass
        that counts more (docs/extending.md, "A metric")."""
        loss, logits, labels = self.compute_loss(batch)
        self.val_acc.update(logits, labels)
        self.val_confusion.update(logits, labels)
        self.val_loss.update(loss, len(labels))
        return logits

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return  # the sanity check's few batches must not count towards the best accuracy
        if not (metrics := self.epoch_metrics("val")):
            return
        # torchmetrics reduces over DDP ranks on compute, so no sync_dist.
        self.val_acc_best(metrics["val/acc"])
        self.log_dict(metrics, prog_bar=True)
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, logits, labels = self.compute_loss(batch)
        self.test_acc.update(logits, labels)
        self.test_confusion.update(logits, labels)
        self.test_per_class.update(logits, labels)
        self.test_loss.update(loss, len(labels))

    def on_test_epoch_end(self) -> None:
        if metrics := self.epoch_metrics("test"):
            self.log_dict(metrics)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities, as the assignment's softmax output layer gives them."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self(images), dim=-1)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("ImageClassifier was built without an optimizer; pass one to train")
        optimizer = build_optimizer(self.optimizer_factory, self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.lr_scheduler_factory(optimizer),
                "interval": "epoch",
            },
        }
