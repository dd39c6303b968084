"""The training step as one CUDA graph: forward, loss, backward and the optimizer's step
captured once and replayed for every batch of the same shape (switch: `cuda_graph`).

The nets of the assignment are so small that a GPU step is all kernel launches: each of the
~60 kernels of a step costs more to launch from Python than to run. A graph launches them all
at once. Lightning stays the loop: the step runs as manual optimization, and each replayed
optimizer step is counted as Lightning counts its own (`cnnlab.lightning_internals`), so
`global_step`, checkpoints, resume and `max_steps` are those of an eager run.

What runs eagerly instead, and why:
- the first `warmup_steps` steps (cuDNN picks its kernels, the optimizer builds its state), on
  a side stream as CUDA graphs require; they are ordinary training steps;
- a batch of another shape (an epoch's last, smaller batch): an ordinary eager step;
- the optimizer's step, when it has no capturable form (Adagrad, SGD): the forward and
  backward are still one graph;
- the whole run, when a graph cannot apply (`decide` says why, in one log line).

The module supplies `compute_loss(batch) -> (loss, logits, labels)`, tensor maths only, and
`count_training_batch(loss, logits, labels)`, its per-batch metric updates, which run after
each replay without a host sync (`cnnlab.models.classifier.ImageClassifier` has both).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden

from cnnlab.errors import ConfigError
from cnnlab.lightning_internals import count_optimizer_step

log = logging.getLogger(__name__)

CUDA_GRAPH_CHOICES = (True, False, "auto")
# Hooks that run Python between the backward and the optimizer step of every batch: a
# replayed graph would skip them.
PER_STEP_HOOKS = (
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)
MODULE_STEP_HOOKS = (*PER_STEP_HOOKS, "optimizer_step", "optimizer_zero_grad", "backward")
Outputs = tuple[torch.Tensor, torch.Tensor]  # loss, logits
STEP_INTERFACE = ("compute_loss", "count_training_batch")


class Graph(Protocol):
    """A captured step: `replay()` runs it again and returns its (static) outputs."""

    def replay(self) -> Outputs: ...


class CudaGraph:
    """`step` captured into a `torch.cuda.CUDAGraph`; its outputs are overwritten in place
    by each replay."""

    def __init__(self, step: Callable[[], Outputs]) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = step()

    def replay(self) -> Outputs:
        self.graph.replay()
        return self.outputs


class EagerReplay:
    """The same interface, running `step` at each replay: what the graph step's plumbing is
    tested with where there is no GPU."""

    def __init__(self, step: Callable[[], Outputs]) -> None:
        self.step = step

    def replay(self) -> Outputs:
        return self.step()


@dataclass(frozen=True)
class Decision:
    """How a run steps: "full" (forward, backward and optimizer step in one graph),
    "partial" (forward and backward; the optimizer steps eagerly) or "eager", and why."""

    mode: str
    reason: str


def _overriding(trainer: pl.Trainer, module: pl.LightningModule) -> str | None:
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        for hook in PER_STEP_HOOKS:
            if is_overridden(hook, callback, parent=pl.Callback):
                return f"the callback {type(callback).__name__} runs Python in {hook} every step"
    for hook in MODULE_STEP_HOOKS:
        if is_overridden(hook, module, parent=pl.LightningModule):
            return f"{type(module).__name__}.{hook} runs Python in every step"
    return None


def decide(trainer: pl.Trainer, module: pl.LightningModule, require_cuda: bool = True) -> Decision:
    """Whether this run's training step can be one CUDA graph, and how much of it."""
    device = trainer.strategy.root_device
    optimizers = trainer.optimizers
    precision = str(trainer.precision)
    problem = None
    if require_cuda and device.type != "cuda":
        problem = f"CUDA graphs need a CUDA device, and this run is on {device.type}"
    elif trainer.world_size > 1:
        problem = "DDP all-reduces gradients in hooks outside the graph"
    elif precision.startswith("16") or precision.startswith("transformer-engine"):
        problem = f"precision {precision} scales the loss with a host-side check every step"
    elif trainer.gradient_clip_val:
        problem = "trainer.gradient_clip_val clips gradients in Lightning's per-step code"
    elif trainer.accumulate_grad_batches != 1:
        problem = "trainer.accumulate_grad_batches steps the optimizer every few batches"
    elif not all(
        callable(getattr(module, n, None)) for n in ("compute_loss", "count_training_batch")
    ):
        problem = (
            f"{type(module).__name__} has no compute_loss and count_training_batch "
            "(docs/speed.md, 'The CUDA-graph step')"
        )
    elif len(optimizers) != 1:
        problem = f"the module has {len(optimizers)} optimizers; the graph step takes one"
    elif trainer.lr_scheduler_configs:
        problem = "an lr scheduler changes the learning rate, which a captured step holds fixed"
    else:
        problem = _overriding(trainer, module)
    if problem:
        return Decision("eager", problem)
    optimizer = optimizers[0]
    if "capturable" not in optimizer.param_groups[0]:
        return Decision(
            "partial",
            f"{type(optimizer).__name__} has no capturable step: forward and backward are one "
            "graph, the optimizer steps eagerly",
        )
    return Decision(
        "full", f"forward, backward and {type(optimizer).__name__}'s step are one graph"
    )


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Its groups capturable, and step counts where a captured step keeps them: on the
    parameters' device (a checkpoint of an eager run holds them on the CPU)."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor) and step.device != param.device:
                state["step"] = step.to(param.device, torch.float32)


@contextlib.contextmanager
def _autocast_without_cache(device_type: str) -> Iterator[None]:
    """Lightning's autocast (bf16-mixed) with its weight-cast cache off, as a CUDA graph
    capture requires; nothing where autocast is off."""
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    dtype = torch.get_autocast_dtype(device_type)
    with torch.autocast(device_type, dtype=dtype, cache_enabled=False):
        yield


class CudaGraphStep(pl.Callback):
    """Trains the module with its step captured as a CUDA graph where `decide` allows it.

    `setting` is the run's `cuda_graph`: true (say in one line why not, where it cannot
    apply), auto (the same, quietly where there is no CUDA) or false. `graph_type` and
    `require_cuda` exist for the tests of this plumbing on a CPU.
    """

    def __init__(
        self,
        setting: bool | str = True,
        warmup_steps: int = 3,
        graph_type: Callable[[Callable[[], Outputs]], Graph] = CudaGraph,
        require_cuda: bool = True,
    ) -> None:
        if setting not in CUDA_GRAPH_CHOICES:
            raise ConfigError(f"cuda_graph={setting!r} is invalid: use auto, true or false")
        self.setting = setting
        self.warmup_steps = int(warmup_steps)
        self.graph_type = graph_type
        self.require_cuda = require_cuda
        self.decision = Decision("eager", "not decided yet")
        self.graph: Graph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None
        self.eager_steps = 0
        self.capture_failed = False
        self.replays = 0

    @property
    def warmup_done(self) -> bool:
        """The warm-up steps ran (eagerly, on a side stream, as a capture requires)."""
        return self.eager_steps >= self.warmup_steps

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the optimizers exist, before the loops run: the loop type is read per batch.
        self.decision = decide(trainer, pl_module, self.require_cuda)
        if self.decision.mode == "eager":
            quiet = self.setting == "auto" and trainer.strategy.root_device.type != "cuda"
            (log.debug if quiet else log.info)("CUDA-graph step off: %s", self.decision.reason)
            return
        log.info("CUDA-graph step: %s", self.decision.reason)
        pl_module.automatic_optimization = False
        pl_module.training_step = self._training_step_of(pl_module)  # type: ignore[method-assign]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After a resumed run's optimizer state is loaded (it may come from an eager run).
        if self.decision.mode == "full" and trainer.strategy.root_device.type == "cuda":
            make_capturable(trainer.optimizers[0])

    def _training_step_of(self, module: pl.LightningModule) -> Callable[..., torch.Tensor]:
        def training_step(batch: Any, batch_idx: int, *args: Any, **kwargs: Any) -> torch.Tensor:
            images, labels = batch
            static = self.static
            fits = static is not None and (
                static[0].shape == images.shape and static[1].shape == labels.shape
            )
            if self.graph is None and not self.capture_failed and self.warmup_done:
                fits = self._capture(module, images, labels)
            if not fits:
                return self._eager_step(module, images, labels)
            return self._replay(module, images, labels)

        return training_step

    def _eager_step(
        self, module: pl.LightningModule, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """An ordinary manual-optimization step; after a capture it keeps the graph's
        gradient tensors (zeroed in place), which the graph writes to."""
        optimizer = module.optimizers()
        on_cuda = images.is_cuda and not self.capture_failed and not self.warmup_done
        side = torch.cuda.Stream() if on_cuda else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            optimizer.zero_grad(set_to_none=self.graph is None)
            loss, logits, labels = module.compute_loss((images, labels))
            module.manual_backward(loss)
            optimizer.step()
            module.count_training_batch(loss.detach(), logits.detach(), labels)
        if side is not None:
            torch.cuda.current_stream().wait_stream(side)
        self.eager_steps += 1
        return loss.detach()

    def _capture(
        self, module: pl.LightningModule, images: torch.Tensor, labels: torch.Tensor
    ) -> bool:
        """Capture the step; False (and eager steps from then on) if this torch, device or
        module cannot capture it, which the run's log says in one line."""
        optimizer = module.optimizers().optimizer
        self.static = (images.clone(), labels.clone())
        full = self.decision.mode == "full"

        def step() -> Outputs:
            optimizer.zero_grad(set_to_none=True)  # the graph writes the gradients afresh
            loss, logits, _ = module.compute_loss(self.static)
            loss.backward()
            if full:
                optimizer.step()
            return loss.detach(), logits.detach()

        try:
            with _autocast_without_cache(images.device.type):
                self.graph = self.graph_type(step)
        except (RuntimeError, TypeError, AssertionError) as err:
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            log.warning(
                "CUDA-graph step off: the capture failed (%s: %s); the run steps eagerly",
                type(err).__name__,
                first,
            )
            optimizer.zero_grad(set_to_none=True)  # nothing of the capture is kept
            self.static, self.capture_failed = None, True  # never again in this run
            return False
        return True

    def _replay(
        self, module: pl.LightningModule, images: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        assert self.graph is not None and self.static is not None
        self.static[0].copy_(images)
        self.static[1].copy_(labels)
        loss, logits = self.graph.replay()
        optimizer = module.optimizers()
        if self.decision.mode == "full":
            count_optimizer_step(optimizer)
        else:
            optimizer.step()
        module.count_training_batch(loss, logits, labels)
        self.replays += 1
        # A copy: the next replay overwrites the graph's own loss tensor, and callbacks keep it.
        return loss.clone()
