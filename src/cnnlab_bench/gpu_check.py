"""The GPU path on a real GPU, in one call: `python src/gpu_check.py` (= make gpu-check).

Stages, most important first, each with an estimate; one that would not fit in the time
left (`--budget-s`) is skipped and recorded as such:

1. the tests marked `gpu` (data on the GPU, no host-to-device copy per step, bf16-mixed,
   channels_last and compile, determinism, a GPU checkpoint evaluated on the CPU, every
   optimizer); each failing test's id and assertion are printed and kept;
2. the card's sweep `-m optimizer=adadelta,adam,adagrad` with the default launcher on real
   Fashion-MNIST (3 epochs), then one job alone;
3. the benchmark rows on `cuda` in fp32;
4. the sweep with `hydra.launcher.jobs_per_gpu` 3 and 1 (2 is the default: the card's run);
5. the benchmark rows in bf16-mixed + channels_last.

The JSON is written after every stage, and on SIGTERM or SIGINT before exiting, so a run cut
short keeps what it measured; the page docs/benchmarks/<gpu>.md is rebuilt from it each time
(`--page <json>` rebuilds it anywhere, without a GPU). Without CUDA it refuses in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from cnnlab.signals import stop_signals_handled_by
from cnnlab_bench.tables import gpu_page_name, write_gpu_markdown

ROOT = Path(__file__).resolve().parents[2]  # the project: src/train.py, tests/, conf/

OPTIMIZERS = "optimizer=adadelta,adam,adagrad"
DEFAULT_BUDGET_S = 420.0
# A subprocess stage may overrun the budget by this much before it is killed; the JSON and the
# page still get written well inside the device's 10 minutes per command.
GRACE_S = 25.0
# A command past its deadline gets SIGTERM, then SIGKILL this long after.
TERM_WAIT_S = 8.0
# Code in this process (a benchmark row) cannot be killed like a command: SIGALRM stops it this
# long after the deadline, once a command at its deadline has surely been ended by its own wait.
ALARM_AFTER_S = 15.0
# Reporting flags: every failure as one `path:line: message` line after its `E` lines, a
# `FAILED <id> - <message>` summary line each, no captured output, one line per test (-v),
# so a run killed half-way still says which tests passed.
PYTEST_REPORT_ARGS = ["-v", "-rfE", "--tb=line", "--show-capture=no", "--color=no"]
# Stage statuses that a `--resume` keeps; any other stage runs again.
FINISHED = ("done", "failed")


class Stopped(BaseException):
    """SIGTERM or SIGINT: stop now, keep what was measured (a BaseException, so no stage's
    error handling swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StageTimeout(Exception):
    """A stage ran past the budget and its grace, and was killed."""


class Overran(BaseException):
    """SIGALRM at the budget's end: an in-process stage (a benchmark row) stops there. A
    BaseException, so that no error handling inside Lightning or cnnlab takes it for a failed
    run."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise Overran()


# -- pytest's output -------------------------------------------------------------------------

_SECTION = re.compile(r"^=+ (.+?) =+$")
_SUMMARY = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")
_LOCATION = re.compile(r"^([^\s:][^:]*):(\d+): (.*)$")
_VERBOSE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_ERROR_AT = re.compile(r"^_+ (ERROR at \w+ of (\S+)) _+$")
_TOTALS = re.compile(r"\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b")


def _source_line(path: str, lineno: int, root: Path) -> str | None:
    """The statement at `path:lineno` (the assertion itself, not its evaluated values)."""
    file = Path(path) if Path(path).is_absolute() else root / path
    try:
        lines = file.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else None


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _detail(lines: list[str]) -> list[str]:
    """A failure's `E` lines (the error and the assertion with its values), at most 12."""
    kept = [line[4:] if line.startswith(("E   ", "    ")) else line for line in lines]
    return [line.rstrip() for line in kept if line.strip()][:12]


def parse_pytest_output(text: str, root: Path = ROOT) -> dict[str, Any]:
    """Each failing test's id, where it failed, its assertion and error, from the output of
    pytest run with PYTEST_REPORT_ARGS; also the per-test outcomes and the closing summary.

    `--tb=line` prints a failure as its `E` lines and one `path:line: message` line, without
    the test's id; the short summary gives `FAILED <id> - <message>` in the same order. They
    are paired by message (the summary may cut it short), else by order. An error in a
    fixture prints `ERROR at setup of <name>` and its `E` lines, without a location."""
    blocks: list[dict[str, Any]] = []
    errors: dict[str, dict[str, Any]] = {}
    summary: list[tuple[str, str, str]] = []
    outcomes: dict[str, str] = {}
    totals = None
    section, pending = "", []
    for line in text.splitlines():
        header = _SECTION.match(line)
        if header:
            section, pending = header.group(1), []
            totals = section if _TOTALS.search(section) else totals
            continue
        verbose = _VERBOSE.match(line)
        if verbose:
            outcomes[verbose.group(1)] = verbose.group(2).lower()
        if section == "ERRORS":
            named = _ERROR_AT.match(line)
            if named:
                pending = []
                errors[named.group(2)] = {"where": named.group(1), "detail": pending}
            else:
                pending.append(line)
        elif section == "FAILURES":
            where = _LOCATION.match(line)
            if where and not line.startswith("E "):
                path, lineno = where.group(1), int(where.group(2))
                blocks.append(
                    {
                        "location": f"{_relative(path, root)}:{lineno}",
                        "source": _source_line(path, lineno, root),
                        "message": where.group(3),
                        "detail": _detail(pending),
                    }
                )
                pending = []
            else:
                pending.append(line)
        elif section == "short test summary info":
            found = _SUMMARY.match(line)
            if found:
                summary.append((found.group(1), found.group(2), found.group(3) or ""))
    failures, unused = [], list(blocks)
    for kind, test_id, message in summary:
        entry: dict[str, Any] = {"id": test_id, "outcome": kind.lower(), "message": message}
        if kind == "ERROR":
            error = errors.get(test_id.rsplit("::", 1)[-1])
            if error:
                entry.update(location=error["where"], detail=_detail(error["detail"]))
            failures.append(entry)
            continue
        cut = message.removesuffix("...")
        block = next((b for b in unused if cut and b["message"].startswith(cut)), None)
        block = block or (unused[0] if unused else None)
        if block is not None:
            unused.remove(block)
            entry.update(block)
        failures.append(entry)
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return {"summary": totals, "failures": failures, "outcomes": counts}


def print_failures(failures: list[dict[str, Any]]) -> None:
    """Each failing test: its id, where and which assertion, and its error with the values."""
    for f in failures:
        print(f"  {f['outcome'].upper()} {f['id']}")
        if f.get("location"):
            print(f"    at {f['location']}: {f.get('source') or ''}")
        detail = f.get("detail") or []
        for line in ([] if f["message"] in detail else [f["message"]]) + detail[:8]:
            print(f"    {line}")


# -- commands: killed with their children on timeout or stop ---------------------------------


@contextmanager
def _child(command: list[str], **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """A command in its own process group, killed with everything it started (joblib's
    workers too) however the block ends: a timeout, SIGTERM, an error."""
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, text=True, **popen)
    try:
        yield process
    finally:
        _end_group(process)


def _end_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the command's whole group (a sweep stops its jobs and keeps their records),
    then SIGKILL to whatever of it is left, whatever interrupts the wait in between."""
    try:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=TERM_WAIT_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    finally:
        with suppress(ProcessLookupError, PermissionError):  # the group outlives its leader
            os.killpg(process.pid, signal.SIGKILL)
        process.poll()


def _wait(process: subprocess.Popen[str], deadline: float) -> tuple[int | None, bool]:
    """(exit code, timed out): None and True once `deadline` (time.monotonic) passed."""
    try:
        return process.wait(timeout=max(deadline - time.monotonic(), 1.0)), False
    except subprocess.TimeoutExpired:
        return None, True


def _sample_gpu(samples: list[tuple[float, float]], stop: threading.Event) -> None:
    """(utilisation %, memory used MiB) every half second, from nvidia-smi."""
    query = [
        "nvidia-smi",
        "--query-gpu=utilization.gpu,memory.used",
        "--format=csv,noheader,nounits",
    ]
    while not stop.is_set():
        try:
            read = subprocess.run(query, capture_output=True, text=True, timeout=5)
            first = read.stdout.strip().splitlines()[0] if read.returncode == 0 else ""
            if first:
                util, memory = (float(v) for v in first.split(",")[:2])
                samples.append((util, memory))
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            pass
        stop.wait(0.5)


# -- stages ---------------------------------------------------------------------------------


# A stage's work: (report, deadline on time.monotonic) -> its status, None meaning "done".
StageRun = Callable[[dict[str, Any], float], str | None]


@dataclass
class Stage:
    key: str  # stable name: --only selects by prefix, --resume matches it
    title: str
    estimate: Callable[[dict[str, Any]], float]  # seconds, from what the report holds so far
    run: StageRun


def run_stages(
    stages: list[Stage],
    report: dict[str, Any],
    save: Callable[[dict[str, Any]], None],
    budget_s: float,
    grace_s: float = GRACE_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run `stages` in order within `budget_s`, saving the report after each: a stage whose
    estimate exceeds the time left is skipped; one that fails is recorded and the next runs.
    Stopped (a signal) marks the stage interrupted, saves, and propagates. A stage still
    running `grace_s` after the budget's end is stopped: commands by their own deadline, code
    in this process by SIGALRM a few seconds later."""
    start = clock()
    previous_alarm = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for stage in stages:
            _run_stage(
                stage, report, save, start + budget_s - clock(), start + budget_s + grace_s, clock
            )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_alarm)


def _run_stage(
    stage: Stage,
    report: dict[str, Any],
    save: Callable[[dict[str, Any]], None],
    left: float,
    deadline: float,
    clock: Callable[[], float],
) -> None:
    """One stage: skipped if its estimate exceeds `left`, else run until `deadline` (on
    `clock`), its status and seconds recorded and the report saved before and after."""
    entry: dict[str, Any] = {
        "key": stage.key,
        "title": stage.title,
        "estimate_s": round(stage.estimate(report), 1),
    }
    report["stages"].append(entry)
    if entry["estimate_s"] > left:
        entry.update(status="skipped: time budget", left_s=round(left, 1))
        print(
            f"[gpu-check] {stage.title}: skipped (estimate {entry['estimate_s']:.0f} s, "
            f"{max(left, 0):.0f} s left)",
            flush=True,
        )
        save(report)
        return
    entry["status"] = "running"
    save(report)
    print(f"[gpu-check] {stage.title} (estimate {entry['estimate_s']:.0f} s)", flush=True)
    began = clock()
    signal.setitimer(signal.ITIMER_REAL, max(deadline - began, 0) + ALARM_AFTER_S)
    try:
        entry["status"] = stage.run(report, deadline) or "done"
    except Stopped as stop:
        entry["status"] = f"interrupted ({stop})"
        raise
    except (KeyboardInterrupt, SystemExit) as stop:  # Lightning's own ends on a signal
        signum = signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM
        entry["status"] = f"interrupted ({signal.Signals(signum).name})"
        raise Stopped(signum) from stop
    except Overran:
        entry.update(status="timed out", error="still running at the budget's end: stopped")
    except StageTimeout as late:
        entry.update(status="timed out", error=str(late))
    except Exception as error:  # a stage that breaks must not cost the others
        stopped = _stop_signal(error)
        if stopped is not None:  # a run of cnnlab's caught the signal and ended itself
            entry["status"] = f"interrupted ({signal.Signals(stopped).name})"
            raise Stopped(stopped) from error
        entry.update(status="error", error=f"{type(error).__name__}: {error}"[-2000:])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        entry["seconds"] = round(clock() - began, 1)
        save(report)
    print(f"[gpu-check] {stage.title}: {entry['status']} in {entry['seconds']:.0f} s", flush=True)


def _stop_signal(error: BaseException) -> int | None:
    """The signal behind cnnlab's Interrupted (a train() that got SIGTERM stops by itself)."""
    from cnnlab.errors import Interrupted

    return error.exit_code - 128 if isinstance(error, Interrupted) else None


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise Stopped once; later ones are ignored while the JSON is saved."""

    def handler(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    with stop_signals_handled_by(handler):
        yield


def _seconds(report: dict[str, Any], key: str) -> float | None:
    """How long a finished stage took (None: not run, or not to the end)."""
    for s in report["stages"]:
        if s["key"] == key and s.get("status") in FINISHED:
            return s["seconds"]
    return None


class Check:
    """The stages of one GPU check and what they share: the data, the work folder."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.fashion = args.fashion_mnist.resolve() if args.fashion_mnist else None
        self._bench_data: tuple[dict[str, Any], Path] | None = None

    # The tests marked gpu, in a pytest of their own.

    def tests(self, report: dict[str, Any], deadline: float) -> str:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "-p",
            "no:cacheprovider",
            *PYTEST_REPORT_ARGS,
            "tests",
        ]
        lines: list[str] = []
        env = {**os.environ, "COLUMNS": "200"}  # summary messages uncut
        with _child(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as p:
            reader = threading.Thread(target=_echo, args=(p.stdout, lines), daemon=True)
            reader.start()
            code, late = _wait(p, deadline)
        reader.join(timeout=5)
        result = parse_pytest_output("".join(lines))
        result.update(exit_code=code, timed_out=late)
        if not result["summary"]:
            result["output_tail"] = [line.rstrip() for line in lines[-30:]]
        report["gpu_tests"] = result
        print(f"gpu tests: {result['summary'] or 'no summary'} (exit {code})")
        print_failures(result["failures"])
        if late:
            raise StageTimeout("pytest ran past the time budget and was killed")
        return "done" if code in (0, 1) else "failed"

    # Sweeps, as a user runs them: src/train.py in a process of its own.

    def sweep_overrides(self) -> list[str]:
        return [
            "data=fashion_mnist",
            f"data.system_dirs=[{self.fashion}]",
            f"paths.data_dir={self.work / 'data'}",
            f"trainer.max_epochs={self.args.epochs}",
            "callbacks.progress_bar.enabled=false",
            *self.args.sweep_overrides,
        ]

    def sweep(self, name: str, extra: list[str], multirun: bool = True) -> StageRun:
        def run(report: dict[str, Any], deadline: float) -> str:
            log_dir = self.work / "sweeps" / re.sub(r"\W+", "_", name)
            head = ["-m", OPTIMIZERS] if multirun else []
            command = [
                sys.executable,
                "src/train.py",
                *head,
                *extra,
                *self.sweep_overrides(),
                f"paths.log_dir={log_dir}",
            ]
            result, stopped = timed_command(command, log_dir.with_suffix(".log"), deadline)
            result["overrides"] = extra
            result["expected_jobs"] = 3 if multirun else 1
            jobs = collect_jobs(log_dir)
            result["jobs"] = jobs
            result["completed_jobs"] = sum(j["status"] == "completed" for j in jobs)
            report["sweeps"][name] = result
            print(
                f"sweep {name}: {result['wall_s']:.1f} s, {result['completed_jobs']} of "
                f"{result['expected_jobs']} jobs completed, exit {result['exit_code']}; GPU "
                f"utilisation mean {_percent(result['gpu_util_mean'])}, "
                f"max {_percent(result['gpu_util_max'])}"
            )
            if stopped is not None:
                raise stopped
            if result["timed_out"]:
                raise StageTimeout(f"{name} ran past the time budget and was killed")
            return "done" if result["exit_code"] == 0 else "failed"

        return run

    # Benchmark rows, in this process (cnnlab_bench.runner), on data written once.

    def bench_data(self) -> tuple[dict[str, Any], Path]:
        if self._bench_data is None:
            from cnnlab_bench.rows import prepare_data

            data_dir = self.work / "bench-data"
            data = prepare_data(data_dir, tiny=False)
            if self.fashion and data["mnist"]["option"] != "fashion_mnist":
                raw = data_dir / "FashionMNIST" / "raw"  # cnnlab unpacks .gz copies found here
                raw.mkdir(parents=True, exist_ok=True)
                for packed in self.fashion.glob("*-ubyte.gz"):
                    shutil.copy(packed, raw / packed.name)
                data["mnist"] = {"option": "fashion_mnist", "source": "real Fashion-MNIST"}
            self._bench_data = data, data_dir
        return self._bench_data

    def bench(self, key: str, row: Any, precision: str, channels_last: bool) -> StageRun:
        def run(report: dict[str, Any], deadline: float) -> str:
            from hydra import initialize_config_dir

            from cnnlab_bench.rows import Settings
            from cnnlab_bench.runner import bench_row

            data, data_dir = self.bench_data()
            settings = Settings(precision, channels_last, reps=self.args.reps, accelerator="cuda")
            torch.cuda.reset_peak_memory_stats()
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                result = bench_row(row, settings, data, data_dir, self.work / key)
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
            result["stage"] = key
            report["bench"]["rows"].append(result)
            report["bench"]["settings"] = {"reps": self.args.reps, "optimizer": settings.optimizer}
            t = result["train_images_per_s"]
            print(
                f"{key}: pipeline {t['pipeline']:.0f} img/s, bare {t['bare']:.0f}, "
                f"min. Lightning {t['minimal_lightning']:.0f}, ratio {t['ratio']:.3f}"
            )
            if g := result.get("graph_images_per_s"):
                print(
                    f"{key}: CUDA-graph step: pipeline {g['pipeline_graph']:.0f} img/s, "
                    f"bare {g['bare_graph']:.0f} (the limit)"
                )
            return "done"

        return run


def _echo(stream: Any, lines: list[str]) -> None:
    """Pass a child's output through to this log as it comes, and keep it."""
    for line in stream:
        lines.append(line)
        print(line, end="", flush=True)


def timed_command(
    command: list[str], log: Path, deadline: float
) -> tuple[dict[str, Any], Stopped | None]:
    """Run `command` (output to `log`) until it ends, `deadline` or a stop signal: its exit
    code, wall time, the GPU's utilisation and memory meanwhile, the launcher's one line, the
    last lines on failure; and the signal that cut it short, for the caller to raise once it
    has kept what the command did. It never raises for a failing command: the check goes on."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_gpu, args=(samples, stop), daemon=True)
    sampler.start()
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    code, late, stopped = None, False, None
    try:
        with log.open("w") as out, _child(command, stdout=out, stderr=subprocess.STDOUT) as p:
            code, late = _wait(p, deadline)
    except Stopped as signalled:  # the command and its children are gone (_child)
        stopped = signalled
    finally:
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join(timeout=6)
    text = log.read_text(errors="replace").splitlines()
    launcher = next((line for line in text if line.startswith("[launcher auto]")), None)
    util = [u for u, _ in samples]
    result: dict[str, Any] = {
        "command": shlex.join(["python", *command[1:]]),
        "exit_code": code,
        "timed_out": late,
        "wall_s": round(seconds, 2),
        "launcher": _launcher_choice(launcher),
        "gpu_util_mean": round(statistics.mean(util), 1) if util else None,
        "gpu_util_max": max(util) if util else None,
        "gpu_memory_max_mb": max((m for _, m in samples), default=None),
        "stopped_by": str(stopped) if stopped else None,
    }
    if code != 0:
        result["stderr_tail"] = [line.rstrip()[:300] for line in text[-25:]]
    return result, stopped


def _launcher_choice(line: str | None) -> str | None:
    """What the default launcher chose, from its one line (without its hint about basic)."""
    if line is None:
        return None
    return line.removeprefix("[launcher auto] ").split(" (hydra/launcher=basic")[0]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def collect_jobs(log_dir: Path) -> list[dict[str, Any]]:
    """Each job's status and epoch times from its metrics.json (a sweep's or a single run's)."""
    jobs = []
    records = sorted(log_dir.glob("train/multiruns/*/*/metrics.json"))
    records += sorted(log_dir.glob("train/runs/*/metrics.json"))
    for record in records:
        try:
            data = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError):
            data = {"status": "unreadable"}
        times = data.get("time") or {}
        jobs.append(
            {
                "job": record.parent.name,
                "status": data.get("status"),
                "per_epoch_s": times.get("per_epoch_s"),
                "train_s": times.get("train_s"),
                "test_acc": (data.get("test") or {}).get("test/acc"),
            }
        )
    return jobs


def default_jobs_per_gpu() -> int:
    """The default launcher's jobs per GPU, as conf/hydra/launcher/auto.yaml sets it."""
    text = (ROOT / "conf" / "hydra" / "launcher" / "auto.yaml").read_text()
    found = re.search(r"^jobs_per_gpu:\s*(\d+)", text, re.MULTILINE)
    return int(found.group(1)) if found else 2


# Guesses for an H200 before anything is measured; later stages scale what earlier ones took.
FIRST_GUESS_S = {"tests": 150.0, "sweep": 150.0, "alone": 70.0, "bench-row": 60.0}


def _sweep_estimate(kind: str) -> Callable[[dict[str, Any]], float]:
    def estimate(report: dict[str, Any]) -> float:
        card, alone = _seconds(report, "sweep-default"), _seconds(report, "sweep-alone")
        if kind == "alone":
            return 0.6 * card if card else FIRST_GUESS_S["alone"]
        if kind == "jobs1":  # three jobs one after another
            return 3.3 * alone if alone else 1.6 * card if card else 2 * FIRST_GUESS_S["sweep"]
        return 1.1 * card if card else FIRST_GUESS_S["sweep"]  # one or two rounds side by side

    return estimate


def _bench_estimate(data: str) -> Callable[[dict[str, Any]], float]:
    def estimate(report: dict[str, Any]) -> float:
        done = [
            _seconds(report, r["stage"]) or 0.0 for r in report["bench"]["rows"] if "stage" in r
        ]
        same = [
            _seconds(report, r["stage"]) or 0.0
            for r in report["bench"]["rows"]
            if r.get("data") == data and "stage" in r
        ]
        if same:
            return 1.15 * max(same)
        return 1.5 * max(done) if done else FIRST_GUESS_S["bench-row"] + 15  # + writing data

    return estimate


def plan(check: Check) -> list[Stage]:
    """The stages, most important first."""
    from cnnlab_bench.rows import DEFAULT_ROWS

    def rows(precision: str, channels_last: bool) -> list[Stage]:
        short = "32" if precision == "32-true" else "bf16"
        return [
            Stage(
                f"bench-{short}-{row.net}-{row.data}",
                f"bench {row.net} {row.data} b{row.batch_size} {precision}"
                + (" + channels_last" if channels_last else ""),
                _bench_estimate(row.data),
                check.bench(f"bench-{short}-{row.net}-{row.data}", row, precision, channels_last),
            )
            for row in DEFAULT_ROWS
        ]

    stages = [Stage("tests", "pytest -m gpu", lambda r: FIRST_GUESS_S["tests"], check.tests)]
    if check.fashion:
        stages += [
            Stage(
                "sweep-default",
                "sweep, default launcher",
                _sweep_estimate("card"),
                check.sweep("default launcher", []),
            ),
            Stage(
                "sweep-alone",
                "one job alone",
                _sweep_estimate("alone"),
                check.sweep("one job alone", ["optimizer=adam"], multirun=False),
            ),
        ]
    stages += rows("32-true", False)
    if check.fashion:
        stages.append(
            Stage(
                "sweep-graph",
                "sweep, default launcher, cuda_graph=true",
                _sweep_estimate("card"),
                check.sweep("cuda_graph=true", ["cuda_graph=true"]),
            )
        )
        default = default_jobs_per_gpu()
        for n in (3, 1, 2):
            if n == default:
                continue
            stages.append(
                Stage(
                    f"sweep-jobs{n}",
                    f"sweep, jobs_per_gpu={n}",
                    _sweep_estimate(f"jobs{n}"),
                    check.sweep(f"jobs_per_gpu={n}", [f"hydra.launcher.jobs_per_gpu={n}"]),
                )
            )
    stages += rows("bf16-mixed", True)
    return stages


# -- the report -----------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where the check ran: the GPU, its driver, CUDA, the libraries, the cores."""
    try:
        import pytorch_lightning

        lightning = pytorch_lightning.__version__
    except ImportError:
        lightning = None
    try:
        query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        read = subprocess.run(query, capture_output=True, text=True, timeout=20)
        driver = read.stdout.strip().splitlines()[0] if read.returncode == 0 else None
    except (OSError, IndexError, subprocess.TimeoutExpired):
        driver = None
    return {
        "gpu": torch.cuda.get_device_name(),
        "driver": driver,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "lightning": lightning,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
    }


def _write_json(path: Path, report: dict[str, Any]) -> None:
    """Whole or not at all: a kill during the write leaves the previous version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(partial, path)


def saver(json_paths: list[Path], docs: Path, out: Path | None) -> Callable[[dict], None]:
    """Write the JSON (each path) and rebuild the page; a page that cannot be built is noted in
    the JSON, never an end to the check."""

    def save(report: dict[str, Any]) -> None:
        report["elapsed_s"] = round(time.monotonic() - report["_t0"], 1)
        clean = {k: v for k, v in report.items() if not k.startswith("_")}
        for path in json_paths:
            _write_json(path, clean)
        try:
            page = write_gpu_markdown(clean, docs)
            if out is not None:
                shutil.copy(page, out / page.name)
        except Exception as error:  # the JSON is what matters: a page error is only noted
            report["page_error"] = f"{type(error).__name__}: {error}"

    return save


def new_report(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    return {
        "kind": "gpu-check",
        "gpu": info["gpu"],
        "machine": info,
        "command": shlex.join(["python", "src/gpu_check.py", *sys.argv[1:]]),
        "started": f"{datetime.now():%Y-%m-%d %H:%M}",
        "budget_s": args.budget_s,
        "stages": [],
        "gpu_tests": None,
        "bench": {"rows": []},
        "sweep": {
            "overrides": [
                "data=fashion_mnist",
                f"trainer.max_epochs={args.epochs}",
                *args.sweep_overrides,
            ],
            "data": "real Fashion-MNIST",
            "default_jobs_per_gpu": default_jobs_per_gpu(),
        },
        "sweeps": {},
        "finished": False,
    }


def resumed(report: dict[str, Any], stages: list[Stage]) -> list[Stage]:
    """The stages a saved report has not finished; their partial results are dropped."""
    done = {s["key"] for s in report["stages"] if s.get("status") in FINISHED}
    report["stages"] = [s for s in report["stages"] if s["key"] in done]
    report["bench"]["rows"] = [r for r in report["bench"]["rows"] if r.get("stage") in done]
    return [s for s in stages if s.key not in done]


def print_summary(report: dict[str, Any]) -> None:
    print(f"GPU: {report['gpu']}, torch {report['machine']['torch']}")
    tests = report.get("gpu_tests") or {}
    print(f"gpu tests: {tests.get('summary') or 'not run'} (exit {tests.get('exit_code')})")
    print_failures(tests.get("failures", []))
    print(f"{'row':34} {'pipeline':>9} {'bare':>9} {'min.PL':>9} {'ratio':>6} {'ms/step':>12}")
    for r in report["bench"]["rows"]:
        t = r["train_images_per_s"]
        name = f"{r['net']} {r['data']} b{r['batch_size']} {r['precision']}"
        name += "+cl" if r["channels_last"] else ""
        ms = [1000 * r["batch_size"] / t[k] for k in ("pipeline", "bare")]  # mean per step
        print(
            f"{name:34} {t['pipeline']:>9.0f} {t['bare']:>9.0f} {t['minimal_lightning']:>9.0f} "
            f"{t['ratio']:>6.3f} {ms[0]:>5.2f}/{ms[1]:<5.2f}"
        )
    for name, run in report["sweeps"].items():
        if "same_as" in run:
            print(f"sweep {name:18} {run['note']}")
            continue
        print(
            f"sweep {name:18} {run['wall_s']:>7.1f} s  {run['completed_jobs']}/"
            f"{run['expected_jobs']} jobs  GPU utilisation mean {_percent(run['gpu_util_mean'])}, "
            f"max {_percent(run['gpu_util_max'])}  exit {run['exit_code']}"
        )
    for s in report["stages"]:
        if s["status"] not in FINISHED:
            print(f"stage {s['title']}: {s['status']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion-mnist", type=Path, help="folder of its .gz files (sweeps)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file")
    parser.add_argument("--reps", type=int, default=3, help="benchmark runs per contender")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per sweep job")
    parser.add_argument(
        "--sweep-overrides", nargs="*", default=[], help="more overrides for every sweep run"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="seconds for all stages: one that would not fit is skipped",
    )
    parser.add_argument("--only", default="", help="comma-separated stage keys (or prefixes)")
    parser.add_argument("--resume", type=Path, help="a saved JSON: run what it did not finish")
    parser.add_argument("--page", type=Path, help="rebuild the page from this JSON; no GPU needed")
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs" / "benchmarks", help="folder of the page"
    )
    args = parser.parse_args()
    if args.page:
        page = write_gpu_markdown(json.loads(args.page.read_text()), args.docs)
        print(f"page: {page}")
        return 0
    if not torch.cuda.is_available():
        print("Error: make gpu-check needs a CUDA GPU, and torch sees none here.", file=sys.stderr)
        return 2
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a live log
    if args.fashion_mnist and not (args.fashion_mnist / "train-images-idx3-ubyte.gz").is_file():
        print(f"Error: no train-images-idx3-ubyte.gz in {args.fashion_mnist}.", file=sys.stderr)
        return 2

    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    json_paths = [
        args.out or ROOT / "outputs" / "gpu-check" / f"{datetime.now():%Y-%m-%d_%H-%M-%S}.json"
    ]
    if out_dir is not None:
        json_paths.append(out_dir / "gpu-check.json")
    report = json.loads(args.resume.read_text()) if args.resume else new_report(args)
    if args.resume:
        report.setdefault("resumed_by", []).append(shlex.join(["python", *sys.argv]))
    report["_t0"] = time.monotonic()
    report["budget_s"] = args.budget_s
    save = saver(json_paths, args.docs, out_dir)

    with tempfile.TemporaryDirectory(prefix="cnnlab-gpu-check-") as tmp:
        check = Check(args, Path(tmp))
        stages = plan(check)
        if args.resume:
            stages = resumed(report, stages)
        if args.only:
            keys = [k.strip() for k in args.only.split(",") if k.strip()]
            stages = [s for s in stages if any(s.key.startswith(k) for k in keys)]
        default = default_jobs_per_gpu()
        if check.fashion:
            report["sweeps"].setdefault(
                f"jobs_per_gpu={default}",
                {
                    "same_as": "default launcher",
                    "note": f"= the default launcher's run: "
                    f"{default} is its default jobs_per_gpu (conf/hydra/launcher/auto.yaml)",
                },
            )
        try:
            with stop_on_signals():
                run_stages(stages, report, save, args.budget_s)
                report["finished"] = True
        except Stopped as stop:
            # Nothing cuts the last save short; then the handlers are as they were.
            ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                report["stopped_by"] = str(stop)
                save(report)
            finally:
                for sig, before in ignored.items():
                    signal.signal(sig, before)
            print_summary(report)
            print(f"Stopped by {stop}; JSON: {', '.join(map(str, json_paths))}", file=sys.stderr)
            return 128 + stop.signum
    save(report)
    print_summary(report)
    print(f"JSON: {', '.join(map(str, json_paths))}")
    print(f"page: {args.docs / gpu_page_name(report['gpu'])}")
    tests = report.get("gpu_tests") or {}
    broken = [
        s for s in report["stages"] if s["status"] not in FINISHED and "skipped" not in s["status"]
    ]
    failed = [s for s in report["stages"] if s["status"] == "failed"]
    return 0 if tests.get("exit_code") == 0 and not broken and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
