"""A run's machine-readable record, `metrics.json`, and the facts every reader of runs shares.

Statuses: running, completed, failed, diverged, interrupted. Torch-free, like all of
`cnnlab.results`: the sweep report reads records without importing any of the training code.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cnnlab.file_names import METRICS_FILE

COMPLETED = "completed"


def write_text_atomic(path: Path, text: str) -> None:
    """Written whole or not at all (temporary file, then rename): a reader never sees half a
    file, and an interrupted write (a signal, a full disk) leaves the old file and no other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic write: a reader (the sweep report) never sees half a file."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


# The metrics a run records at the end of fitting, when it logged them.
FINAL_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc")
# What `monitor.metric` may name: a validation metric, known when each epoch's checkpoint is
# chosen (training metrics are logged after it); these two every run logs.
MONITOR_METRICS = ("val/acc", "val/loss")
MONITOR_MODES = ("max", "min")


def best_epoch(
    history: list[dict[str, Any]], metric: str = "val/acc", mode: str = "max"
) -> dict[str, Any] | None:
    """The epoch of `history` with the best finite `metric` (the first on ties); None if none."""
    scored = [e for e in history if _is_number(e.get(metric)) and math.isfinite(e[metric])]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda e: e[metric])


class RunRecord:
    """A run's metrics.json as the run fills it in, section by section.

    Only the process that owns the run folder writes it (`writes`: rank 0 under DDP); the
    others keep the same record in memory, so every rank returns the same summary. Each write
    is atomic: a reader never sees half a record.
    """

    def __init__(self, output_dir: Path, writes: bool = True) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.writes = writes
        self.fields: dict[str, Any] = {"status": "running"}

    @classmethod
    def of_folder(cls, output_dir: Path, writes: bool = True) -> RunRecord:
        """What a run folder recorded so far (nothing when it holds no readable record)."""
        record = cls(output_dir, writes)
        record.fields = read_json(record.path)
        return record

    def write(self) -> None:
        if self.writes:
            write_json(self.path, self.fields)

    def started(
        self, choices: dict[str, Any], overrides: list[str], tags: list[str] | None = None
    ) -> None:
        """Written at once: a run that stops before training still says it started (and
        its tags, so it is found with the others)."""
        self.fields.update(
            {"choices": choices, "overrides": overrides, "output_dir": str(self.path.parent)}
        )
        if tags is not None:
            self.fields["tags"] = list(tags)
        self.write()

    def describe(
        self,
        *,
        label: Any,
        data: str,
        net: str,
        optimizer: dict[str, Any],
        batch_size: int,
        max_epochs: int,
        seed: int,
        params: int,
        class_names: list[str],
    ) -> None:
        """What is trained, written before fitting: a run that stops early says what it was."""
        self.fields.update(
            {
                "label": label,
                "data": data,
                "net": net,
                "optimizer": optimizer,
                "batch_size": batch_size,
                "max_epochs": max_epochs,
                "seed": seed,
                "params": params,
                "class_names": class_names,
            }
        )
        self.write()

    def fitted(
        self,
        *,
        data_sizes: dict[str, Any],
        epochs: int,
        steps: int,
        train_s: float,
        history: list[dict[str, Any]],
        final: dict[str, float],
        best_checkpoint: str | None,
        last_checkpoint: str | None,
        monitor: str = "val/acc",
        mode: str = "max",
    ) -> None:
        """What fitting gave: times, the last metrics, the best epoch by `monitor` (as the
        checkpoint callback chose it) and every epoch."""
        best = best_epoch(history, monitor, mode) or {}
        self.fields.update(
            {
                "data_sizes": data_sizes,
                "epochs": epochs,
                "steps": steps,
                "time": {
                    "train_s": train_s,
                    "per_epoch_s": [e["time/epoch_s"] for e in history],
                    "val_s": sum(e["time/val_s"] for e in history),
                    "train_batches_s": sum(e["time/train_s"] for e in history),
                },
                "final": {k: final[k] for k in FINAL_METRICS if k in final},
                "best": {
                    "epoch": best.get("epoch"),
                    "val/acc": best.get("val/acc"),
                    "val/loss": best.get("val/loss"),
                    monitor: best.get(monitor),  # a metric of the module's own (val/f1)
                    "checkpoint": best_checkpoint or None,
                    "monitor": monitor,
                    "mode": mode,
                },
                "last_checkpoint": last_checkpoint or None,
                "history": history,
            }
        )

    def tested(
        self, results: dict[str, float], checkpoint: str | None, test_s: float | None
    ) -> None:
        """The test's metrics, and which weights it scored."""
        self.fields["test"] = {**results, "checkpoint": checkpoint or "final weights"}
        self.fields["time"]["test_s"] = test_s

    def completed(self) -> None:
        self.fields["status"] = COMPLETED
        self.write()

    def ended(self, status: str, **fields: Any) -> None:
        """How a run that did not complete ended (failed, diverged, interrupted, not started),
        kept beside what it recorded before."""
        self.fields.update({"status": status, **fields})
        self.write()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; {} when it is missing, unreadable or not an object."""
    try:
        payload = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def job_order(folder: Path) -> tuple[int, str]:
    """Sort key of a sweep's job folders (`<n>_<overrides>`): by job number, then name."""
    head = folder.name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 1 << 30, folder.name)


# -- the shape of what a run wrote ----------------------------------------------------------------
# A record is JSON that any tool (or a hand) may have written: before a report relies on a
# field, its type is checked here, and a wrong one is named rather than raised somewhere deep.

Check = Callable[[Any, str], "str | None"]  # (value, field name) -> what is wrong, or None


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    name = "null" if value is None else names.get(type(value), "a number")
    shown = json.dumps(value, default=str)
    return f"{name} ({shown if len(shown) <= 40 else shown[:37] + '...'})"


def _typed(test: Callable[[Any], bool], what: str) -> Check:
    return lambda value, field: (
        None if test(value) else f"{field} must be {what}, not {_kind(value)}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_number = _typed(_is_number, "a number")
_count = _typed(lambda v: _is_number(v) and v >= 0 and float(v).is_integer(), "a whole number")
_text = _typed(lambda v: isinstance(v, str), "a string")
_scalar = _typed(lambda v: isinstance(v, (str, int, float, bool)), "a string or a number")


def _optional(check: Check) -> Check:
    return lambda value, field: None if value is None else check(value, field)


def _list_of(check: Check) -> Check:
    def checked(value: Any, field: str) -> str | None:
        if not isinstance(value, list):
            return f"{field} must be a list, not {_kind(value)}"
        return next(
            (p for i, item in enumerate(value) if (p := check(item, f"{field}[{i}]"))), None
        )

    return checked


def _object(
    fields: Mapping[str, Check] | None = None,
    values: Check | None = None,
    required: tuple[str, ...] = (),
) -> Check:
    """An object whose listed `fields` (when present; `required` ones always) pass their
    checks, and whose every value passes `values`."""

    def checked(value: Any, field: str) -> str | None:
        if not isinstance(value, dict):
            return f"{field or 'the file'} must be an object, not {_kind(value)}"
        prefix = f"{field}." if field else ""
        for key in required:
            if key not in value:
                return f"{prefix}{key} is missing"
        for key, check in (fields or {}).items():
            if key in value and (problem := check(value[key], f"{prefix}{key}")):
                return problem
        if values is not None:
            for key, item in value.items():
                if problem := values(item, f"{prefix}{key}"):
                    return problem
        return None

    return checked


def _matrix(value: Any, field: str) -> str | None:
    """Confusion counts: a square list of rows of counts."""
    if problem := _list_of(_list_of(_number))(value, field):
        return problem
    if any(len(row) != len(value) for row in value):
        return f"{field} must be a square matrix (one row and one column per class)"
    if not all(math.isfinite(n) and n >= 0 for row in value for n in row):
        return f"{field} must hold counts (finite numbers >= 0)"
    return None


_METRIC = _optional(_number)
_CURVES = ("train/loss", "train/acc", "val/loss", "val/acc", "time/epoch_s")

_RECORD = _object(
    {
        "status": _text,
        "label": _optional(_scalar),
        "error": _optional(_text),
        "overrides": _optional(_list_of(_text)),
        "choices": _optional(_object(values=_optional(_scalar))),
        "epochs": _optional(_count),
        "steps": _optional(_count),
        "max_epochs": _optional(_count),
        "params": _optional(_count),
        "class_names": _optional(_list_of(_text)),
        "diverged_at": _optional(_object()),
        "best": _optional(
            _object(
                {
                    "epoch": _optional(_count),
                    "val/acc": _METRIC,
                    "val/loss": _METRIC,
                    "checkpoint": _optional(_text),
                    "monitor": _optional(_text),
                    "mode": _optional(_text),
                }
            )
        ),
        "test": _optional(
            _object({"test/acc": _METRIC, "test/loss": _METRIC, "checkpoint": _optional(_text)})
        ),
        "time": _optional(_object({"train_s": _METRIC})),
        "history": _optional(
            _list_of(
                _object({"epoch": _count, **dict.fromkeys(_CURVES, _METRIC)}, required=("epoch",))
            )
        ),
        "test_per_class": _optional(
            _object(
                values=_object(
                    dict.fromkeys(("precision", "recall", "specificity", "support"), _number),
                    required=("precision", "recall", "specificity", "support"),
                )
            )
        ),
    },
    required=("status",),
)

_CONFUSION = _object(
    {
        "class_names": _optional(_list_of(_text)),
        "epoch": _optional(_count),
        **dict.fromkeys(("train", "val", "test"), _optional(_matrix)),
    }
)


def record_problem(record: Any) -> str | None:
    """What keeps `record` (a parsed metrics.json) from being read as a run's record: the first
    field of the wrong type or shape, named; None when every field a reader uses is sound."""
    return _RECORD(record, "")


def confusion_problem(confusion: Any) -> str | None:
    """Like `record_problem`, for a parsed confusion.json: matrices square, class names fitting."""
    if problem := _CONFUSION(confusion, ""):
        return problem
    names = confusion.get("class_names")
    for split in ("train", "val", "test"):
        counts = confusion.get(split)
        if names is not None and counts is not None and len(counts) != len(names):
            return f"{split} has {len(counts)} rows for {len(names)} class_names"
    return None


def read_checked(
    path: Path, problem_of: Callable[[Any], str | None]
) -> tuple[dict[str, Any], str | None]:
    """A run's JSON file and what is wrong with it: ({}, None) when there is no file,
    ({}, why) when it cannot be read, is not JSON or has a field of the wrong shape."""
    if not path.is_file():
        return {}, None
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        return {}, f"cannot be read ({type(err).__name__})"
    except ValueError as err:
        return {}, f"cannot be read: not valid JSON ({err})"
    if problem := problem_of(payload):
        return {}, f"cannot be read: {problem}"
    return payload, None
