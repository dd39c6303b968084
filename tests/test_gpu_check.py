"""`make gpu-check` off the GPU: it refuses in one line without CUDA, and the parts that need
no GPU (reading pytest's failures, the stages and their JSON, the page) work here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from cnnlab_bench import gpu_check
from conftest import run_cli


def test_the_gpu_check_refuses_in_one_line_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make gpu-check runs for real here")
    result = run_cli("gpu_check.py")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: make gpu-check needs a CUDA GPU, and torch sees none here."
    )


# -- the failing tests, from pytest's output ------------------------------------------------

_FAILING = """import pytest


def test_the_data_lives_on_the_gpu():
    steps, copies = 20, 30
    assert steps == 20 and copies < steps / 4, copies


def test_passes():
    pass


@pytest.fixture
def broken():
    raise RuntimeError("no CUDA device here")


def test_needs_the_fixture(broken):
    pass
"""

# What pytest printed for _FAILING with gpu_check's flags (padding of the rules shortened).
_CAPTURED = """\
============================= test session starts ==============================
collecting ... collected 3 items

tests/test_gpu.py::test_the_data_lives_on_the_gpu FAILED                 [ 33%]
tests/test_gpu.py::test_passes PASSED                                    [ 66%]
tests/test_gpu.py::test_needs_the_fixture ERROR                          [100%]

==================================== ERRORS ====================================
_________________ ERROR at setup of test_needs_the_fixture _____________________
E   RuntimeError: no CUDA device here
=================================== FAILURES ===================================
E   AssertionError: 30
    assert (20 == 20 and 30 < (20 / 4))
{root}/tests/test_gpu.py:6: AssertionError: 30
=========================== short test summary info ============================
FAILED tests/test_gpu.py::test_the_data_lives_on_the_gpu - AssertionError: 30
ERROR tests/test_gpu.py::test_needs_the_fixture - RuntimeError: no CUDA device here
==================== 1 failed, 1 passed, 1 error in 0.02s ======================
"""


def _check_parsed(parsed: dict[str, Any]) -> None:
    assert parsed["summary"] == "1 failed, 1 passed, 1 error in " + parsed["summary"][-5:]
    assert parsed["outcomes"] == {"failed": 1, "passed": 1, "error": 1}
    failed, error = parsed["failures"]
    assert failed["id"] == "tests/test_gpu.py::test_the_data_lives_on_the_gpu"
    assert failed["outcome"] == "failed"
    assert failed["location"] == "tests/test_gpu.py:6"
    assert failed["source"] == "assert steps == 20 and copies < steps / 4, copies"
    assert failed["message"] == "AssertionError: 30"
    assert "assert (20 == 20 and 30 < (20 / 4))" in failed["detail"]
    assert error["id"] == "tests/test_gpu.py::test_needs_the_fixture"
    assert error["outcome"] == "error"
    assert error["location"] == "ERROR at setup of test_needs_the_fixture"
    assert error["message"] == "RuntimeError: no CUDA device here"


def test_each_failing_tests_id_and_assertion_are_read_from_captured_output(
    tmp_path: Path,
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_gpu.py").write_text(_FAILING)
    _check_parsed(gpu_check.parse_pytest_output(_CAPTURED.format(root=tmp_path), tmp_path))


def test_pytest_run_with_the_checks_flags_prints_what_the_parser_reads(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_gpu.py").write_text(_FAILING)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *gpu_check.PYTEST_REPORT_ARGS,
         "tests"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    _check_parsed(gpu_check.parse_pytest_output(done.stdout, tmp_path))


# -- the stages and their JSON ------------------------------------------------------------


def _stage(key: str, run: gpu_check.StageRun, estimate: float = 1.0) -> gpu_check.Stage:
    return gpu_check.Stage(key, f"stage {key}", lambda report: estimate, run)


def test_the_json_is_written_after_each_stage_and_a_failing_stage_costs_no_other(
    tmp_path: Path,
) -> None:
    saved = tmp_path / "check.json"
    on_disk: dict[str, Any] = {}

    def first(report: dict[str, Any], deadline: float) -> None:
        report["measured"] = 42

    def second(report: dict[str, Any], deadline: float) -> None:
        on_disk.update(json.loads(saved.read_text()))

    def broken(report: dict[str, Any], deadline: float) -> None:
        raise RuntimeError("CUDA error: an illegal memory access")

    report: dict[str, Any] = {"stages": []}
    stages = [
        _stage("first", first),
        _stage("second", second),
        _stage("too-long", first, estimate=1000.0),
        _stage("broken", broken),
        _stage("last", lambda report, deadline: "failed"),
    ]
    gpu_check.run_stages(stages, report, lambda r: gpu_check._write_json(saved, r), budget_s=100)

    # While the second stage ran, the file already held the first one's result.
    assert on_disk["measured"] == 42
    assert [(s["key"], s["status"]) for s in on_disk["stages"]] == [
        ("first", "done"),
        ("second", "running"),
    ]
    final = json.loads(saved.read_text())
    assert [(s["key"], s["status"]) for s in final["stages"]] == [
        ("first", "done"),
        ("second", "done"),
        ("too-long", "skipped: time budget"),
        ("broken", "error"),
        ("last", "failed"),
    ]
    assert final["stages"][3]["error"] == "RuntimeError: CUDA error: an illegal memory access"
    assert final["stages"][2]["estimate_s"] == 1000.0 and "seconds" not in final["stages"][2]


def test_sigterm_writes_what_was_measured_and_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def measured(report: dict[str, Any], deadline: float) -> None:
        report["gpu_tests"] = {"exit_code": 0, "summary": "6 passed in 50.0s", "failures": []}

    def killed(report: dict[str, Any], deadline: float) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler ends this at once

    report = _report()
    report.update(stages=[], sweeps={}, bench={"rows": []})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "new_report", lambda args: report)
    monkeypatch.setattr(
        gpu_check, "plan", lambda check: [_stage("tests", measured), _stage("sweep", killed)]
    )
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    (tmp_path / "out").mkdir()
    saved = tmp_path / "check.json"
    monkeypatch.setattr(
        sys, "argv", ["gpu_check.py", "--out", str(saved), "--docs", str(tmp_path / "docs")]
    )
    before = signal.getsignal(signal.SIGTERM)

    started = time.monotonic()
    assert gpu_check.main() == 128 + signal.SIGTERM
    assert time.monotonic() - started < 20
    assert signal.getsignal(signal.SIGTERM) == before
    for written in (saved, tmp_path / "out" / "gpu-check.json"):
        record = json.loads(written.read_text())
        assert record["stopped_by"] == "SIGTERM"
        assert record["gpu_tests"]["summary"] == "6 passed in 50.0s"
        assert [(s["key"], s["status"]) for s in record["stages"]] == [
            ("tests", "done"),
            ("sweep", "interrupted (SIGTERM)"),
        ]
    assert "6 passed in 50.0s" in (tmp_path / "out" / "nvidia-h200.md").read_text()


# -- the page ---------------------------------------------------------------------------------


def _row(net: str, data: str, batch: int, precision: str, ips: tuple[float, ...]) -> dict:
    pipeline, bare, minimal = ips
    return {
        "net": net,
        "data": data,
        "batch_size": batch,
        "data_source": "real Fashion-MNIST" if data == "mnist" else "synthetic 50000/10000",
        "precision": precision,
        "channels_last": precision != "32-true",
        "optimizer": "adadelta",
        "estimate": "best of 3 alternating runs",
        "train_images_per_s": {
            "pipeline": pipeline,
            "bare": bare,
            "ratio": pipeline / bare,
            "minimal_lightning": minimal,
            "minimal_lightning_ratio": minimal / bare,
        },
        "eval_images_per_s": {"pipeline": 50000.0, "bare": 60000.0, "ratio": 5 / 6},
        "eval_share_of_full_epoch": 0.03,
        "peak_rss_mb": 2048.0,
        "peak_gpu_mb": 1536.0,
        "layout": {"nhwc_over_nchw": 1.1},
        "per_step": None,
    }


def _sweep(wall: float, code: int, epochs: list[list[float]], **extra: Any) -> dict:
    jobs = [{"job": str(i), "status": "completed", "per_epoch_s": e} for i, e in enumerate(epochs)]
    return {
        "exit_code": code,
        "timed_out": False,
        "wall_s": wall,
        "launcher": "3 jobs, 2 at a time side by side (joblib) on 1 GPU(s), 2 per GPU",
        "gpu_util_mean": 55.0,
        "gpu_util_max": 90.0,
        "gpu_memory_max_mb": 3072.0,
        "jobs": jobs,
        "completed_jobs": len(jobs),
        "expected_jobs": 3,
        **extra,
    }


def _report() -> dict[str, Any]:
    return {
        "kind": "gpu-check",
        "gpu": "NVIDIA H200",
        "machine": {"torch": "2.11.0+cu130", "cuda": "13.0", "lightning": "2.6.6",
                    "driver": "580.1", "cpu_cores": 16},
        "command": "python src/gpu_check.py --fashion-mnist .gpu/fashion-mnist",
        "started": "2026-12-05 10:00",
        "budget_s": 420.0,
        "stages": [
            {"key": "tests", "title": "pytest -m gpu", "status": "done", "estimate_s": 150.0,
             "seconds": 81.0},
            {"key": "bench-bf16-net_1-mnist", "title": "bench net_1 mnist b32 bf16-mixed",
             "status": "skipped: time budget", "estimate_s": 60.0, "left_s": 12.0},
        ],
        "gpu_tests": {
            "exit_code": 1,
            "summary": "1 failed, 5 passed in 81.0s",
            "failures": [
                {"id": "tests/test_gpu.py::test_x", "outcome": "failed",
                 "location": "tests/test_gpu.py:71",
                 "source": "assert watch.copies < watch.steps / 4, watch.copies",
                 "message": "AssertionError: 30", "detail": ["AssertionError: 30"]},
            ],
        },
        "bench": {"rows": [
            {**_row("net_1", "mnist", 32, "32-true", (6400.0, 16000.0, 8000.0)),
             "graph_images_per_s": {"pipeline_graph": 32000.0, "bare_graph": 64000.0}},
        ]},
        "sweep": {"overrides": ["data=fashion_mnist", "trainer.max_epochs=3"],
                  "data": "real Fashion-MNIST"},
        "sweeps": {
            "jobs_per_gpu=2": {"same_as": "default launcher", "note": "= the default launcher"},
            "one job alone": _sweep(25.0, 0, [[7.0, 5.0, 6.0]], expected_jobs=1),
            "jobs_per_gpu=3": _sweep(30.0, 1, [[3.0, 3.0, 3.0]],
                                     stderr_tail=["RuntimeError: CUDA out of memory"]),
            "default launcher": _sweep(60.0, 0, [[5.0, 4.0, 3.0], [6.0, 6.0, 6.0], [2.0] * 3]),
            "jobs_per_gpu=1": _sweep(120.0, 0, [[4.0, 4.0, 4.0]] * 3),
        },
    }  # fmt: skip


def test_the_page_is_rebuilt_from_a_saved_json_without_a_gpu(tmp_path: Path) -> None:
    saved = tmp_path / "gpu-check.json"
    saved.write_text(json.dumps(_report()))
    docs = tmp_path / "benchmarks"
    result = run_cli("gpu_check.py", "--page", str(saved), "--docs", str(docs))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (docs / "nvidia-h200.md").read_text().splitlines()

    assert lines[0] == "# NVIDIA H200: GPU check (tests, training speed, sweeps)"
    assert "`pytest -m gpu`: 1 failed, 5 passed in 81.0s (exit 1)." in lines
    assert (
        "| `tests/test_gpu.py::test_x` | tests/test_gpu.py:71 "
        "| `assert watch.copies < watch.steps / 4, watch.copies` | AssertionError: 30 |"
    ) in lines
    assert "| bench net_1 mnist b32 bf16-mixed | skipped: time budget | - | 60 |" in lines
    # img/s, ratios and ms per step (1000 x 32 / img/s) of pipeline / bare / min. Lightning
    assert (
        "| net_1 | mnist (real Fashion-MNIST) | 32 | 32-true | 6400 | 16000 | 0.400 "
        "| 8000 (0.500) | 0.800 | 5.00 / 2.00 / 4.00 | 50000 / 60000 | 3.0% | 1.5 GB | 1.100 |"
    ) in lines
    # The CUDA-graph step: eager and graphed, pipeline and bare loop, with ms per step.
    assert (
        "| net_1 | mnist (real Fashion-MNIST) | 32 | 32-true | 6400 img/s (5.00 ms) "
        "| 32000 img/s (1.00 ms) | 16000 img/s (2.00 ms) | 64000 img/s (0.50 ms) | 0.500 |"
    ) in lines
    launcher = "3 jobs, 2 at a time side by side (joblib) on 1 GPU(s), 2 per GPU"
    sweeps = [
        f"| default launcher | {launcher} | 3 of 3 | 60.0 | 4.0 / 6.0 / 2.0 | 2.00 "
        "| 55% / 90% | 3.0 GB | 0 |",
        f"| jobs_per_gpu=1 | {launcher} | 3 of 3 | 120.0 | 4.0 / 4.0 / 4.0 | 1.00 "
        "| 55% / 90% | 3.0 GB | 0 |",
        "| jobs_per_gpu=2 | = the default launcher | | | | | | | |",
        f"| jobs_per_gpu=3 | {launcher} | 1 of 3 | 30.0 | 3.0 | - | 55% / 90% | 3.0 GB | 1 |",
        f"| one job alone | {launcher} | 1 of 1 | 25.0 | 6.0 | - | 55% / 90% | 3.0 GB | 0 |",
    ]
    assert [line for line in lines if line in sweeps] == sweeps  # all there, in this order
    assert "RuntimeError: CUDA out of memory" in lines
    index = (docs / "README.md").read_text()
    assert "- [NVIDIA H200: GPU check (tests, training speed, sweeps)](nvidia-h200.md)" in index


_SLOW_WITH_A_CHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def _gone(pid: int) -> bool:
    """Whether `pid` ended within a few seconds (a signal takes a moment to land)."""
    for _ in range(100):
        try:
            with open(f"/proc/{pid}/stat") as stat:  # a zombie waits only to be reaped
                if stat.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _wait_for_line(log: Path) -> int:
    for _ in range(200):
        if log.is_file() and log.read_text().strip():
            return int(log.read_text().split()[0])
        time.sleep(0.05)
    raise AssertionError("the command printed nothing")


def test_a_command_past_its_deadline_or_stopped_is_killed_with_its_children(
    tmp_path: Path,
) -> None:
    log = tmp_path / "late.log"
    command = [sys.executable, "-c", _SLOW_WITH_A_CHILD]
    result, stopped = gpu_check.timed_command(command, log, time.monotonic() + 2)
    assert stopped is None and result["timed_out"] and result["exit_code"] is None
    assert 1 < result["wall_s"] < 20
    assert _gone(_wait_for_line(log))

    log = tmp_path / "stopped.log"
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    with gpu_check.stop_on_signals():
        timer.start()
        result, stopped = gpu_check.timed_command(command, log, time.monotonic() + 60)
    assert stopped is not None and stopped.signum == signal.SIGINT
    assert result["stopped_by"] == "SIGINT" and result["wall_s"] < 20
    assert _gone(_wait_for_line(log))


def test_code_in_this_process_still_running_past_the_budget_is_stopped_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_check, "ALARM_AFTER_S", 0.3)
    report: dict[str, Any] = {"stages": []}
    stages = [
        _stage("endless", lambda report, deadline: time.sleep(30), estimate=0.1),
        _stage("next", lambda report, deadline: None, estimate=0.0),
    ]
    started = time.monotonic()
    gpu_check.run_stages(stages, report, lambda r: None, budget_s=0.5, grace_s=0.2)
    assert time.monotonic() - started < 10
    assert [(s["key"], s["status"]) for s in report["stages"]] == [
        ("endless", "timed out"),
        ("next", "skipped: time budget"),
    ]
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
