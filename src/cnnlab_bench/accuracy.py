"""The accuracy check: does a faster precision keep the test accuracy of fp32 (paired seeds)?"""

from __future__ import annotations

import contextlib
import io
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cnnlab.speed.layout import use_channels_last
from cnnlab.training.run import train
from cnnlab_bench.rows import Row, Settings, bench_device, compose_run
from cnnlab_bench.timing import median


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
    channels_last = use_channels_last(settings.channels_last, bench_device(settings.accelerator))
    variants = {"fp32": ("32-true", False), "fast": (settings.precision, channels_last)}
    if channels_last:
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
            "train_images_per_s": median(runs[label], "train_images_per_s"),
            "epoch_s": median(runs[label], "epoch_s"),
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
