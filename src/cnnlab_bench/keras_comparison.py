"""cnnlab's default pipeline against the assignment's own Keras code, on its workload.

net_1 on real Fashion-MNIST, batch 32, the same optimizer; the training split is the
assignment's (`validation_split=0.1`: the first 54,000 images), and a 9,600-image subset of it
(300 batches) that stays in cache, where Keras is at its best. Both get exactly the same images:
they are written once as IDX files that cnnlab reads (`data=mnist`, `data.val_split=last`)
and as arrays that the Keras contender (`keras_assignment.py`, in `.venv-keras`) reads. Each
measurement is one steady-state epoch of training after a warm-up; the contenders alternate.
The bare PyTorch loop (`contenders.BareLoop`) on the same data is the ceiling: what any
Lightning pipeline could reach with torch's kernels on this CPU.
With `load`, the same rounds run again beside that many busy processes, and the table says
what share of its quiet speed each contender keeps.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from cnnlab.data.datasets import DEBIAN_FASHION_MNIST, FashionMNISTDataModule
from cnnlab.data.synthetic import write_idx
from cnnlab.speed.runtime import apply_runtime_settings
from cnnlab_bench.contenders import BareLoop, pipeline_run
from cnnlab_bench.load import busy_processes
from cnnlab_bench.rows import Row, Settings, compose_run
from cnnlab_bench.tables import cpu_kind, write_page

KERAS_SCRIPT = Path(__file__).with_name("keras_assignment.py")
SEED_TRAIN_IMAGES = 54_000  # 60,000 less Keras' validation_split=0.1 (the last 6,000)
WORKLOADS = {"full training split": SEED_TRAIN_IMAGES, "cache-resident subset": 9_600}
CONTENDERS = ("keras", "cnnlab", "bare")


def _write_workload(root: Path, images: np.ndarray, labels: np.ndarray, train: int) -> Path:
    """The first `train` images as cnnlab's IDX folder (train split + 10% validation after
    them, as Keras' validation_split takes the last tenth) and as Keras' arrays."""
    total = round(train / 0.9)
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images[:total])
    write_idx(raw / "train-labels-idx1-ubyte", labels[:total])
    write_idx(raw / "t10k-images-idx3-ubyte", images[:1000])  # read, never tested on
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:1000])
    np.savez(root / "keras.npz", images=images[:train], labels=labels[:train])
    return root


def _keras_epoch(python: Path, arrays: Path, optimizer: str) -> dict[str, Any]:
    done = subprocess.run(
        # -P: the script's folder stays off sys.path, so its neighbours never shadow a package
        [str(python), "-P", str(KERAS_SCRIPT), str(arrays), "--optimizer", optimizer],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Keras contender failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rounds(
    keras_python: Path, folders: dict[str, Path], settings: Settings, work: Path
) -> tuple[dict[str, dict[str, list[float]]], str]:
    """(images/s of each contender's epochs, by workload; TensorFlow's version)."""
    device = torch.device("cpu")
    counter = iter(range(10_000))

    def config(folder: Path, steps: int | None) -> DictConfig:
        row = Row("net_1", "mnist", 32, steps)
        return compose_run(row, settings, "mnist", folder, work / f"run{next(counter)}", False)

    def cnnlab_epoch(folder: Path, steps: int | None) -> dict[str, Any]:
        return pipeline_run(config(folder, steps), device)

    datamodules: dict[Path, Any] = {}  # the bare loop's tensors, read once per workload

    def bare_epoch(folder: Path) -> float:
        cfg = config(folder, None)
        if folder not in datamodules:
            datamodules[folder] = instantiate(cfg.data)
            datamodules[folder].setup()
        datamodule = datamodules[folder]
        seconds, _ = BareLoop(cfg, datamodule, device).train_epoch()
        return len(datamodule.splits["train"][1]) / seconds

    speeds: dict[str, dict[str, list[float]]] = {}
    tensorflow = "?"
    for name, folder in folders.items():
        cnnlab_epoch(folder, 50)  # warm-up: one-off costs (allocator, oneDNN kernels)
        speeds[name] = {contender: [] for contender in CONTENDERS}
        for rep in range(settings.reps):
            for contender in CONTENDERS if rep % 2 == 0 else CONTENDERS[::-1]:
                if contender == "keras":
                    result = _keras_epoch(keras_python, folder / "keras.npz", settings.optimizer)
                    speeds[name]["keras"].append(result["train_images_per_s"])
                    tensorflow = result["tensorflow"]
                elif contender == "cnnlab":
                    result = cnnlab_epoch(folder, None)
                    speeds[name]["cnnlab"].append(result["images"] / result["train_s"])
                else:
                    speeds[name]["bare"].append(bare_epoch(folder))
    return speeds, tensorflow


def run_keras_benchmark(keras_python: Path, settings: Settings) -> dict[str, Any]:
    """Quiet rounds, then (with `settings.load`) the same rounds beside busy processes."""
    settings = replace(settings, extra_overrides=[*settings.extra_overrides, "data.val_split=last"])
    if not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(
            f"Error: the Keras comparison trains on real Fashion-MNIST, expected in "
            f"{DEBIAN_FASHION_MNIST}: apt-get install dataset-fashion-mnist"
        )
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-keras-") as tmp:
        work = Path(tmp)
        source = FashionMNISTDataModule(
            data_dir=work / "source", system_dirs=[DEBIAN_FASHION_MNIST]
        )
        source.prepare_data()  # unpacks the .gz files into the scratch folder
        images, labels = source.read_split(train=True)
        images_np, labels_np = images[:, 0].numpy(), labels.numpy().astype(np.uint8)
        folders = {
            name: _write_workload(work / f"w{i}", images_np, labels_np, train)
            for i, (name, train) in enumerate(WORKLOADS.items())
        }
        probe = compose_run(Row("net_1", "mnist", 32, 1), settings, "mnist", work, work, False)
        conditions = {"quiet": 0}
        if settings.load:
            conditions[f"load {settings.load}"] = settings.load
        measured, threads = {}, {}
        for condition, busy in conditions.items():
            with busy_processes(busy):
                apply_runtime_settings(probe)  # torch threads from the cores free now
                threads[condition] = torch.get_num_threads()
                measured[condition], tensorflow = _rounds(keras_python, folders, settings, work)
    return {
        "settings": {"optimizer": settings.optimizer, "reps": settings.reps, "load": settings.load},
        "tensorflow": tensorflow,
        "torch_threads": threads,
        "measured": measured,
        "median_images_per_s": {
            condition: {
                name: {c: statistics.median(v[c]) for c in CONTENDERS}
                for name, v in by_workload.items()
            }
            for condition, by_workload in measured.items()
        },
    }


def _table(result: dict[str, Any]) -> list[tuple[str, str, int, float, float, float, int]]:
    """(condition, workload, images, Keras, cnnlab and bare loop img/s, torch threads)."""
    return [
        (condition, name, WORKLOADS[name], speeds["keras"], speeds["cnnlab"], speeds["bare"],
         result["torch_threads"][condition])
        for condition, by_workload in result["median_images_per_s"].items()
        for name, speeds in by_workload.items()
    ]  # fmt: skip


def _shares(result: dict[str, Any]) -> list[tuple[str, str, dict[str, float]]]:
    """(condition, workload, each contender's share of its quiet speed) under each load."""
    medians = result["median_images_per_s"]
    return [
        (condition, name, {c: medians[condition][name][c] / medians["quiet"][name][c]
                           for c in CONTENDERS})
        for condition in medians if condition != "quiet"
        for name in WORKLOADS
    ]  # fmt: skip


def _kept(shares: dict[str, float]) -> str:
    names = {"keras": "Keras", "cnnlab": "cnnlab", "bare": "bare loop"}
    return ", ".join(f"{names[c]} {shares[c]:.2f}" for c in CONTENDERS)


def format_keras_table(result: dict[str, Any], cpu: str) -> str:
    lines = [
        f"net_1, real Fashion-MNIST, batch 32, {result['settings']['optimizer']}; {cpu}; "
        f"median of {result['settings']['reps']} alternating epochs, training images/s",
        f"{'condition':12} {'workload':24} {'images':>7} {'Keras':>8} {'cnnlab':>8} "
        f"{'bare':>8} {'cnnlab/Keras':>13} {'bare/Keras':>11} {'torch threads':>14}",
    ]
    for condition, name, images, keras, cnnlab, bare, threads in _table(result):
        lines.append(
            f"{condition:12} {name:24} {images:>7} {keras:>8.0f} {cnnlab:>8.0f} {bare:>8.0f} "
            f"{cnnlab / keras:>13.2f} {bare / keras:>11.2f} {threads:>14}"
        )
    for condition, name, shares in _shares(result):
        lines.append(f"share of its quiet speed kept under {condition}, {name}: {_kept(shares)}")
    return "\n".join(lines)


def keras_markdown(result: dict[str, Any], command: str, when: str) -> str:
    """The comparison as a Markdown page for docs/benchmarks/."""
    m = result["machine"]
    flags = ", ".join(m.get("cpu_flags", [])) or "none of AVX-512, AVX512-BF16, AMX"
    lines = [
        f"# {m['cpu']} ({flags}): cnnlab against the assignment's Keras",
        "",
        f"Generated by `{command}` on {when}: torch {m['torch']}, TensorFlow "
        f"{result['tensorflow']}; net_1, real Fashion-MNIST, batch 32, "
        f"{result['settings']['optimizer']}; median of "
        f"{result['settings']['reps']} alternating steady-state epochs. Do not edit: run the "
        "command again.",
        "",
        "Training images per second (Keras: `model.fit` on the arrays, no validation; cnnlab: "
        "the default pipeline's training time, validation excluded; bare loop: an idiomatic "
        "PyTorch loop over the same tensors, the ceiling of any pipeline on torch's kernels).",
        "",
        "| condition | workload | images | Keras | cnnlab | bare loop | cnnlab / Keras "
        "| bare loop / Keras | torch threads |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for condition, name, images, keras, cnnlab, bare, threads in _table(result):
        lines.append(
            f"| {condition} | {name} | {images:,} | {keras:.0f} | {cnnlab:.0f} | {bare:.0f} "
            f"| {cnnlab / keras:.2f} | {bare / keras:.2f} | {threads} |"
        )
    shares = _shares(result)
    if shares:
        lines.append("")
    for condition, name, kept in shares:
        lines.append(
            f"- Share of its quiet speed kept under {condition} (busy processes), {name}: "
            f"{_kept(kept)}."
        )
    return "\n".join(lines) + "\n"


def write_keras_markdown(result: dict[str, Any], folder: Path, command: str, when: str) -> Path:
    name = f"{cpu_kind(result['machine'])}_keras.md"
    return write_page(folder, name, keras_markdown(result, command, when))
