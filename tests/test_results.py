"""Per-run results (confusion matrices, per-class metrics, figures) and the sweep report."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import re
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from matplotlib.image import imread
from matplotlib.text import Text
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.functional.classification import multiclass_confusion_matrix

from cnnlab.data import MNISTDataModule
from cnnlab.models.classifier import ImageClassifier
from cnnlab.models.metrics import ConfusionMatrix
from cnnlab.results import report as report_module
from cnnlab.results import run_files
from cnnlab.results.confusion import normalize_rows
from cnnlab.results.figures import (
    confusion_grid_figure,
    curves_figure,
    sweep_curves_figure,
    times_figure,
    to_rgb,
)
from cnnlab.results.report import build_report, rebuild_command
from cnnlab.results.sweep_summary import SweepSummary, jobs_table
from cnnlab.results.text import PlainLogText
from cnnlab.scale.sweeps import job_dir_name
from cnnlab.training import dashboard
from cnnlab.training.dashboard import dashboard_hparams
from cnnlab.training.run import train
from conftest import ROOT, metrics_of, run_cli, run_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OPTIMIZERS = ["adadelta", "adam", "adagrad"]
TRAIN_BATCHES, BATCH_SIZE = 4, 32


# -- a tiny real sweep, run once for the module -----------------------------------------------
@pytest.fixture(scope="module")
def sweep(synthetic_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three-optimizer sweep by the real CLI, with checkpoints, two epochs of a few batches;
    each optimizer once with a valid and once with an invalid learning rate (a failed job)."""
    logs = tmp_path_factory.mktemp("outputs")
    result = run_cli(
        "train.py",
        "-m",
        f"optimizer={','.join(OPTIMIZERS)}",
        "optimizer.lr=0.01,-1",
        f"paths.data_dir={synthetic_data_dir}",
        f"paths.log_dir={logs}",
        "trainer.max_epochs=2",
        f"trainer.limit_train_batches={TRAIN_BATCHES}",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.num_sanity_val_steps=0",
    )
    (folder,) = sorted(logs.glob("train/multiruns/*"))
    jobs = sorted((p for p in folder.iterdir() if (p / ".hydra").is_dir()), key=_job_number)
    return {"result": result, "folder": folder, "jobs": jobs, "data_dir": synthetic_data_dir}


def _job_number(folder: Path) -> int:
    return int(folder.name.split("_", 1)[0])


def _completed(sweep: dict[str, Any]) -> list[Path]:
    return [job for job in sweep["jobs"] if "lr=0.01" in job.name]


def _table(report: str) -> dict[str, dict[str, str]]:
    """The runs table of report.md, as {run folder: {column: cell}}."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| run | label |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def _section(report: str, title: str) -> str:
    """The text of the report section whose heading starts with `title`."""
    match = re.search(rf"^#+ {re.escape(title)}.*?$(.*?)(?=^#+ |\Z)", report, re.M | re.S)
    assert match, f"no section {title!r} in the report"
    return match.group(1)


def _assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} is missing"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


# -- the sweep and its report -------------------------------------------------------------------
def test_a_sweep_with_a_failed_job_still_writes_its_report_then_fails(
    sweep: dict[str, Any],
) -> None:
    result = sweep["result"]
    assert result.returncode != 0
    assert "3 job(s) of the sweep did not complete" in result.stderr
    assert (sweep["folder"] / "report.md").is_file()
    assert "Sweep report:" in result.stdout
    assert len(sweep["jobs"]) == 6


def test_report_table_rows_match_each_runsmetrics_of(sweep: dict[str, Any]) -> None:
    rows = _table((sweep["folder"] / "report.md").read_text())
    assert set(rows) == {job.name for job in sweep["jobs"]}
    for job in _completed(sweep):
        metrics, row = metrics_of(job), rows[job.name]
        assert metrics["status"] == row["status"] == "completed"
        assert f"optimizer={metrics['choices']['optimizer']}" in row["label"]
        assert "paths." not in row["label"] and "max_epochs" not in row["label"]
        assert row["best val acc"] == f"{metrics['best']['val/acc']:.4f}"
        assert row["best epoch"] == str(metrics["best"]["epoch"])
        assert row["test acc"] == f"{metrics['test']['test/acc']:.4f}"
        assert row["test loss"] == f"{metrics['test']['test/loss']:.4f}"
        assert row["epochs"] == str(metrics["epochs"]) == "2"
        assert row["train time (s)"] == f"{metrics['time']['train_s']:.1f}"
        assert row["params"] == f"{metrics['params']:,}" == "1,625,866"


def test_report_figures_exist_and_are_valid_pngs(sweep: dict[str, Any]) -> None:
    folder = sweep["folder"]
    report = (folder / "report.md").read_text()
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    expected = {
        "train_times",
        "curves",
        "confusion_train",
        "confusion_val",
        "best_test_confusion",
    }
    assert {Path(p).name for p in linked} == {f"report_{name}.png" for name in expected}
    for relative in linked:
        _assert_png(folder / relative)
    for job in _completed(sweep):
        for name in ("curves", "confusion_train", "confusion_val", "confusion_test"):
            _assert_png(job / f"{name}.png")


def test_report_best_run_has_the_highest_validation_accuracy(sweep: dict[str, Any]) -> None:
    report = (sweep["folder"] / "report.md").read_text()
    runs = [(job, metrics_of(job)) for job in _completed(sweep)]
    best_acc = max(m["best"]["val/acc"] for _, m in runs)
    best_job, best = next((j, m) for j, m in runs if m["best"]["val/acc"] == best_acc)
    section = _section(report, "Best run by validation accuracy")
    assert f"`{best_job.name}`" in section
    assert f"Test accuracy: **{best['test']['test/acc']:.4f}**" in section
    assert "| class | precision | recall (sensitivity) | specificity | support |" in section


def test_failed_jobs_appear_in_the_report_as_failed(sweep: dict[str, Any]) -> None:
    report = (sweep["folder"] / "report.md").read_text()
    rows = _table(report)
    failed = [job for job in sweep["jobs"] if "lr=-1" in job.name]
    assert len(failed) == 3
    section = _section(report, "Runs that did not complete")
    for job in failed:
        assert rows[job.name]["status"] == "failed"
        assert f"| {job.name} | failed | ConfigError: optimizer.lr=-1 is invalid" in section


# -- what each run leaves ------------------------------------------------------------------------
def test_run_matrices_agree_with_the_runs_ownmetrics_of(sweep: dict[str, Any]) -> None:
    for job in _completed(sweep):
        metrics = metrics_of(job)
        confusion = json.loads((job / "confusion.json").read_text())
        epoch = metrics["best"]["epoch"]
        assert confusion["epoch"] == epoch and confusion["class_names"] == metrics["class_names"]
        history = metrics["history"][epoch]
        sizes = metrics["data_sizes"]
        expected = {
            # the training matrix counts the training steps' own predictions during the epoch
            "train": (TRAIN_BATCHES * BATCH_SIZE, history["train/acc"]),
            "val": (sizes["val"], history["val/acc"]),
            "test": (sizes["test"], metrics["test"]["test/acc"]),
        }
        for split, (total, accuracy) in expected.items():
            counts = np.array(confusion[split])
            assert counts.sum() == total, split
            assert np.trace(counts) / counts.sum() == pytest.approx(accuracy, abs=1e-6), split
        assert [e["epoch"] for e in confusion["per_epoch"]] == [0, 1]

        counts = np.array(confusion["test"], dtype=float)
        tp, predicted, actual = np.diag(counts), counts.sum(0), counts.sum(1)
        tn = counts.sum() - predicted - actual + tp
        per_class = metrics["test_per_class"]
        assert list(per_class) == metrics["class_names"]
        for i, row in enumerate(per_class.values()):
            assert row["support"] == actual[i]
            assert row["recall"] == pytest.approx(tp[i] / actual[i], abs=1e-6)
            assert row["specificity"] == pytest.approx(tn[i] / (tn[i] + predicted[i] - tp[i]))
            want = tp[i] / predicted[i] if predicted[i] else 0.0
            assert row["precision"] == pytest.approx(want, abs=1e-6)


def test_test_matrix_equals_a_direct_count_of_the_checkpoints_predictions(
    sweep: dict[str, Any],
) -> None:
    job = _completed(sweep)[1]
    metrics = metrics_of(job)
    model = ImageClassifier.load_from_checkpoint(metrics["best"]["checkpoint"], map_location="cpu")
    datamodule = MNISTDataModule(data_dir=sweep["data_dir"])
    datamodule.setup()
    images, labels = datamodule.splits["test"]
    with torch.no_grad():
        predictions = model.eval()(datamodule.on_after_batch_transfer(images, 0)).argmax(1)
    direct = np.zeros((10, 10), dtype=int)
    np.add.at(direct, (labels.numpy(), predictions.numpy()), 1)
    saved = json.loads((job / "confusion.json").read_text())["test"]
    assert direct.sum() == 200
    np.testing.assert_array_equal(np.array(saved), direct)


def test_tensorboard_shows_the_curves_and_the_confusion_matrices(sweep: dict[str, Any]) -> None:
    events = EventAccumulator(str(_completed(sweep)[0]), size_guidance={})
    events.Reload()
    images = set(events.Tags()["images"])
    assert {f"normalised_confusion/{split}" for split in ("train", "val", "test")} == images
    assert {"loss/train", "accuracy/val", "time/train_s"} <= set(events.Tags()["scalars"])
    matrix = events.Images("normalised_confusion/test")[0].encoded_image_string
    assert matrix[:8] == PNG_SIGNATURE


# -- the report builder on a synthetic sweep folder ------------------------------------------------
def _edit(job: Path, val_acc: float, test_acc: float) -> None:
    metrics = metrics_of(job)
    metrics["best"]["val/acc"] = val_acc
    metrics["test"]["test/acc"] = test_acc
    (job / "metrics.json").write_text(json.dumps(metrics))


def test_best_run_is_chosen_by_validation_never_by_test(
    sweep: dict[str, Any], tmp_path: Path
) -> None:
    """Copies of the three runs, edited so the best by test is the worst by validation; plus a
    diverged run, a job that left no record, and an evaluation run (not a training run)."""
    folder = tmp_path / "sweep"
    copies = []
    for job in _completed(sweep):
        copy = folder / job.name
        shutil.copytree(
            job, copy, ignore=shutil.ignore_patterns("checkpoints", "events.out.tfevents.*")
        )
        copies.append(copy)
    _edit(copies[0], val_acc=0.95, test_acc=0.50)
    _edit(copies[1], val_acc=0.90, test_acc=0.99)
    _edit(copies[2], val_acc=0.80, test_acc=0.70)
    diverged = folder / "6_optimizer=sgd"
    shutil.copytree(copies[0] / ".hydra", diverged / ".hydra")
    (diverged / "metrics.json").write_text(
        json.dumps(
            {
                "status": "diverged",
                "error": "loss is nan",
                "diverged_at": {"epoch": 1, "step": 7},
                "overrides": ["optimizer=sgd"],
            }
        )
    )
    no_record = folder / "7_optimizer=adam_keras"
    shutil.copytree(copies[0] / ".hydra", no_record / ".hydra")
    evaluation = folder / "eval_run"
    (evaluation / ".hydra").mkdir(parents=True)
    (evaluation / ".hydra" / "config.yaml").write_text("task_name: eval\nckpt_path: x.ckpt\n")
    (evaluation / "metrics.json").write_text(json.dumps({"status": "completed", "test": {}}))

    result = run_cli("report.py", str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (folder / "report.md").read_text()
    rows = _table(report)
    assert set(rows) == {c.name for c in copies} | {diverged.name, no_record.name}
    assert rows[copies[1].name]["test acc"] == "0.9900"
    best = _section(report, "Best run by validation accuracy")
    assert f"`{copies[0].name}`" in best and "**0.9500**" in best
    assert "Test accuracy: **0.5000**" in best and copies[1].name not in best
    failed = _section(report, "Runs that did not complete")
    assert f"| {diverged.name} | diverged | diverged at epoch 1, step 7; loss is nan |" in failed
    assert f"| {no_record.name} | no metrics.json |" in failed
    assert "built in" in result.stdout


def test_a_single_run_folder_gets_its_own_report(sweep: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    job = _completed(sweep)[1]
    shutil.copytree(job, run, ignore=shutil.ignore_patterns("checkpoints", "events.out.tfevents.*"))
    report = build_report(run)
    assert [r.folder for r in report.runs] == [run] and report.groups[0].best.folder == run
    assert _table(report.path.read_text())["run"]["status"] == "completed"
    _assert_png(run / "report_best_test_confusion.png")


def test_report_on_a_folder_without_runs_says_so(tmp_path: Path) -> None:
    result = run_cli("report.py", str(tmp_path))
    assert result.returncode != 0
    assert "No training runs in" in result.stderr and "Traceback" not in result.stderr


# -- the matrices themselves -----------------------------------------------------------------------
def test_normalised_rows_sum_to_one_and_empty_rows_are_zeros() -> None:
    counts = np.array([[5, 3, 2], [0, 0, 0], [1, 0, 7]])
    normalised = normalize_rows(counts)
    assert not np.isnan(normalised).any()
    np.testing.assert_allclose(normalised.sum(axis=1), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(normalised[0], [0.5, 0.3, 0.2])


def test_confusion_counts_equal_a_direct_count_of_the_predictions() -> None:
    generator = torch.Generator().manual_seed(0)
    metric = ConfusionMatrix(num_classes=4)
    direct = np.zeros((4, 4), dtype=int)
    all_logits, all_labels = [], []
    for size in (32, 32, 7):  # several updates, as steps make them, the last one short
        logits = torch.randn(size, 4, generator=generator)
        labels = torch.randint(0, 3, (size,), generator=generator)  # class 3 never occurs
        metric.update(logits, labels)
        np.add.at(direct, (labels.numpy(), logits.argmax(1).numpy()), 1)
        all_logits.append(logits)
        all_labels.append(labels)
    counts = metric.compute()
    np.testing.assert_array_equal(counts.numpy(), direct)
    reference = multiclass_confusion_matrix(torch.cat(all_logits), torch.cat(all_labels), 4)
    assert torch.equal(counts, reference)
    assert normalize_rows(counts.numpy())[3].tolist() == [0.0, 0.0, 0.0, 0.0]
    metric.reset()  # as the module does at each epoch start
    metric.update(torch.tensor([2, 0]), torch.tensor([1, 1]))  # class indices work too
    assert metric.compute().sum() == 2 and metric.compute()[1].tolist() == [1, 0, 1, 0]


def test_a_folder_of_sweeps_gets_one_section_per_sweep(
    sweep: dict[str, Any], tmp_path: Path
) -> None:
    for name in ("sweep_a", "sweep_b"):
        for job in sweep["jobs"][:2]:  # one completed, one failed job each
            shutil.copytree(job, tmp_path / name / job.name, ignore=shutil.ignore_patterns("ch*"))
    report = build_report(tmp_path)
    text = report.path.read_text()
    assert [g.folder.name for g in report.groups] == ["sweep_a", "sweep_b"]
    assert "## Sweep `sweep_a`" in text and "## Sweep `sweep_b`" in text
    assert len(report.runs) == 4 and text.count("| failed | ConfigError") == 2
    for name in ("sweep_a", "sweep_b"):
        _assert_png(tmp_path / f"report_{name}_confusion_val.png")
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("sweep_")]


# -- labels are text, and a report survives any record -------------------------------------------
NASTY = "<img src=x onerror=alert(1)> $x^$ a|b\n## injected \x1b[2J\x1b]0;title\x07 _"
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells, split at its unescaped pipes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def _write_run(folder: Path, record: Any, confusion: Any = None) -> Path:
    """A run folder as src/train.py leaves one, with a record written by the test itself."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("model: {}\n")
    (folder / ".hydra" / "overrides.yaml").write_text(f"- seed={folder.name}\n")
    (folder / "metrics.json").write_text(json.dumps(record))
    if confusion is not None:
        (folder / "confusion.json").write_text(json.dumps(confusion))
    return folder


def _completed_record(val_acc: float, **fields: Any) -> dict[str, Any]:
    history = [{"epoch": e, "train/loss": 1.0 - e / 10, "val/acc": val_acc} for e in range(2)]
    return {
        "status": "completed",
        "best": {"epoch": 1, "val/acc": val_acc, "val/loss": 0.5, "checkpoint": None},
        "test": {"test/acc": 0.5, "test/loss": 0.7, "checkpoint": "final weights"},
        "time": {"train_s": 1.5},
        "epochs": 2,
        "params": 1234,
        "history": history,
        **fields,
    }


def _report_script() -> Any:
    """src/report.py as a module, to run its main() in this process."""
    spec = importlib.util.spec_from_file_location("report_script", ROOT / "src" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_shows_labels_statuses_errors_and_class_names_as_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = ["<i>cat</i>", "$c^$|\x1b[2J"]
    matrix = [[3, 1], [0, 4]]
    per_class = {
        n: {"precision": 1.0, "recall": 1.0, "specificity": 1.0, "support": 4} for n in names
    }
    sweep = tmp_path / "sweep"
    _write_run(
        sweep / "0_a",
        _completed_record(0.9, label=NASTY, test_per_class=per_class),
        {"class_names": names, "epoch": 1, "train": matrix, "val": matrix, "test": matrix},
    )
    _write_run(sweep / "1_<b>x|y", _completed_record(0.5, label="$y_$"))
    _write_run(sweep / "2_b", {"status": "failed|x\n# status", "error": NASTY, "label": "<s>"})

    report = build_report(sweep)
    text = report.path.read_text()
    assert not re.search(r"<(img|i|b|s|script)\b", text) and "&lt;img src=x" in text
    assert not CONTROL.search(text)
    assert not re.search(r"^#+ (injected|status)", text, re.M)  # no heading from a value
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| class"):
            assert len(_cells(line)) in (3, 5, 11), line  # one row, its own cells
    failed = _section(text, "Runs that did not complete")
    assert "| 2_b | failed\\|x # status | &lt;img src=x onerror=alert(1)&gt; $x^$ a\\|b" in failed
    assert "| &lt;i&gt;cat&lt;/i&gt; | 1.0000 |" in _section(text, "Best run by validation")
    assert report.groups[0].figure_errors == {}  # every figure drew its `$...$` text
    for name in ("train_times", "curves", "confusion_train", "best_test_confusion"):
        _assert_png(sweep / f"report_{name}.png")

    assert _report_script().main([str(sweep)]) == 0
    printed = capsys.readouterr()
    assert not CONTROL.search(printed.out + printed.err) and "&lt;img" in printed.out


def test_figures_draw_labels_as_written() -> None:
    """`$...$` would be mathtext (an odd one raises), `_x` a label the legend hides."""
    labels = ["$x^$", "_hidden", "a\x1b[2Jb", "L" * 300]
    history = [{"epoch": 0, "train/loss": 1.0, "val/loss": 0.9}]
    figures = [
        times_figure(labels, [1.0] * len(labels)),
        sweep_curves_figure([(label, history) for label in labels]),
        confusion_grid_figure([(label, [[1, 0], [0, 1]], labels[:2]) for label in labels], "$t^$"),
        curves_figure(history, title="$x^$"),
    ]
    for figure in figures:
        to_rgb(figure)  # draws every text: raises on mathtext it cannot parse
    texts = [t.get_text() for figure in figures for t in figure.findobj(Text)]
    assert not any(CONTROL.search(t.replace("\n", "")) for t in texts)
    legend = [t.get_text() for t in figures[1].axes[0].get_legend().get_texts()]
    assert any("_hidden" in t for t in legend) and len(legend) == 2 * len(labels)


def test_a_figure_that_fails_to_draw_leaves_the_run_completed(
    synthetic_data_dir: Path,
    compose_cfg: Callable[..., DictConfig],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot draw this")

    monkeypatch.setattr(run_files, "curves_figure", broken)
    monkeypatch.setattr(dashboard, "to_rgb", broken)
    cfg = compose_cfg(["debug=fast", f"paths.data_dir={synthetic_data_dir}", "logger=tensorboard"])
    summary = train(cfg)
    record = metrics_of(Path(cfg.paths.output_dir))
    assert summary["status"] == record["status"] == "completed"
    assert record["best"]["val/acc"] is not None and "test/acc" in record["test"]
    folder = Path(cfg.paths.output_dir)
    assert not (folder / "curves.png").exists() and (folder / "confusion_test.png").is_file()
    assert "curves.png could not be drawn (the run's results are kept)" in caplog.text


def test_job_folders_of_long_or_odd_labels_are_short_distinct_and_plain() -> None:
    names = {
        job_dir_name(0, "/sweep", label)
        for label in ("L" * 300, "L" * 299 + "M", "é" * 300, "a/b\x1b[2J\x1b]0;t\x07 c")
    }
    assert len(names) == 4
    for name in names:
        assert len(name.encode()) <= 130 and not CONTROL.search(name) and "/" not in name
    assert "0_a-b[2J]0;t_c" in names
    assert job_dir_name(0, "/sweep", "L" * 300) == f"0_{'L' * 111}~{_sha1('L' * 300)[:8]}"


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def test_tensorboard_hparams_and_log_lines_hold_no_control_characters(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    cfg = compose_cfg(["run_label='a\x1b[2Jb\x1b]0;t\x07'"])
    assert dashboard_hparams(cfg, {}, ["run_label"])["run_label"] == "a[2Jb]0;t"

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(PlainLogText())
    logger = logging.getLogger("cnnlab.test_plain_log")
    logger.addHandler(handler)
    try:
        logger.warning("job %s:\n  %s", "a\x1b[2Jb", "c\x9bd")
        try:
            raise ValueError("\x1b]0;title\x07")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().startswith("job a[2Jb:\n  cd\nfailed\nTraceback")
    assert not CONTROL.search(stream.getvalue()) and "ValueError: ]0;title" in stream.getvalue()


def test_a_label_of_mathtext_html_escapes_and_300_characters_completes_and_reports(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    """The real sweep: its job completes with its metrics, its folder name fits, the report is
    built, and nothing the label holds reaches the console, the log or report.md as markup."""
    label = "$x^$ <script>alert(1)</script> \x1b[2J\x1b]0;title\x07 " + "L" * 300
    result, sweep = run_sweep(
        synthetic_data_dir,
        tmp_path,
        f"run_label='{label}'",
        "debug=fast",
        "callbacks.progress_bar.enabled=false",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    assert len(job.name.encode()) <= 130 and not CONTROL.search(job.name)
    record = metrics_of(job)
    assert record["status"] == "completed" and record["label"] == label
    assert record["best"]["val/acc"] is not None and "test/acc" in record["test"]
    report = (sweep / "report.md").read_text()
    outside_code = re.sub(r"(`+).*?\1", "", report)  # a code span shows its text literally
    assert "&lt;script&gt;" in report and "<script>" not in outside_code
    assert not CONTROL.search(report)
    assert (job / "curves.png").is_file() and (sweep / "report_curves.png").is_file()
    shown = result.stdout + result.stderr + (job / "train.log").read_text()
    assert "$x^$ <script>" in shown and not CONTROL.search(shown.replace("\n", ""))


MISTYPED: dict[str, tuple[Any, str]] = {  # job folder: (its metrics.json, what the report names)
    "1_params": (
        {"status": "completed", "params": "abc"},
        'params must be a whole number, not a string ("abc")',
    ),
    "2_best": (
        {"status": "completed", "best": [1, 2]},
        "best must be an object, not a list ([1, 2])",
    ),
    "3_list": ([{"status": "completed"}], "the file must be an object, not a list"),
    "4_history": ({"status": "completed", "history": "x"}, "history must be a list"),
    "5_string_number": (
        {"status": "completed", "best": {"val/acc": "0.99"}},
        'best.val/acc must be a number, not a string ("0.99")',
    ),
    "6_epoch": ({"status": "completed", "history": [{"epoch": "x"}]}, "history[0].epoch must be"),
    "7_per_class": (
        {"status": "completed", "test_per_class": {"cat": {"precision": 1}}},
        "test_per_class.cat.recall is missing",
    ),
    "8_status": ({"status": 5}, "status must be a string, not a number (5)"),
    "9_test": (
        {"status": "completed", "test": {"test/acc": True}},
        "test.test/acc must be a number",
    ),
    "10_time": ({"status": "completed", "time": {"train_s": "1"}}, "time.train_s must be a number"),
    "11_overrides": ({"status": "completed", "overrides": "seed=1"}, "overrides must be a list"),
    "12_no_status": ({"best": {}}, "status is missing"),
}


def test_a_mistyped_metrics_json_makes_its_job_unreadable_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    _write_run(sweep / "0_good", _completed_record(0.8, label="good"))
    for name, (record, _) in MISTYPED.items():
        _write_run(sweep / name, record)
    _write_run(  # sound metrics, a confusion.json of the wrong shape
        sweep / "13_confusion", _completed_record(0.9), {"class_names": ["a"], "test": [[1, 2]]}
    )

    report = build_report(sweep)
    runs = {run.name: run for run in report.runs}
    problems = "; ".join(report.problems)
    for name, (_, named) in MISTYPED.items():
        assert runs[name].status == "unreadable", name
        assert f"{name}: its metrics.json cannot be read: {named}" in problems
    assert "13_confusion: its confusion.json cannot be read: test must be a square" in problems
    assert report.groups[0].best.name == "13_confusion"  # its metrics are sound
    text = report.path.read_text()
    assert text.count("**Incomplete:**") == 1 and text.count("| unreadable |") == 2 * len(
        MISTYPED
    )  # both tables

    assert _report_script().main([str(sweep)]) == 1  # named, the report written, no traceback
    assert "params must be a whole number" in capsys.readouterr().err

    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as stop:
        SweepSummary().on_multirun_end(config)
    assert stop.value.code == 1
    closing = capsys.readouterr().err
    assert f"{len(MISTYPED)} job(s) of the sweep did not complete" in closing
    assert "  1_params: unreadable (its metrics.json cannot be read: params must be" in closing
    assert "  3_list: unreadable (its metrics.json cannot be read: the file must be" in closing


@pytest.fixture
def stop_signals_fail_the_test() -> Any:
    """SIGINT and SIGTERM raise here if they reach the test's own handlers (instead of
    killing pytest): the report must have taken them over."""

    def reached(signum: int, frame: Any) -> None:
        raise AssertionError(f"{signal.Signals(signum).name} was not handled by the report")

    previous = {s: signal.signal(s, reached) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("stop_signals_fail_the_test")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    "when", ["while a figure is saved", "before the rename", "after the rename"]
)
@pytest.mark.parametrize("entry", ["sweep end", "src/report.py"])
def test_a_signal_while_the_report_is_written_leaves_it_whole_or_absent(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signum: int,
    when: str,
    entry: str,
) -> None:
    sweep = tmp_path / "my sweep"
    record = {"status": "completed", "best": {"val/acc": 0.5}, "time": {"train_s": 1.0}}
    _write_run(sweep / "0_a", record)
    replace = Path.replace

    def replace_with_a_signal(self: Path, target: Path) -> Path:
        if Path(target).name == "report_train_times.png" and when == "while a figure is saved":
            signal.raise_signal(signum)
        if Path(target).name != "report.md":
            return replace(self, target)
        if when == "before the rename":
            signal.raise_signal(signum)
        moved = replace(self, target)
        signal.raise_signal(signum)
        return moved

    monkeypatch.setattr(Path, "replace", replace_with_a_signal)
    if entry == "sweep end":
        config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
        with pytest.raises(SystemExit) as stop:
            SweepSummary().on_multirun_end(config)
        code = stop.value.code
    else:
        code = _report_script().main([str(sweep)])

    assert code == 128 + signum
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "Traceback" not in message, message
    name = signal.Signals(signum).name
    assert message.startswith(f"Error: Interrupted by {name} while writing the report")
    if when != "after the rename":
        assert not (sweep / "report.md").exists()
        assert rebuild_command(sweep) in message and "make report DIR=" in message
    else:
        assert (sweep / "report.md").read_text().endswith("None: every run completed.\n")
        assert "was written whole" in message
    assert not list(sweep.glob(".*.tmp")), "a temporary file was left"


def test_a_report_figure_that_fails_is_named_and_the_rest_still_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot draw <this>")

    monkeypatch.setattr(report_module, "times_figure", broken)
    _write_run(tmp_path / "sweep" / "0_a", _completed_record(0.9))
    report = build_report(tmp_path / "sweep")
    section = _section(report.path.read_text(), "Training time per run")
    assert "*Figure not drawn: ValueError: cannot draw &lt;this&gt;*" in section
    assert set(report.groups[0].figures) == {"curves"} and report.problems == []


def test_a_missing_job_is_named_by_what_it_varies_as_hydra_launched_it(tmp_path: Path) -> None:
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from cnnlab.results.multirun import expected_job_labels, parse_overrides

    sweep = tmp_path / "sweep"
    task = ["optimizer=adam,adagrad", "model=net_1,net_2", f"paths.data_dir={tmp_path}"]
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump({"hydra": {"overrides": {"task": task, "hydra": []}, "sweeper": {}}})
    )
    labels = expected_job_labels(sweep)
    (launched,) = BasicSweeper.split_arguments(parse_overrides(task), None)  # Hydra's order
    assert labels == [",".join(job[:2]) for job in launched]
    assert labels[2] == "optimizer=adagrad,model=net_1"
    for number, label in enumerate(labels):
        if number != 2:
            _write_run(sweep / f"{number}_{label}", _completed_record(0.5 + number / 100))

    report = build_report(sweep)
    assert report.problems == ["job 2 (optimizer=adagrad,model=net_1) has no folder"]
    assert "| job 2 (optimizer=adagrad,model=net_1) | missing |" in report.path.read_text()
    (group,) = report.groups  # as the sweep's closing table names it
    table = jobs_table(report.runs, [group.job_name(n) for n in group.missing])
    assert table.splitlines()[-2].split()[:3] == ["job", "2", "(optimizer=adagrad,model=net_1)"]
