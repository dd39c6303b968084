"""Timing and memory probes of the benchmark: per-step phase medians, step clocks, peak RSS."""

from __future__ import annotations

import ctypes
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


def sync(device: torch.device) -> None:
    """Wait for queued accelerator work, so a clock reading means what it says."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_freed_memory() -> bool:
    """Hand the heap's free memory back to the system (glibc's malloc_trim), so that what a
    row's runs left for reuse (cnnlab.speed.cpu_memory keeps it) is not the next row's peak;
    False where the C library has no malloc_trim."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim(0)
    return True


def reset_peak_rss() -> bool:
    """Restart the peak-memory count (Linux), so each row reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset (Linux VmHWM), else of the whole process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepPhases:
    """Per-step timestamps of a training loop, reduced to median milliseconds per phase.

    forward, backward and optimizer are the same kernels in every contender; `rest` is the
    step's remainder: fetching and normalising the batch, zero_grad and the loop's own code.
    In a Lightning run the phases are delimited by its hooks, so `optimizer` also holds the
    loop's code between the update and `on_train_batch_end`. A loop marked only at the
    start and end of each step (the pipeline, whose code the benchmark does not touch)
    reports its `step` alone.
    Medians over steps are robust to the noise bursts that move whole-run totals. Only on
    CPU, where each op has finished when it returns: on a GPU the marks would need a
    synchronisation each, which would change the throughput being measured.
    """

    SKIP_STEPS = 5  # first steps: one-off costs (allocator growth, oneDNN kernel choice)

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.steps: list[dict[str, float]] = []

    def mark(self, name: str, at: float | None = None) -> None:
        if not self.enabled:
            return
        if name == "start":
            self.steps.append({})
        if self.steps:
            self.steps[-1][name] = time.perf_counter() if at is None else at

    def medians_ms(self) -> dict[str, float]:
        spans = {
            "forward": ("forward", "forward_end"),
            "backward": ("backward", "backward_end"),
            "optimizer": ("optimizer", "end"),
        }
        per_step: dict[str, list[float]] = {}
        for marks in self.steps[min(self.SKIP_STEPS, len(self.steps) // 2) :]:
            if "end" not in marks:
                continue
            step = marks["end"] - marks["start"]
            parts = {name: marks[b] - marks[a] for name, (a, b) in spans.items() if a in marks}
            if len(parts) == len(spans):
                parts["rest"] = step - sum(parts.values())
            parts["step"] = step
            for name, seconds in parts.items():
                per_step.setdefault(name, []).append(1000 * seconds)
        if not per_step:
            return {}
        return {name: statistics.median(values) for name, values in per_step.items()}


class StepClock(pl.Callback):
    """Marks the start and end of each training step (see `StepPhases`): a step runs from
    the end of the previous one, so fetching its batch counts towards it, as in the bare
    loop. On its own it is the pipeline's clock: two hook calls per step, no other code."""

    def __init__(self, phases: StepPhases) -> None:
        self.phases, self.last_end = phases, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.last_end = time.perf_counter()

    def on_train_batch_start(self, *args: Any) -> None:
        self.phases.mark("start", self.last_end)

    def on_train_batch_end(self, *args: Any) -> None:
        self.last_end = time.perf_counter()
        self.phases.mark("end", self.last_end)


class TrainWindow(StepClock):
    """Times the training batches of the epoch, as RunHistory does for the pipeline, and
    marks the phases within each step that Lightning's hooks delimit."""

    def __init__(self, device: torch.device, phases: StepPhases) -> None:
        super().__init__(phases)
        self.device, self.seconds, self.start = device, 0.0, 0.0

    def on_before_backward(self, *args: Any) -> None:
        self.phases.mark("backward")

    def on_after_backward(self, *args: Any) -> None:
        self.phases.mark("backward_end")

    def on_before_optimizer_step(self, *args: Any) -> None:
        self.phases.mark("optimizer")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(self.device)
        super().on_train_epoch_start(trainer, pl_module)
        self.start = self.last_end

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self.start


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def median_phases(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Each phase's median over the runs of its per-step median (see `StepPhases`)."""
    phases = [r["step_ms"] for r in runs if r.get("step_ms")]
    return {name: statistics.median(p[name] for p in phases) for name in (phases or [{}])[0]}


def best(runs: list[dict[str, float]], key: str) -> float:
    """The fastest of the alternating runs (as `timeit` reports): on a shared machine noise
    only ever adds time, and in bursts that can cover a whole run of one contender."""
    return min(r[key] for r in runs)
