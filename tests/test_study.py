"""The assignment's whole study: models A-F, its Keras log lines and model summaries, one
command and one report that follows the assignment's figures."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from matplotlib.image import imread
from omegaconf import DictConfig

from cnnlab.data.datasets import DEBIAN_FASHION_MNIST
from cnnlab.models.nets import ACTIVATIONS, count_parameters
from cnnlab.models.summary import keras_summary
from cnnlab.results.keras_log import keras_epoch_line
from cnnlab.results.study_report import Part, build_study_report
from cnnlab.study import PLAN, part_title, refusal
from conftest import metrics_of, run_cli

# Our reading of the assignment's models: (activation, hidden sizes) and the parameter counts they
# imply on 28x28 grey images with 10 classes, as a plain MLP and as net_1's dense head
# (net_1's convolutions hold 320 + 18,496 parameters and feed 64 x 14 x 14 = 12,544 features).
HEADS = {
    "A": ("tanh", [10], 784 * 10 + 10 + 10 * 10 + 10, 18_816 + 12_544 * 10 + 10 + 110),
    "B": ("relu", [10], 7_960, 144_376),
    "C": ("tanh", [40], 784 * 40 + 40 + 40 * 10 + 10, 18_816 + 12_544 * 40 + 40 + 410),
    "D": ("relu", [40], 31_810, 521_026),
    "E": ("tanh", [40, 40], 31_400 + 40 * 40 + 40 + 410, 18_816 + 501_800 + 1_640 + 410),
    "F": ("relu", [40, 40], 33_450, 522_666),
}


def _net(cfg: DictConfig) -> torch.nn.Module:
    return instantiate(cfg.model.net, sample_shape=(1, 28, 28), num_classes=10)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_the_six_heads_have_the_sizes_and_counts_the_assignment_describes(
    compose_cfg: Callable[..., DictConfig], head: str
) -> None:
    activation, sizes, mlp_params, net_1_params = HEADS[head]
    mlp = _net(compose_cfg(["model=mlp", f"head={head}"]))
    assert count_parameters(mlp) == mlp_params
    assert [m.out_features for m in mlp if isinstance(m, torch.nn.Linear)] == [*sizes, 10]
    assert all(isinstance(m, ACTIVATIONS[activation]) for m in mlp[2:-1:2])
    assert count_parameters(_net(compose_cfg(["model=net_1", f"head={head}"]))) == net_1_params


def test_assignment_models_sweeps_the_six_heads_with_early_stopping(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    from hydra import compose, initialize_config_dir

    from conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=assignment_models"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params.head == "A,B,C,D,E,F"
    assert cfg.model.net._target_.endswith("nets.mlp") and cfg.trainer.max_epochs == 1000
    stopping = cfg.callbacks.early_stopping
    assert stopping.enabled and stopping.monitor == "val/loss" and stopping.mode == "min"


def test_the_epoch_line_is_keras_verbose_2() -> None:
    metrics = {"train/loss": 0.23451, "train/acc": 0.93117, "val/loss": 0.2567, "val/acc": 0.92}
    assert keras_epoch_line(2, 30, 12.4, metrics) == (
        "Epoch 3/30 - 12s - loss: 0.2345 - accuracy: 0.9312 - val_loss: 0.2567 - "
        "val_accuracy: 0.9200"
    )
    assert keras_epoch_line(0, -1, 1.0, {"train/loss": float("nan")}) == "Epoch 1/? - 1s"


def test_the_model_summary_lists_layers_shapes_and_the_assignments_total() -> None:
    from cnnlab.models.nets import net_2

    text = keras_summary(net_2((1, 28, 28), 10), (1, 28, 28), "net_2")
    assert "(None, 64, 14, 14)" in text and "Total params: 1,625,866" in text
    assert len(re.findall(r"\(Conv2d\)", text)) == 2


@pytest.mark.slow
def test_the_whole_study_writes_one_report_in_the_assignments_order(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "study"
    data = [f"paths.data_dir={synthetic_data_dir}", "data.verify_md5=false"]  # synthetic files
    args = ["debug=fast", *data, "--out", str(out)]
    result = run_cli("study.py", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "assignment_report.md").read_text()
    headings = re.findall(r"^## (.+)$", report, flags=re.M)
    figures = ["Figs. 1-3", "Fig. 4", "Fig. 5", "Fig. 7", "Fig. 8", "Fig. 9", "Figs. 10-11"]
    positions = [next(i for i, h in enumerate(headings) if f in h) for f in figures]
    assert positions == sorted(positions), headings  # in the assignment's order
    assert any(h.startswith("Sensitivity and specificity") for h in headings)
    assert "Total params: 1,625,866" in report and "Total params: 2,117,962" in report
    assert re.search(r"^Epoch 1/1 - \d+s - loss: [\d.]+ - accuracy: ", report, flags=re.M)
    jobs = sorted(p.name for p in (out / "models").iterdir() if p.is_dir())
    assert jobs == [f"{n}_model_{m}" for n, m in enumerate("ABCDEF")]
    assert metrics_of(out / "models" / "5_model_F")["label"] == "model F"
    assert "| models/5_model_F | model F | completed |" in report
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert len(images) >= 8
    for image in images:
        assert imread(out / image).shape[0] > 100  # a real PNG, drawn


def test_the_study_names_missing_datasets_before_training(tmp_path: Path) -> None:
    result = run_cli("study.py", f"paths.data_dir={tmp_path / 'none'}", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "the study cannot start: it lacks these datasets: MNIST and CIFAR-10." in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    if (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():  # stands in for MNIST
        assert last.startswith(
            "With the data at hand, run: python src/study.py --parts mnist,models"
        )
        assert last.endswith(f"data=fashion_mnist --out {tmp_path}")
    else:
        assert last == "No part of the study has its data here: get the files as said above."
    assert not list(tmp_path.glob("*/report.md"))  # nothing trained


NO_CIFAR = {"cifar10": ("CIFAR-10", "CIFAR-10: downloading failed.\nFix: copy the files.")}
NO_MNIST = {name: ("MNIST", "MNIST: not found.") for name in ("mnist", "models")}
RUN = "With the data at hand, run: python src/study.py --parts"


@pytest.mark.parametrize(
    ("problems", "args", "fashion", "said"),
    [
        (NO_CIFAR, ["data=fashion_mnist"], False,
         f"{RUN} mnist,models data=fashion_mnist"),
        (NO_CIFAR, ["trainer.max_epochs=2"], True,
         f"{RUN} mnist,models trainer.max_epochs=2"),
        ({**NO_MNIST, **NO_CIFAR}, [], True,
         f"{RUN} mnist,models data=fashion_mnist"),
        (NO_MNIST, ["seed=1"], False,
         f"{RUN} cifar10 seed=1"),
        ({**NO_MNIST, **NO_CIFAR}, [], False,
         "No part of the study has its data here: get the files as said above."),
    ],
    ids=["data chosen", "MNIST here", "Fashion-MNIST stands in", "CIFAR-10 only", "none"],
)  # fmt: skip
def test_the_refusal_names_the_parts_that_run_with_the_data_at_hand(
    problems: dict[str, tuple[str, str]], args: list[str], fashion: bool, said: str
) -> None:
    message = refusal(problems, PLAN, args, fashion_at_hand=fashion).splitlines()
    datasets = " and ".join(dict.fromkeys(dataset for dataset, _ in problems.values()))
    assert message[0] == f"the study cannot start: it lacks these datasets: {datasets}."
    assert message[-1] == said
    assert sum("MNIST: not found." in line for line in message) == ("mnist" in problems)
    if "cifar10" in problems:  # each line of a dataset's message indented under the first
        assert "  CIFAR-10: downloading failed." in message and "  Fix: copy the files." in message


def test_each_part_is_titled_with_the_dataset_it_trains_on() -> None:
    mnist, cifar10, models = PLAN
    assert "net_1 and net_2 on MNIST with" in part_title(mnist, [])
    assert "net_1 and net_2 on Fashion-MNIST with" in part_title(mnist, ["data=fashion_mnist"])
    assert "models A-F on Fashion-MNIST" in part_title(models, ["data=fashion_mnist"])
    assert part_title(cifar10, ["data=fashion_mnist"]).startswith("net_1 on CIFAR-10 ")


def test_parts_left_out_are_marked_skipped_and_their_commands_not_shown(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    run = models_dir / "5_model_F"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("model: {}\n")
    record = {"status": "completed", "best": {"val/acc": 0.9, "epoch": 0}, "epochs": 1}
    (run / "metrics.json").write_text(json.dumps(record | {"test": {"test/acc": 0.8}}))
    args = ["data=fashion_mnist"]
    mnist, cifar10, models = (
        Part(p.name, part_title(p, args), f"python src/train.py -m {p.overrides[0]}",
             tmp_path / p.name, None if p.name == "models" else "not in --parts")
        for p in PLAN
    )  # fmt: skip
    report = build_study_report(tmp_path, mnist, cifar10, models).read_text()
    assert "its run did not start" not in report
    assert "No model summary of net_1: the part net_1 and net_2 on Fashion-MNIST" in report
    assert report.count("skipped (not in --parts)") >= 6
    assert "experiment=assignment_mnist" not in report  # commands that did not run
    assert "experiment=assignment_cifar10" not in report
    assert "`python src/train.py -m experiment=assignment_models` | 1 | 1 |" in report
    assert "on MNIST" not in report and "**model_F**" not in report
    assert re.search(r"^\| models/5_model_F \| .* \| completed \|", report, flags=re.M)
