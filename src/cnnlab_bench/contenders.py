"""The three contenders on one row: cnnlab's pipeline, a bare PyTorch loop, a minimal
LightningModule. Each trains the same net from the same initial weights on the same uint8
tensors, in the same batch order, with the same optimizer and numerics.
"""

from __future__ import annotations

import contextlib
import copy
import io
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.assignment import normalize_tensor
from cnnlab.data.datamodule import ImageDataModule
from cnnlab.data.sampling import IndexBatchSampler
from cnnlab.models.optimizers import build_optimizer
from cnnlab.speed.layout import use_channels_last
from cnnlab.training.run import train
from cnnlab_bench.timing import StepClock, StepPhases, TrainWindow, sync


def pipeline_run(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    clock = StepClock(StepPhases(enabled=device.type == "cpu"))
    with contextlib.redirect_stdout(io.StringIO()):  # a run's test report: not the bench's
        summary = train(cfg, extra_callbacks=[clock])
    epoch = summary["history"][0]
    result = {
        "step_ms": clock.phases.medians_ms(),
        "train_s": epoch["time/train_s"],
        "epoch_s": epoch["time/epoch_s"],
        "val_s": epoch["time/val_s"],
        "images": summary["steps"] * int(cfg.data.batch_size),
        "val_acc": epoch.get("val/acc", float("nan")),
    }
    if "test" in summary:
        result["test_s"] = summary["time"]["test_s"]
    return result


class BareLoop:
    """An idiomatic PyTorch loop: forward, loss, backward, step; same tensors and order."""

    def __init__(self, cfg: DictConfig, datamodule: ImageDataModule, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in datamodule.splits.items()}
        self.batch_size = int(cfg.data.batch_size)
        self.eval_batch_size = datamodule.eval_batch_size
        self.seed = int(cfg.seed)
        self.autocast = str(cfg.trainer.precision).startswith("bf16")
        self.channels_last = use_channels_last(cfg.channels_last, device)
        pl.seed_everything(self.seed, workers=True)  # same initial weights as the pipeline
        net_cfg = dict(cfg.model.net)
        self.net = instantiate(
            net_cfg, sample_shape=datamodule.sample_shape, num_classes=datamodule.num_classes
        ).to(device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(instantiate(cfg.optimizer), self.net.parameters())

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize_tensor(images)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_epoch(self, steps: int | None = None, epoch: int = 0) -> tuple[float, list[float]]:
        images, labels = self.splits["train"]
        sampler = IndexBatchSampler(
            len(labels), self.batch_size, shuffle=True, seed=self.seed, device=labels.device
        )
        sampler.set_epoch(epoch)
        losses = []
        phases = StepPhases(enabled=self.device.type == "cpu")
        self.net.train()
        sync(self.device)
        start = now = time.perf_counter()
        for step, index in enumerate(sampler):
            if steps is not None and step >= steps:
                break
            phases.mark("start", now)
            inputs, targets = self._inputs(images[index]), labels[index]
            phases.mark("forward")
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = F.cross_entropy(self.net(inputs), targets)
            phases.mark("forward_end")
            self.optimizer.zero_grad(set_to_none=True)
            phases.mark("backward")
            loss.backward()
            phases.mark("backward_end")
            phases.mark("optimizer")
            self.optimizer.step()
            phases.mark("end", now := time.perf_counter())
            losses.append(loss.detach())
        sync(self.device)
        self.phases = phases
        return time.perf_counter() - start, [float(v) for v in losses]

    def train_epoch_graphed(self, steps: int, warmup: int = 3) -> tuple[float, list[float]]:
        """The same steps with the whole step (forward, loss, backward, a capturable
        optimizer's step) captured once as a CUDA graph and replayed: the limit a GPU step
        of this net reaches when nothing is launched from Python per kernel (CUDA only)."""
        images, labels = self.splits["train"]
        sampler = IndexBatchSampler(
            len(labels), self.batch_size, shuffle=True, seed=self.seed, device=labels.device
        )
        sampler.set_epoch(0)
        batches = [index for _, index in zip(range(steps), sampler, strict=False)]
        batches = [i for i in batches if len(i) == self.batch_size]  # one shape per graph
        for group in self.optimizer.param_groups:
            group["capturable"] = True

        def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            bf16 = {"dtype": torch.bfloat16, "enabled": self.autocast, "cache_enabled": False}
            with torch.autocast("cuda", **bf16):
                loss = F.cross_entropy(self.net(inputs), targets)
            loss.backward()
            self.optimizer.step()
            return loss.detach()

        self.net.train()
        sync(self.device)
        start = time.perf_counter()
        losses = []
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for index in batches[:warmup]:
                losses.append(step(self._inputs(images[index]), labels[index]))
        torch.cuda.current_stream().wait_stream(side)
        static_x = self._inputs(images[batches[warmup]]).clone()
        static_y = labels[batches[warmup]].clone()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_loss = step(static_x, static_y)
        for index in batches[warmup:]:
            static_x.copy_(self._inputs(images[index]))
            static_y.copy_(labels[index])
            graph.replay()
            losses.append(static_loss.clone())
        sync(self.device)
        return time.perf_counter() - start, [float(v) for v in losses]

    @torch.no_grad()
    def evaluate(self, split: str) -> tuple[float, float]:
        """(seconds, accuracy) of one pass over `split`."""
        images, labels = self.splits[split]
        self.net.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        sync(self.device)
        start = time.perf_counter()
        for index in IndexBatchSampler(
            len(labels), self.eval_batch_size, shuffle=False, device=labels.device
        ):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.net(self._inputs(images[index]))
            F.cross_entropy(logits, labels[index])  # the pipeline computes the loss too
            correct += (logits.argmax(dim=1) == labels[index]).sum()
        sync(self.device)
        return time.perf_counter() - start, float(correct) / len(labels)


def bare_run(
    cfg: DictConfig,
    datamodule: ImageDataModule,
    device: torch.device,
    steps: int,
    test: bool,
    graphed: bool = False,
) -> dict[str, Any]:
    """The bare loop's epoch; `graphed`: its step captured as one CUDA graph (capture and
    warm-up included in its time, which has no per-phase split)."""
    loop = BareLoop(cfg, datamodule, device)
    if graphed:
        train_s, losses = loop.train_epoch_graphed(steps)
        images, step_ms = len(losses) * loop.batch_size, {}
    else:
        train_s, _ = loop.train_epoch(steps)
        images = min(steps * loop.batch_size, len(loop.splits["train"][1]))
        step_ms = loop.phases.medians_ms()
    val_s, val_acc = loop.evaluate("val")
    result: dict[str, Any] = {
        "step_ms": step_ms,
        "train_s": train_s,
        "epoch_s": train_s + val_s,
        "val_s": val_s,
        "images": images,
        "val_acc": val_acc,
    }
    if test:
        result["test_s"] = loop.evaluate("test")[0]
    return result


class MinimalModule(pl.LightningModule):
    """The least a LightningModule can be: the bare loop's net and optimizer, forward + loss."""

    def __init__(self, loop: BareLoop) -> None:
        super().__init__()
        self.loop = loop
        self.net = loop.net
        self.phases = StepPhases(enabled=loop.device.type == "cpu")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        self.phases.mark("forward")
        images, labels = batch
        if self.loop.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(self.net(images), labels)
        self.phases.mark("forward_end")
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.loop.optimizer


def minimal_lightning_run(
    cfg: DictConfig, datamodule: ImageDataModule, device: torch.device, steps: int
) -> dict[str, Any]:
    """Lightning's own floor: no callbacks, logger, metrics, checkpoints or validation."""
    loop = BareLoop(cfg, datamodule, device)  # same seed, so the same initial weights
    module = MinimalModule(loop)
    window = TrainWindow(device, module.phases)
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision=cfg.trainer.precision,
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        callbacks=[window],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    # Its batches are gathered where the pipeline's are: the shared datamodule was set up
    # before any Trainer existed, so its tensors are on the CPU; a copy holds them on `device`.
    on_device = copy.copy(datamodule)
    on_device.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in datamodule.splits.items()}
    trainer.fit(module, datamodule=on_device)
    return {
        "train_s": window.seconds,
        "images": trainer.global_step * loop.batch_size,
        "step_ms": module.phases.medians_ms(),
    }
