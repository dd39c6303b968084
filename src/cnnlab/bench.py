"""Benchmark: cnnlab's full pipeline against a bare PyTorch loop, in one process.

Both contenders train the same net from the same initial weights on the same uint8
tensors, in the same batch order, with the same optimizer and numerics; they alternate
(A B, B A, ...) so machine noise hits both. The pipeline is a real `cnnlab.training.train`
run (Lightning Trainer, cnnlab's DataModule and LightningModule, TensorBoard logging,
metrics, checkpoints; progress bar off), timed by its own RunHistory callback.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

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
    steps: int  # training steps per measured epoch


DEFAULT_ROWS = (
    Row("net_1", "mnist", 32, 300),
    Row("net_2", "mnist", 32, 300),
    Row("net_1", "cifar10", 128, 40),
    Row("net_2", "cifar10", 128, 40),
)


@dataclass
class Settings:
    precision: str = "32-true"
    channels_last: bool = False
    optimizer: str = "adadelta"
    reps: int = 3
    accelerator: str = "auto"
    data_dir: Path | None = None  # synthetic data is written here when None
    tiny: bool = False  # a few steps on small synthetic data: checks the machinery only
    # Also train one full Fashion-MNIST epoch in fp32 and in `precision` and compare accuracy.
    accuracy_check: bool = False
    extra_overrides: list[str] = field(default_factory=list)


def peak_rss_mb() -> float:
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
        f"trainer.limit_train_batches={row.steps}",
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


def pipeline_run(cfg: DictConfig) -> dict[str, float]:
    summary = train(cfg)
    epoch = summary["history"][0]
    result = {
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
        self.net.train()
        _sync(self.device)
        start = time.perf_counter()
        for step, index in enumerate(sampler):
            if steps is not None and step >= steps:
                break
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                loss = F.cross_entropy(self.net(self._inputs(images[index])), labels[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.detach())
        _sync(self.device)
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
) -> dict[str, float]:
    loop = BareLoop(cfg, datamodule, device)
    train_s, _ = loop.train_epoch(steps)
    val_s, val_acc = loop.evaluate("val")
    result = {
        "train_s": train_s,
        "epoch_s": train_s + val_s,
        "val_s": val_s,
        "images": min(steps * loop.batch_size, len(loop.splits["train"][1])),
        "val_acc": val_acc,
    }
    if test:
        result["test_s"] = loop.evaluate("test")[0]
    return result


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def bench_row(
    row: Row, settings: Settings, data: dict[str, Any], data_dir: Path, work: Path
) -> dict[str, Any]:
    option = data[row.data]["option"]
    steps = 3 if settings.tiny else row.steps
    row = Row(row.net, row.data, row.batch_size, steps)
    counter = iter(range(10_000))

    def cfg_for(test: bool) -> DictConfig:
        return compose_run(row, settings, option, data_dir, work / f"run{next(counter)}", test)

    probe = cfg_for(False)
    apply_runtime_settings(probe)
    datamodule: ImageDataModule = instantiate(probe.data)
    datamodule.setup()
    device = _device(settings.accelerator)

    # Warm-up (one-off costs: allocator, oneDNN kernels), then alternate A B / B A.
    pipeline_run(cfg_for(False))
    bare_run(probe, datamodule, device, steps, test=False)
    pipe_runs: list[dict[str, float]] = []
    bare_runs: list[dict[str, float]] = []
    for rep in range(settings.reps):
        last = rep == settings.reps - 1
        contenders = [("pipe", pipe_runs), ("bare", bare_runs)]
        for name, runs in contenders if rep % 2 == 0 else contenders[::-1]:
            if name == "pipe":
                runs.append(pipeline_run(cfg_for(last)))
            else:
                runs.append(bare_run(probe, datamodule, device, steps, test=last))

    images = pipe_runs[0]["images"]
    pipe_ips = images / _median(pipe_runs, "train_s")
    bare_ips = images / _median(bare_runs, "train_s")
    sizes = {k: len(v[1]) for k, v in datamodule.splits.items()}
    pipe_test_ips = sizes["test"] / pipe_runs[-1]["test_s"]
    bare_test_ips = sizes["test"] / bare_runs[-1]["test_s"]
    pipe_val_ips = sizes["val"] / _median(pipe_runs, "val_s")
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
        "train_images_per_s": {
            "pipeline": pipe_ips,
            "bare": bare_ips,
            "ratio": pipe_ips / bare_ips,
        },
        "epoch_s": {
            "pipeline": _median(pipe_runs, "epoch_s"),
            "bare": _median(bare_runs, "epoch_s"),
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
        "runs": {"pipeline": pipe_runs, "bare": bare_runs},
    }


def accuracy_check(settings: Settings, data_dir: Path, work: Path) -> dict[str, Any]:
    """One full epoch of net_1 on real Fashion-MNIST in fp32 and with `settings.precision`:
    a faster precision is only worth it if test accuracy stays within half a point."""
    row = Row("net_1", "mnist", 32, steps=-1)
    results: dict[str, Any] = {}
    for label, precision, channels_last in (
        ("fp32", "32-true", False),
        ("fast", settings.precision, settings.channels_last),
    ):
        variant = Settings(
            **{**asdict(settings), "precision": precision, "channels_last": channels_last}
        )
        cfg = compose_run(row, variant, "fashion_mnist", data_dir, work / label, test=True)
        cfg.trainer.limit_train_batches = None
        summary = train(cfg)
        epoch = summary["history"][0]
        results[label] = {
            "precision": precision,
            "channels_last": channels_last,
            "test_acc": summary["test"]["test/acc"],
            "train_images_per_s": summary["data_sizes"]["train"] / epoch["time/train_s"],
            "epoch_s": epoch["time/epoch_s"],
        }
    results["test_acc_difference_points"] = 100 * (
        results["fast"]["test_acc"] - results["fp32"]["test_acc"]
    )
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
        f"{'net':6} {'data':8} {'batch':>5} {'prec':>9} {'train img/s':>23} {'ratio':>6} "
        f"{'epoch s':>13} {'eval img/s':>21} {'ratio':>6} {'eval%':>6} {'RSS MB':>7}",
        f"{'':6} {'':8} {'':>5} {'':>9} {'pipeline':>11} {'bare':>11} {'':>6} "
        f"{'pipe':>6} {'bare':>6} {'pipeline':>10} {'bare':>10}",
    ]
    for r in report["rows"]:
        prec = r["precision"] + ("+cl" if r["channels_last"] else "")
        t, e, v = r["train_images_per_s"], r["epoch_s"], r["eval_images_per_s"]
        lines.append(
            f"{r['net']:6} {r['data']:8} {r['batch_size']:>5} {prec:>9} {t['pipeline']:>11.0f} "
            f"{t['bare']:>11.0f} {t['ratio']:>6.3f} {e['pipeline']:>6.2f} {e['bare']:>6.2f} "
            f"{v['pipeline']:>10.0f} {v['bare']:>10.0f} {v['ratio']:>6.3f} "
            f"{100 * r['eval_share_of_full_epoch']:>5.1f}% {r['peak_rss_mb']:>7.0f}"
        )
    check = report.get("accuracy_check")
    if check:
        fp32, fast = check["fp32"], check["fast"]
        layout = "+channels_last" if fast["channels_last"] else ""
        lines.append(
            f"Fashion-MNIST, net_1, one full epoch: fp32 test acc {fp32['test_acc']:.4f} "
            f"({fp32['train_images_per_s']:.0f} img/s); {fast['precision']}{layout} test acc "
            f"{fast['test_acc']:.4f} ({fast['train_images_per_s']:.0f} img/s); difference "
            f"{check['test_acc_difference_points']:+.2f} points"
        )
    return "\n".join(lines)
