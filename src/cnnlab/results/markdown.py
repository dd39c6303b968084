"""The sweep report's Markdown: the runs table and each sweep's section, figure by figure.

Every value from a run (labels, statuses, reasons, class names, folder names) goes through
`cnnlab.results.text`: it reads as text, never as HTML or a broken table."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from cnnlab.file_names import CONFUSION_FILE, CURVES_FILE
from cnnlab.results.confusion import per_class_table
from cnnlab.results.runs import Group, Run, finite
from cnnlab.results.text import code, markdown


def fmt(value: Any, spec: str) -> str:
    number = finite(value)
    return "-" if number is None else format(number, spec)


def cell(text: Any) -> str:
    """A table cell or any inline text from a run: one line, literal (`text.markdown`)."""
    return markdown(text)


def runs_table(runs: list[Run], base: Path) -> str:
    """One row per run: what distinguishes it, how it ended, and what it reached."""
    lines = [
        "| run | label | status | best val acc | best epoch | test acc | test loss "
        "| epochs | train time (s) | params | tags |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        record = run.record
        params, tags = record.get("params"), record.get("tags")
        cells = [
            relative(run.folder, base),
            run.label if run.label != run.name else "",
            run.status,
            fmt(run.best_val_acc, ".4f"),
            "-" if run.best_epoch is None else str(run.best_epoch),
            fmt(run.test.get("test/acc"), ".4f"),
            fmt(run.test.get("test/loss"), ".4f"),
            "-" if record.get("epochs") is None else str(record["epochs"]),
            fmt(run.train_s, ".1f"),
            "-" if params is None else f"{int(params):,}",  # a whole number (record.py)
            ", ".join(str(t) for t in tags) if isinstance(tags, list) else "",
        ]
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(lines)


def relative(path: Path, base: Path) -> str:
    try:
        relative = path.relative_to(base).as_posix()
    except ValueError:
        return path.name
    return relative if relative != "." else path.name


def _image(group: Group, key: str, alt: str, base: Path) -> list[str]:
    path = group.figures.get(key)
    if key in group.figure_errors:
        return [f"*Figure not drawn: {markdown(group.figure_errors[key])}*", ""]
    return [f"![{alt}]({_link(path, base)})", ""] if path else []


def render_group(group: Group, base: Path, level: int) -> list[str]:
    """The Markdown of one sweep: table, figures, best run, runs that did not complete."""
    h = "#" * level
    lines = [runs_table(group.runs, base), ""]
    lines += [f"{h} Training time per run (Fig. 7)", ""]
    lines += _image(group, "times", "training time per run", base)
    lines += [f"{h} Loss and accuracy per epoch, training and validation (Figs. 5-6)", ""]
    lines += _image(group, "curves", "loss and accuracy curves", base)
    lines += [f"{h} Normalised confusion matrices, training set (Fig. 8)", ""]
    lines += _image(group, "confusion_train", "training-set confusion matrices", base)
    lines += [f"{h} Normalised confusion matrices, validation set (Fig. 9)", ""]
    lines += _image(group, "confusion_val", "validation-set confusion matrices", base)
    missing = [
        r.label for r in group.runs if r.completed and not r.confusion and not r.confusion_error
    ]
    if missing:
        lines += [f"No {CONFUSION_FILE} (run made before cnnlab saved matrices): "
                  f"{markdown(', '.join(missing))}.", ""]  # fmt: skip
    broken = [f"{r.label} ({r.confusion_error})" for r in group.runs if r.confusion_error]
    if broken:
        lines += [f"Unreadable {CONFUSION_FILE}: {markdown('; '.join(broken))}.", ""]

    best = group.best
    by = chosen_by(best)
    lines += [f"{h} Best run by {by} (Figs. 10-11)", ""]
    if best is None:
        lines += ["No run completed with a validation accuracy, so there is no best run.", ""]
    else:
        test = best.test
        scored_with = _relative_or(test.get("checkpoint") or "-", base)
        lines += [
            f"**{cell(best.label)}** ({code(relative(best.folder, base))}): best {by} "
            f"**{fmt(best.best_score, '.4f')}** at epoch {best.best_epoch}. "
            f"Chosen by {by} only; the test set played no part in the choice.",
            "",
            f"Test accuracy: **{fmt(test.get('test/acc'), '.4f')}**, test loss "
            f"{fmt(test.get('test/loss'), '.4f')} (scored with {scored_with}).",
            "",
        ]
        lines += _image(group, "best_test", "best run's test confusion matrix", base)
        per_class = best.record.get("test_per_class")
        if per_class:
            lines += ["Per class on the test set:", "", per_class_table(per_class), ""]
        curves = best.folder / CURVES_FILE
        if curves.is_file():
            lines += [f"Its training curves: [{CURVES_FILE}]({_link(curves, base)}).", ""]

    failed = [r for r in group.runs if not r.completed]
    lines += [f"{h} Runs that did not complete", ""]
    if failed or group.missing:
        lines += ["| run | status | reason |", "|---|---|---|"]
        lines += [
            f"| {cell(relative(r.folder, base))} | {cell(r.status)} | {cell(r.reason)} |"
            for r in failed
        ]
        lines += [
            f"| {cell(group.job_name(n))} | missing | its folder is gone |" for n in group.missing
        ]
    else:
        lines.append("None: every run completed.")
    lines.append("")
    return lines


def _link(path: Path, base: Path) -> str:
    """A relative link target that survives spaces and other odd characters in folder names."""
    return quote(relative(path, base), safe="/=,+:@-_.~")


def _relative_or(path: str, base: Path) -> str:
    candidate = Path(path)
    return code(relative(candidate, base)) if candidate.is_absolute() else markdown(path)


def chosen_by(run: Run | None) -> str:
    """What the best run was chosen by, in words: `validation accuracy`, or its monitor."""
    metric, mode = run.monitor if run is not None else ("val/acc", "max")
    if (metric, mode) == ("val/acc", "max"):
        return "validation accuracy"
    return f"{metric} ({'lowest' if mode == 'min' else 'highest'})"
