"""Benchmark: cnnlab's full pipeline against a bare PyTorch loop, in one process.

Both contenders train the same net from the same initial weights on the same uint8
tensors, in the same batch order, with the same optimizer and numerics; they alternate
(A B, B A, ...) so machine noise hits both. The pipeline is a real `cnnlab.training.train`
run (Lightning Trainer, cnnlab's DataModule and LightningModule, TensorBoard logging,
metrics, checkpoints; progress bar off), timed by its own RunHistory callback.

A third contender, the minimal Lightning run, puts the same net, loss, optimizer and
DataModule in the smallest LightningModule under a Trainer with nothing switched on: the
gap between it and the bare loop is Lightning's own cost per step, the gap between it and
the pipeline is what cnnlab adds (or saves: it trims some of Lightning's bookkeeping).
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from cnnlab.cpu_memory import release_freed_memory
from cnnlab.data import ImageDataModule, IndexBatchSampler
from cnnlab.preprocessing import normalize_tensor
from cnnlab.synthetic import write_cifar10, write_idx_dataset
from cnnlab.training import apply_runtime_settings, train

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


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
    channels_last: bool = False
    optimizer: str = "adadelta"
    reps: int = 5
    accelerator: str = "auto"
    data_dir: Path | None = None  # synthetic data is written here when None
    tiny: bool = False  # a few steps on small synthetic data: checks the machinery only
    # Also train one full Fashion-MNIST epoch in fp32 and in `precision` and compare accuracy.
    accuracy_check: bool = False
    # Seeds of the accuracy check; each trains 2 full epochs (3 with cl). One seed's difference
    # varied with a standard deviation of 0.9 points here: 8 seeds put the mean's standard
    # error near 0.3, 3 seeds near 0.5, too coarse to judge a half-point threshold.
    accuracy_seeds: int = 8
    extra_overrides: list[str] = field(default_factory=list)


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_data(root: Path, tiny: bool) -> dict[str, Any]:
    """MNIST-shaped data (real Fashion-MNIST when installed) and CIFAR-10-shaped data."""
    train, test = (600, 200) if tiny else (60_000, 10_000)
    sources: dict[str, Any] = {}
    if not tiny and (FASHION_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
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
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={'null' if row.steps is None else row.steps}",
        "trainer.num_sanity_val_steps=0",
        f"trainer.precision={settings.precision}",
        f"trainer.accelerator={settings.accelerator}",
        f"model.channels_last={str(settings.channels_last).lower()}",
        "callbacks.progress_bar.enabled=false",
        "callbacks.model_summary.enabled=false",
        f"test={str(test).lower()}",
        *settings.extra_overrides,
    ]
    if settings.tiny:
        overrides += ["trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return cfg


def pipeline_run(cfg: DictConfig, device: torch.device) -> dict[str, Any]:
    clock = _StepClock(StepPhases(enabled=device.type == "cpu"))
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


class BareLoop:
    """An idiomatic PyTorch loop: forward, loss, backward, step; same tensors and order."""

    def __init__(self, cfg: DictConfig, datamodule: ImageDataModule, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in datamodule.splits.items()}
        self.batch_size = int(cfg.data.batch_size)
        self.eval_batch_size = datamodule.eval_batch_size
        self.seed = int(cfg.seed)
        self.autocast = str(cfg.trainer.precision).startswith("bf16")
        self.channels_last = bool(cfg.model.channels_last)
        pl.seed_everything(self.seed, workers=True)  # same initial weights as the pipeline
        net_cfg = dict(cfg.model.net)
        self.net = instantiate(
            net_cfg, sample_shape=datamodule.sample_shape, nb_classes=datamodule.num_classes
        ).to(device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.optimizer = instantiate(cfg.optimizer)(self.net.parameters())

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
        _sync(self.device)
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
        _sync(self.device)
        self.phases = phases
        return time.perf_counter() - start, [float(v) for v in losses]

    @torch.no_grad()
    def evaluate(self, split: str) -> tuple[float, float]:
        """(seconds, accuracy) of one pass over `split`."""
        images, labels = self.splits[split]
        self.net.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        _sync(self.device)
        start = time.perf_counter()
        for index in IndexBatchSampler(
            len(labels), self.eval_batch_size, shuffle=False, device=labels.device
        ):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.net(self._inputs(images[index]))
            F.cross_entropy(logits, labels[index])  # the pipeline computes the loss too
            correct += (logits.argmax(dim=1) == labels[index]).sum()
        _sync(self.device)
        return time.perf_counter() - start, float(correct) / len(labels)


def bare_run(
    cfg: DictConfig, datamodule: ImageDataModule, device: torch.device, steps: int, test: bool
) -> dict[str, Any]:
    loop = BareLoop(cfg, datamodule, device)
    train_s, _ = loop.train_epoch(steps)
    val_s, val_acc = loop.evaluate("val")
    result: dict[str, Any] = {
        "step_ms": loop.phases.medians_ms(),
        "train_s": train_s,
        "epoch_s": train_s + val_s,
        "val_s": val_s,
        "images": min(steps * loop.batch_size, len(loop.splits["train"][1])),
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


class _StepClock(pl.Callback):
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


class _TrainWindow(_StepClock):
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
        _sync(self.device)
        super().on_train_epoch_start(trainer, pl_module)
        self.start = self.last_end

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self.start


def minimal_lightning_run(
    cfg: DictConfig, datamodule: ImageDataModule, device: torch.device, steps: int
) -> dict[str, Any]:
    """Lightning's own floor: no callbacks, logger, metrics, checkpoints or validation."""
    loop = BareLoop(cfg, datamodule, device)  # same seed, so the same initial weights
    module = MinimalModule(loop)
    window = _TrainWindow(device, module.phases)
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
    trainer.fit(module, datamodule=datamodule)
    return {
        "train_s": window.seconds,
        "images": trainer.global_step * loop.batch_size,
        "step_ms": module.phases.medians_ms(),
    }


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _median_phases(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Each phase's median over the runs of its per-step median (see `StepPhases`)."""
    phases = [r["step_ms"] for r in runs if r.get("step_ms")]
    return {name: statistics.median(p[name] for p in phases) for name in (phases or [{}])[0]}


def per_step_verdict(step_ms: dict[str, dict[str, float]]) -> dict[str, float] | None:
    """What the per-step medians say about the pipeline/bare ratio (CPU only).

    `lightning_loop_ms` is how much longer the minimal Lightning run's `rest` is than the
    bare loop's: its loop's own code per step, with the kernels excluded.
    `lightning_ratio_cap` is the ratio of a LightningModule that adds nothing but that code
    to the bare loop's step (cnnlab's trims of Lightning's bookkeeping win back a little of
    it); `pipeline_ratio` is the ratio of median steps, which noise bursts cannot move the
    way they move whole-run totals.
    """
    bare, minimal, pipeline = (step_ms.get(name) for name in ("bare", "minimal", "pipeline"))
    if not (bare and minimal and pipeline):
        return None
    loop_ms = minimal["rest"] - bare["rest"]
    return {
        "pipeline_ratio": bare["step"] / pipeline["step"],
        "lightning_loop_ms": loop_ms,
        "lightning_ratio_cap": bare["step"] / (bare["step"] + loop_ms),
    }


def _best(runs: list[dict[str, float]], key: str) -> float:
    """The fastest of the alternating runs (as `timeit` reports): on a shared machine noise
    only ever adds time, and in bursts that can cover a whole run of one contender."""
    return min(r[key] for r in runs)


def bench_row(
    row: Row, settings: Settings, data: dict[str, Any], data_dir: Path, work: Path
) -> dict[str, Any]:
    option = data[row.data]["option"]
    if row.steps is None:
        raise ValueError(f"benchmark row {row} needs a number of training steps")
    steps = 3 if settings.tiny else row.steps
    row = Row(row.net, row.data, row.batch_size, steps)
    counter = iter(range(10_000))

    def cfg_for(test: bool) -> DictConfig:
        return compose_run(row, settings, option, data_dir, work / f"run{next(counter)}", test)

    release_freed_memory()  # what earlier rows' runs left for reuse is not this row's peak
    rss_per_row = reset_peak_rss()
    probe = cfg_for(False)
    apply_runtime_settings(probe)
    datamodule: ImageDataModule = instantiate(probe.data)
    datamodule.setup()
    device = _device(settings.accelerator)

    # Each measured run also scores the test split (the evaluation throughput), warm-ups not.
    contenders: dict[str, Callable[[bool], dict[str, Any]]] = {
        "pipeline": lambda test: pipeline_run(cfg_for(test), device),
        "bare": lambda test: bare_run(probe, datamodule, device, steps, test=test),
        "minimal": lambda test: minimal_lightning_run(probe, datamodule, device, steps),
    }
    # Warm-up (one-off costs: allocator, oneDNN kernels), then alternate A B C / C B A.
    for run in contenders.values():
        run(False)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for rep in range(settings.reps):
        for name in list(contenders) if rep % 2 == 0 else list(contenders)[::-1]:
            runs[name].append(contenders[name](True))
    pipe_runs, bare_runs = runs["pipeline"], runs["bare"]

    images = pipe_runs[0]["images"]
    step_ms = {name: _median_phases(runs[name]) for name in contenders}
    sizes = {k: len(v[1]) for k, v in datamodule.splits.items()}

    def train_ips(name: str, estimate: Callable[..., float]) -> float:
        return images / estimate(runs[name], "train_s")

    pipe_ips, bare_ips, minimal_ips = (train_ips(n, _best) for n in ("pipeline", "bare", "minimal"))
    pipe_test_ips = sizes["test"] / _best(pipe_runs, "test_s")
    bare_test_ips = sizes["test"] / _best(bare_runs, "test_s")
    pipe_val_ips = sizes["val"] / _best(pipe_runs, "val_s")
    # Share of evaluation in one full epoch (all training images, then the validation pass).
    full_train_s = sizes["train"] / pipe_ips
    full_val_s = sizes["val"] / pipe_val_ips
    return {
        **asdict(row),
        "data_source": data[row.data]["source"],
        "precision": settings.precision,
        "channels_last": settings.channels_last,
        "optimizer": settings.optimizer,
        "device": str(device),
        "estimate": f"best of {settings.reps} alternating runs",
        "train_images_per_s": {
            "pipeline": pipe_ips,
            "bare": bare_ips,
            "ratio": pipe_ips / bare_ips,
            "minimal_lightning": minimal_ips,
            "minimal_lightning_ratio": minimal_ips / bare_ips,
        },
        "step_ms_median": step_ms,
        "per_step": per_step_verdict(step_ms),
        "train_images_per_s_median": {
            name: train_ips(name, _median) for name in ("pipeline", "bare", "minimal")
        },
        "epoch_s": {
            "pipeline": _best(pipe_runs, "epoch_s"),
            "bare": _best(bare_runs, "epoch_s"),
            "train_images": images,
            "val_images": sizes["val"],
        },
        "eval_images_per_s": {
            "pipeline": pipe_test_ips,
            "bare": bare_test_ips,
            "ratio": pipe_test_ips / bare_test_ips,
            "test_images": sizes["test"],
        },
        "full_epoch_estimate_s": full_train_s + full_val_s,
        "eval_share_of_full_epoch": full_val_s / (full_train_s + full_val_s),
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_scope": "this row" if rss_per_row else "process so far",
        "runs": runs,
    }


def accuracy_check(settings: Settings, data_dir: Path, work: Path) -> dict[str, Any]:
    """One full epoch of net_1 on real Fashion-MNIST in fp32 and with `settings.precision`,
    for each of `settings.accuracy_seeds` seeds: a faster precision is only worth it if test
    accuracy stays within half a point. One epoch's accuracy moves by up to 2 points with
    any change in the numerics (even fp32 in another memory layout), so the verdict is the
    mean of the paired differences over several seeds.

    With channels_last, fp32 also trains in that layout (`fp32_same_layout`): the same
    maths summed in another order, which shows how much of the difference is the layout's
    rounding alone and how much is the precision's."""
    row = Row("net_1", "mnist", 32, steps=None)
    variants = {"fp32": ("32-true", False), "fast": (settings.precision, settings.channels_last)}
    if settings.channels_last:
        variants["fp32_same_layout"] = ("32-true", True)
    seeds = [42 + i for i in range(settings.accuracy_seeds)]
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    for seed in seeds:
        for label, (precision, channels_last) in variants.items():
            variant = Settings(
                **{
                    **asdict(settings),
                    "precision": precision,
                    "channels_last": channels_last,
                    "extra_overrides": [*settings.extra_overrides, f"seed={seed}"],
                }
            )
            out_dir = work / f"{label}-seed{seed}"
            cfg = compose_run(row, variant, "fashion_mnist", data_dir, out_dir, test=True)
            with contextlib.redirect_stdout(io.StringIO()):
                summary = train(cfg)
            epoch = summary["history"][0]
            runs[label].append(
                {
                    "seed": seed,
                    "test_acc": summary["test"]["test/acc"],
                    "train_images_per_s": summary["data_sizes"]["train"] / epoch["time/train_s"],
                    "epoch_s": epoch["time/epoch_s"],
                }
            )
    results: dict[str, Any] = {"seeds": seeds}
    for label, (precision, channels_last) in variants.items():
        results[label] = {
            "precision": precision,
            "channels_last": channels_last,
            "test_acc": statistics.mean(r["test_acc"] for r in runs[label]),
            "train_images_per_s": _median(runs[label], "train_images_per_s"),
            "epoch_s": _median(runs[label], "epoch_s"),
            "runs": runs[label],
        }

    def differences_to(baseline: str) -> list[float]:
        return [
            100 * (fast["test_acc"] - base["test_acc"])
            for base, fast in zip(runs[baseline], runs["fast"], strict=True)
        ]

    results["per_seed_difference_points"] = differences_to("fp32")
    results["test_acc_difference_points"] = statistics.mean(differences_to("fp32"))
    if "fp32_same_layout" in runs:
        same_layout = differences_to("fp32_same_layout")
        results["per_seed_difference_to_same_layout_points"] = same_layout
        results["test_acc_difference_to_same_layout_points"] = statistics.mean(same_layout)
    return results


def _device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    return info


def run_benchmark(
    rows: Sequence[Row] = DEFAULT_ROWS, settings: Settings | None = None, out: Path | None = None
) -> dict[str, Any]:
    settings = settings or Settings()
    accuracy = None
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        work = Path(tmp)
        data_dir = settings.data_dir or work / "data"
        data = prepare_data(data_dir, settings.tiny)
        results = [
            bench_row(row, settings, data, data_dir, work / f"row{i}") for i, row in enumerate(rows)
        ]
        if settings.accuracy_check and data["mnist"]["option"] == "fashion_mnist":
            accuracy = accuracy_check(settings, data_dir, work / "accuracy")
    report = {
        "machine": machine(),
        "settings": {**asdict(settings), "data_dir": None},
        "rows": results,
        "accuracy_check": accuracy,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def format_table(report: dict[str, Any]) -> str:
    lines = [
        f"CPU: {report['machine']['cpu']}  GPU: {report['machine']['gpu']}  "
        f"torch {report['machine']['torch']}, {report['machine']['threads']} threads",
        f"{'net':6} {'data':8} {'batch':>5} {'prec':>9} {'train img/s':>30} {'ratio':>6} "
        f"{'min.PL':>6} {'epoch s':>13} {'eval img/s':>21} {'ratio':>6} {'eval%':>6} "
        f"{'RSS MB':>7}",
        f"{'':6} {'':8} {'':>5} {'':>9} {'pipeline':>10} {'bare':>9} {'min.PL':>9} {'':>6} "
        f"{'ratio':>6} {'pipe':>6} {'bare':>6} {'pipeline':>10} {'bare':>10}",
    ]
    for r in report["rows"]:
        prec = r["precision"] + ("+cl" if r["channels_last"] else "")
        t, e, v = r["train_images_per_s"], r["epoch_s"], r["eval_images_per_s"]
        lines.append(
            f"{r['net']:6} {r['data']:8} {r['batch_size']:>5} {prec:>9} {t['pipeline']:>10.0f} "
            f"{t['bare']:>9.0f} {t['minimal_lightning']:>9.0f} {t['ratio']:>6.3f} "
            f"{t['minimal_lightning_ratio']:>6.3f} {e['pipeline']:>6.2f} {e['bare']:>6.2f} "
            f"{v['pipeline']:>10.0f} {v['bare']:>10.0f} {v['ratio']:>6.3f} "
            f"{100 * r['eval_share_of_full_epoch']:>5.1f}% {r['peak_rss_mb']:>7.0f}"
        )
    if report["rows"]:
        lines.append(
            f"img/s and seconds: {report['rows'][0]['estimate']}; ratio = pipeline / bare; "
            "min.PL = the same net and data in a minimal LightningModule (Lightning's own cost)"
        )
    phased = [r for r in report["rows"] if r.get("per_step")]
    if phased:
        lines.append(
            "median ms per training step; rest = fetching the batch, zero_grad and the loop's "
            "own code; PL loop = min.PL's rest - bare's; cap = bare step / (bare step + PL "
            "loop): the ratio with nothing but Lightning's loop code added to the bare loop"
        )
        lines.append(
            f"  {'net':6} {'data':8} {'loop':8} {'forward':>8} {'backward':>9} {'optimizer':>10} "
            f"{'rest':>7} {'step':>8} {'ratio':>6} {'PL loop':>8} {'cap':>6}"
        )
    for r in phased:
        verdict = r["per_step"]
        for label, name in (("bare", "bare"), ("min.PL", "minimal"), ("pipeline", "pipeline")):
            ms = r["step_ms_median"][name]
            parts = " ".join(
                f"{ms[part]:>{width}.2f}" if part in ms else f"{'':>{width}}"
                for part, width in (("forward", 8), ("backward", 9), ("optimizer", 10), ("rest", 7))
            )
            line = f"  {r['net']:6} {r['data']:8} {label:8} {parts} {ms['step']:>8.2f}"
            if name == "pipeline":
                line += (
                    f" {verdict['pipeline_ratio']:>6.3f} {verdict['lightning_loop_ms']:>8.2f} "
                    f"{verdict['lightning_ratio_cap']:>6.3f}"
                )
            lines.append(line)
    check = report.get("accuracy_check")
    if check:
        fp32, fast = check["fp32"], check["fast"]
        layout = "+channels_last" if fast["channels_last"] else ""
        per_seed = ", ".join(f"{d:+.2f}" for d in check["per_seed_difference_points"])
        lines.append(
            f"Fashion-MNIST, net_1, one full epoch, seeds {check['seeds']}: fp32 mean test acc "
            f"{fp32['test_acc']:.4f} ({fp32['train_images_per_s']:.0f} img/s); "
            f"{fast['precision']}{layout} {fast['test_acc']:.4f} "
            f"({fast['train_images_per_s']:.0f} img/s); difference "
            f"{check['test_acc_difference_points']:+.2f} points (per seed {per_seed})"
        )
        if "fp32_same_layout" in check:
            same = check["fp32_same_layout"]
            per_seed = ", ".join(
                f"{d:+.2f}" for d in check["per_seed_difference_to_same_layout_points"]
            )
            lines.append(
                f"fp32 in the same layout (channels_last, other rounding only): "
                f"{same['test_acc']:.4f}; {fast['precision']} against it "
                f"{check['test_acc_difference_to_same_layout_points']:+.2f} points "
                f"(per seed {per_seed})"
            )
    return "\n".join(lines)
