"""The assignment's whole study as one report, `assignment_report.md`, whose sections follow
the assignment's figures in order; built from the parts' sweep folders alone (their records,
text and figures)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cnnlab.file_names import CURVES_FILE, FIGURE_PREFIX, REPORT_FILE, SUMMARY_FILE
from cnnlab.results.confusion import per_class_table
from cnnlab.results.keras_log import keras_log
from cnnlab.results.markdown import chosen_by, fmt, relative, runs_table
from cnnlab.results.runs import Run, best_run, find_runs, label_runs
from cnnlab.results.text import code, markdown

STUDY_REPORT = "assignment_report.md"


@dataclass
class Part:
    """One sweep of the study: its name, what it reproduces, the command, its folder, and
    why it was skipped (e.g. `not in --parts`; None when it was run)."""

    name: str
    title: str
    command: str
    folder: Path
    skipped: str | None = None

    def runs(self) -> list[Run]:
        runs = find_runs(self.folder) if self.folder.is_dir() and not self.skipped else []
        label_runs(runs)
        return runs

    def figure(self, name: str) -> Path | None:
        path = self.folder / f"{FIGURE_PREFIX}{name}.png"
        return path if path.is_file() else None


def _best(runs: list[Run]) -> Run | None:
    return best_run(runs)


def _skipped(part: Part) -> str:
    return f"skipped ({markdown(part.skipped)})"


def _figure(part: Part, name: str, alt: str, base: Path) -> list[str]:
    if part.skipped:
        return [f"*{part.title}: {_skipped(part)}.*", ""]
    path = part.figure(name)
    if path is None:
        return [f"*{part.title}: no figure (no run of this part completed).*", ""]
    return [f"**{part.title}**", "", f"![{alt}]({relative(path, base)})", ""]


def _summary(run: Run | None, net: str, part: Part) -> list[str]:
    if part.skipped:
        return [f"*No model summary of {net}: the part {part.title} was {_skipped(part)}.*", ""]
    text = run.folder / SUMMARY_FILE if run else None
    if run is None or text is None or not text.is_file():
        return [f"*No model summary of {net}: its run did not start.*", ""]
    data = str(run.record.get("data", "")).removesuffix("DataModule")
    what = f"{net} on {markdown(data)} ({code(relative(run.folder, run.folder.parent.parent))})"
    return [f"{what}:", "", "```text", text.read_text().rstrip(), "```", ""]


def _first(runs: list[Run], **choices: str) -> Run | None:
    for run in runs:
        if all((run.record.get("choices") or {}).get(k) == v for k, v in choices.items()):
            return run
    return None


def build_study_report(folder: Path, mnist: Part, cifar10: Part, models: Part) -> Path:
    """Write `assignment_report.md` into `folder` (the study's), linking the parts' own reports."""
    parts = (mnist, cifar10, models)
    runs = {part.name: part.runs() for part in parts}
    lines = [
        f"# The assignment's study: {markdown(folder.name)}",
        "",
        f"Built {datetime.now():%Y-%m-%d %H:%M} from the parts' run folders. Each part is a "
        "sweep with its own report; the sections below follow the assignment's figures in order.",
        "",
        "| part | command | runs | completed | report |",
        "|---|---|---:|---:|---|",
    ]
    for part in parts:
        if part.skipped:  # its command did not run: not shown as if it had
            lines.append(f"| {part.title} | {_skipped(part)} | - | - | - |")
            continue
        done = sum(r.completed for r in runs[part.name])
        report = part.folder / REPORT_FILE
        link = f"[{REPORT_FILE}]({relative(report, folder)})" if report.is_file() else "-"
        lines.append(
            f"| {part.title} | {code(part.command)} | {len(runs[part.name])} | {done} | {link} |"
        )
    lines.append("")

    lines += ["## Model summaries (Figs. 1-3)", ""]
    lines += _summary(_first(runs[mnist.name], model="net_1"), "net_1", mnist)
    lines += _summary(_first(runs[mnist.name], model="net_2"), "net_2", mnist)
    cifar_run = _first(runs[cifar10.name])
    lines += _summary(cifar_run, "net_1", cifar10)

    lines += ["## CIFAR-10 training log (Fig. 4)", ""]
    if cifar10.skipped:
        lines += [f"*{cifar10.title}: {_skipped(cifar10)}.*", ""]
    elif cifar_run is not None and cifar_run.history:
        epochs = cifar_run.record.get("max_epochs")
        lines += ["```text", *keras_log(cifar_run.history, epochs), "```", ""]
    else:
        lines += ["*No epoch of the CIFAR-10 run finished.*", ""]

    lines += ["## Loss (Fig. 5) and accuracy (Fig. 6) per epoch, training and validation", ""]
    for part in (models, mnist):
        lines += _figure(part, "curves", "loss and accuracy per epoch", folder)
    if cifar10.skipped:
        lines += [f"*{cifar10.title}: {_skipped(cifar10)}.*", ""]
    elif cifar_run is not None and (cifar_run.folder / CURVES_FILE).is_file():
        lines += _figure_file(cifar_run.folder / CURVES_FILE, "CIFAR-10, net_1", folder)

    lines += ["## Training time per model (Fig. 7)", ""]
    for part in (models, mnist):
        lines += _figure(part, "train_times", "training time per run", folder)
    lines += ["## Normalised confusion matrices, training set (Fig. 8)", ""]
    for part in (models, mnist):
        lines += _figure(part, "confusion_train", "training-set confusion matrices", folder)
    lines += ["## Normalised confusion matrices, validation set (Fig. 9)", ""]
    for part in (models, mnist):
        lines += _figure(part, "confusion_val", "validation-set confusion matrices", folder)

    lines += ["## The best model: test confusion matrix and accuracy (Figs. 10-11)", ""]
    best = _best(runs[models.name])
    if models.skipped:
        lines += [f"*{models.title}: {_skipped(models)}, so there is no best model.*", ""]
    elif best is None:
        lines += ["*No model of A-F completed, so there is no best model.*", ""]
    else:
        lines += [
            f"Best of {models.title} by {chosen_by(best)} (the test set played no part in the "
            f"choice): **{markdown(best.label)}**, best {chosen_by(best)} "
            f"{fmt(best.best_score, '.4f')} at epoch {best.best_epoch}, after "
            f"{best.record.get('epochs')} epoch(s).",
            "",
            f"Test accuracy: **{fmt(best.test.get('test/acc'), '.4f')}**, test loss "
            f"{fmt(best.test.get('test/loss'), '.4f')}.",
            "",
        ]
        lines += _figure(models, "best_test_confusion", "best model's test confusion", folder)
        lines += ["## Sensitivity and specificity per class (the best model, test set)", ""]
        per_class = best.record.get("test_per_class")
        lines += [per_class_table(per_class), ""] if per_class else ["*Not recorded.*", ""]

    lines += ["## Every run", ""]
    for part in parts:
        table = (
            f"*{_skipped(part).capitalize()}.*"
            if part.skipped
            else runs_table(runs[part.name], folder)
        )
        lines += [f"### {part.title}", "", table, ""]
    path = folder / STUDY_REPORT
    path.write_text("\n".join(lines))
    return path


def _figure_file(path: Path, title: str, base: Path) -> list[str]:
    return [f"**{title}**", "", f"![{title}]({relative(path, base)})", ""]
