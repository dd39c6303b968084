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

import copy
import json
import platform
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.data.datamodule import ImageDataModule
from cnnlab.speed.layout import cpu_model_and_flags, use_channels_last
from cnnlab.speed.runtime import apply_runtime_settings
from cnnlab_bench.accuracy import accuracy_check
from cnnlab_bench.contenders import bare_run, minimal_lightning_run, pipeline_run
from cnnlab_bench.load import busy_processes
from cnnlab_bench.rows import (
    DEFAULT_ROWS,
    Row,
    Settings,
    bench_device,
    compose_run,
    prepare_data,
)
from cnnlab_bench.timing import (
    best,
    median,
    median_phases,
    peak_rss_mb,
    release_freed_memory,
    reset_peak_rss,
)


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


# cnnlab's own code per step, measured where it is most of the step: a two-layer MLP at batch
# 32 runs sub-millisecond kernels, so its pipeline step minus its minimal Lightning step is
# what cnnlab's code adds, well above this noise. The real rows' steps are 10-100x longer,
# and run-to-run noise of several per cent hides the same few hundredths of a millisecond.
CODE_PROBE = Row("mlp", "mnist", 32, 1500)
CODE_PROBE_REPS = 5


def code_probe(
    settings: Settings, data: dict[str, Any], data_dir: Path, work: Path
) -> dict[str, Any] | None:
    """The pipeline's and Lightning's code per step (CPU only: phases need no syncs there)."""
    reps = settings.reps if settings.tiny else max(settings.reps, CODE_PROBE_REPS)
    probe = bench_row(CODE_PROBE, replace(settings, reps=reps), data, data_dir, work, layouts=False)
    if not probe["per_step"]:
        return None
    ms = {name: probe["step_ms_median"][name]["step"] for name in ("bare", "minimal", "pipeline")}
    return {
        "row": {key: probe[key] for key in ("net", "data", "batch_size", "steps")},
        "reps": reps,
        "step_ms": ms,
        # What a step of cnnlab's pipeline costs beyond the minimal LightningModule's.
        "pipeline_code_ms": ms["pipeline"] - ms["minimal"],
        "lightning_loop_ms": probe["per_step"]["lightning_loop_ms"],
    }


def add_code_verdicts(rows: list[dict[str, Any]], probe: dict[str, Any] | None) -> None:
    """Each row's pipeline / minimal Lightning as its kernels plus the probe's code cost:
    the minimal run's median step against the same step with cnnlab's code added."""
    if probe is None:
        return
    for row in rows:
        if row.get("per_step"):
            minimal = row["step_ms_median"]["minimal"]["step"]
            row["per_step"]["pipeline_vs_minimal_by_code"] = minimal / (
                minimal + probe["pipeline_code_ms"]
            )


def bench_row(
    row: Row,
    settings: Settings,
    data: dict[str, Any],
    data_dir: Path,
    work: Path,
    layouts: bool = True,
) -> dict[str, Any]:
    """One row's contenders, alternating. With `layouts`, the bare loop also runs in the
    other memory layout (NHWC against NCHW), so the row says what `channels_last` buys on
    this CPU, measured in the same process as everything else."""
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
    device = bench_device(settings.accelerator)
    channels_last = use_channels_last(settings.channels_last, device)

    # Each measured run also scores the test split (the evaluation throughput), warm-ups not.
    contenders: dict[str, Callable[[bool], dict[str, Any]]] = {
        "pipeline": lambda test: pipeline_run(cfg_for(test), device),
        "bare": lambda test: bare_run(probe, datamodule, device, steps, test=test),
        "minimal": lambda test: minimal_lightning_run(probe, datamodule, device, steps),
    }
    if device.type == "cuda":  # the CUDA-graph step: the pipeline's switch, the bare limit
        contenders["pipeline_graph"] = lambda test: pipeline_run(_graphed(cfg_for(test)), device)
        contenders["bare_graph"] = lambda test: bare_run(
            probe, datamodule, device, steps, test=test, graphed=True
        )
    if layouts:
        other = copy.deepcopy(probe)
        other.channels_last = not channels_last
        contenders["bare_other_layout"] = lambda test: bare_run(
            other, datamodule, device, steps, test=False
        )
    # Warm-up (one-off costs: allocator, oneDNN kernels), then alternate A B C / C B A.
    for run in contenders.values():
        run(False)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for rep in range(settings.reps):
        for name in list(contenders) if rep % 2 == 0 else list(contenders)[::-1]:
            runs[name].append(contenders[name](True))
    pipe_runs, bare_runs = runs["pipeline"], runs["bare"]

    images = pipe_runs[0]["images"]
    step_ms = {name: median_phases(runs[name]) for name in contenders}
    sizes = {k: len(v[1]) for k, v in datamodule.splits.items()}

    def train_ips(name: str, estimate: Callable[..., float]) -> float:
        return images / estimate(runs[name], "train_s")

    pipe_ips, bare_ips, minimal_ips = (train_ips(n, best) for n in ("pipeline", "bare", "minimal"))
    pipe_test_ips = sizes["test"] / best(pipe_runs, "test_s")
    bare_test_ips = sizes["test"] / best(bare_runs, "test_s")
    pipe_val_ips = sizes["val"] / best(pipe_runs, "val_s")
    # Share of evaluation in one full epoch (all training images, then the validation pass).
    full_train_s = sizes["train"] / pipe_ips
    full_val_s = sizes["val"] / pipe_val_ips
    return {
        **asdict(row),
        "data_source": data[row.data]["source"],
        "precision": settings.precision,
        "channels_last": channels_last,
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
        "graph_images_per_s": {
            name: train_ips(name, best) for name in ("pipeline_graph", "bare_graph") if name in runs
        },
        "step_ms_median": step_ms,
        "layout": _layout_gain(runs, images, channels_last) if layouts else None,
        "per_step": per_step_verdict(step_ms),
        "train_images_per_s_median": {
            name: train_ips(name, median) for name in ("pipeline", "bare", "minimal")
        },
        "epoch_s": {
            "pipeline": best(pipe_runs, "epoch_s"),
            "bare": best(bare_runs, "epoch_s"),
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


def _graphed(cfg: DictConfig) -> DictConfig:
    cfg.cuda_graph = True
    return cfg


# CPU features that decide which kernels oneDNN runs, as /proc/cpuinfo names them.
CPU_FLAGS = {"avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX"}


def _layout_gain(
    runs: dict[str, list[dict[str, Any]]], images: int, channels_last: bool
) -> dict[str, float]:
    """The bare loop's training images/s in NHWC and in NCHW, and NHWC / NCHW."""
    speeds = {
        layout: images / best(runs[name], "train_s")
        for layout, name in zip(
            ("nhwc", "nchw") if channels_last else ("nchw", "nhwc"),
            ("bare", "bare_other_layout"),
            strict=True,
        )
    }
    return {**speeds, "nhwc_over_nchw": speeds["nhwc"] / speeds["nchw"]}


def machine() -> dict[str, Any]:
    """Where the benchmark ran: CPU model and the features that matter, torch, threads, GPU."""
    model, flags = cpu_model_and_flags()
    cpu = model or platform.processor() or platform.machine()
    return {
        "cpu": cpu,
        "cpu_flags": [label for flag, label in CPU_FLAGS.items() if flag in flags],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def run_benchmark(
    rows: Sequence[Row] = DEFAULT_ROWS, settings: Settings | None = None, out: Path | None = None
) -> dict[str, Any]:
    settings = settings or Settings()
    accuracy = None
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as tmp:
        work = Path(tmp)
        data_dir = settings.data_dir or work / "data"
        data = prepare_data(data_dir, settings.tiny)
        with busy_processes(settings.load):
            probe = None
            if bench_device(settings.accelerator).type == "cpu":
                probe = code_probe(settings, data, data_dir, work / "probe")
            results = [
                bench_row(row, settings, data, data_dir, work / f"row{i}")
                for i, row in enumerate(rows)
            ]
            add_code_verdicts(results, probe)
            if settings.accuracy_check and data["mnist"]["option"] == "fashion_mnist":
                accuracy = accuracy_check(settings, data_dir, work / "accuracy")
    report = {
        "machine": machine(),
        "settings": {**asdict(settings), "data_dir": None},
        "rows": results,
        "code_probe": probe,
        "accuracy_check": accuracy,
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
