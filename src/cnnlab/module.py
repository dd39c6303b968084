"""One generic LightningModule: an image classifier around any net from `cnnlab.nets`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from cnnlab.nets import count_parameters

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class ImageClassifier(pl.LightningModule):
    """Cross-entropy on logits with torchmetrics accuracy; per-epoch train/val/test metrics.

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
            dict(net), sample_shape=sample_shape, nb_classes=num_classes
        )
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.example_input_array = torch.zeros(1, *sample_shape)

        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in checkpoints, so a resumed run keeps its best

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.net)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        images, labels = batch
        logits = self(images)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        loss, logits, labels = self._shared_step(batch)
        self.train_acc(logits, labels)
        batch_size = len(labels)
        self.log(
            "train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=batch_size
        )
        self.log(
            "train/acc",
            self.train_acc,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
        )
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, logits, labels = self._shared_step(batch)
        self.val_acc(logits, labels)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=len(labels))
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True, batch_size=len(labels))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return  # the sanity check's few batches must not count towards the best accuracy
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=False)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, logits, labels = self._shared_step(batch)
        self.test_acc(logits, labels)
        self.log("test/loss", loss, on_epoch=True, batch_size=len(labels))
        self.log("test/acc", self.test_acc, on_epoch=True, batch_size=len(labels))

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities, as the seed's softmax output layer gives them."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self(images), dim=-1)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("ImageClassifier was built without an optimizer; pass one to train")
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.lr_scheduler_factory(optimizer),
                "interval": "epoch",
            },
        }
