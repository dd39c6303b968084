"""The fast path trains the same maths as a bare loop, and the benchmark's machinery works."""

import ctypes
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.profilers import SimpleProfiler

from cnnlab.bench.accuracy import accuracy_check
from cnnlab.bench.contenders import BareLoop
from cnnlab.bench.rows import Settings
from cnnlab.bench.timing import StepPhases
from cnnlab.data import MNISTDataModule
from cnnlab.errors import ConfigError
from cnnlab.models.classifier import ImageClassifier
from cnnlab.speed import runtime
from cnnlab.speed.lightning_trims import NoProfiler
from cnnlab.speed.runtime import apply_runtime_settings, skip_unavailable_nvml_check
from cnnlab.training.checks import validate_train_config
from cnnlab.training.run import train
from conftest import CONF_DIR, ROOT, only, run_cli


def _short_run(override: str, data_dir: Path, steps: int) -> list[str]:
    """One epoch of `steps` training batches, no test, quiet: for step-by-step comparisons."""
    return [
        override,
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={steps}",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=csv",
        "callbacks.progress_bar.enabled=false",
    ]


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize("optimizer", ["adadelta", "adam"])
def test_pipeline_loss_equals_the_bare_loops_step_by_step(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, optimizer: str
) -> None:
    steps = 12
    cfg = compose_cfg(_short_run(f"optimizer={optimizer}", synthetic_data_dir, steps))
    recorder = LossRecorder()
    train(cfg, extra_callbacks=[recorder])

    datamodule = instantiate(cfg.data)
    datamodule.setup()
    _, bare_losses = BareLoop(cfg, datamodule, torch.device("cpu")).train_epoch(steps)
    assert len(recorder.losses) == len(bare_losses) == steps
    assert recorder.losses[-1] < recorder.losses[0]  # it trained
    torch.testing.assert_close(recorder.losses, bare_losses, rtol=1e-5, atol=1e-6)


def _losses_with(
    compose_cfg: Callable[..., DictConfig], data_dir: Path, switch: str, steps: int
) -> dict[str, list[float]]:
    """Per-step training losses with a boolean config switch off and on."""
    losses = {}
    for value in ("false", "true"):
        cfg = compose_cfg(_short_run(f"{switch}={value}", data_dir, steps))
        cfg.paths.output_dir = f"{cfg.paths.output_dir}-{value}"
        recorder = LossRecorder()
        train(cfg, extra_callbacks=[recorder])
        losses[value] = recorder.losses
    return losses


def test_channels_last_trains_the_same_maths(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    losses = _losses_with(compose_cfg, synthetic_data_dir, "model.channels_last", steps=6)
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-4, atol=1e-5)


def test_channels_last_auto_is_nhwc_on_avx512_cpus_and_nchw_on_gpus(
    monkeypatch: pytest.MonkeyPatch, compose_cfg: Callable[..., DictConfig]
) -> None:
    from cnnlab.speed import layout

    assert compose_cfg().model.channels_last == "auto"  # the default of net_1 and net_2
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for flags, expected_on_cpu in (
        (frozenset({"avx2", "avx512f"}), True),
        (frozenset({"avx2"}), False),
    ):
        monkeypatch.setattr(layout, "cpu_model_and_flags", lambda flags=flags: ("Some CPU", flags))
        assert layout.use_channels_last("auto", cpu) is expected_on_cpu
        assert layout.use_channels_last("auto", gpu) is False  # fp32 on a GPU: not measured faster
        assert layout.use_channels_last(True, gpu) and not layout.use_channels_last(False, cpu)
        # The LightningModule decides once the Trainer says where it runs, then feeds NHWC.
        model = ImageClassifier(
            {"_target_": "cnnlab.models.nets.net_1"}, [1, 28, 28], 10, channels_last="auto"
        )
        model.configure_model()  # as load_from_checkpoint calls it, with no Trainer yet
        assert model.channels_last is False  # not decided before a Trainer
        model.trainer = _fake_trainer("cpu")  # type: ignore[assignment]
        model.configure_model()
        assert model.channels_last is expected_on_cpu
        conv = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # 32 in
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected_on_cpu
        assert model.hparams["channels_last"] == "auto"  # a checkpoint decides again where it runs


def test_a_bad_channels_last_value_is_refused_with_the_choices(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    with pytest.raises(
        ConfigError, match=r"^model.channels_last=.*fast.* is invalid: use auto .*true or false"
    ):
        validate_train_config(compose_cfg(["model.channels_last=fast"]))


def _fake_trainer(device: str) -> Any:
    """The attributes a datamodule reads from its Trainer, on a device of our choosing."""
    strategy = types.SimpleNamespace(root_device=torch.device(device))
    return types.SimpleNamespace(strategy=strategy, world_size=1, global_rank=0)


def test_lightnings_hook_bookkeeping_skips_the_module_registries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ImageClassifier({"_target_": "cnnlab.models.nets.net_1"}, [1, 28, 28], 10)
    head = torch.nn.Linear(2, 2)
    registry_checks: list[str] = []
    module_setattr = torch.nn.Module.__setattr__

    def counting_setattr(self: torch.nn.Module, name: str, value: Any) -> None:
        registry_checks.append(name)
        module_setattr(self, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", counting_setattr)
    model._current_fx_name = "training_step"  # what Lightning does around every hook
    assert model._current_fx_name == "training_step" and registry_checks == []
    # Anything else still goes through nn.Module: submodules and parameters get registered.
    model.head = head
    assert registry_checks == ["head"] and "head" in dict(model.named_children())


class ProfilerSpy(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.profiler = trainer.profiler


@pytest.mark.parametrize(
    ("override", "expected"), [(None, NoProfiler), ("trainer.profiler=simple", SimpleProfiler)]
)
def test_no_profiling_costs_nothing_per_hook_and_a_profiler_can_still_be_chosen(
    compose_cfg: Callable[..., DictConfig],
    synthetic_data_dir: Path,
    override: str | None,
    expected: type,
) -> None:
    overrides = _short_run("optimizer=adam", synthetic_data_dir, steps=2)
    cfg = compose_cfg([*overrides, override] if override else overrides)
    spy = ProfilerSpy()
    train(cfg, extra_callbacks=[spy])
    assert type(spy.profiler) is expected
    if expected is NoProfiler:
        # one shared no-op context, not a generator per hook call
        assert spy.profiler.profile("a") is spy.profiler.profile("b")
        with spy.profiler.profile("training_step"):
            pass
    else:
        assert spy.profiler.recorded_durations["run_training_batch"]  # it measured the steps


_FRESH_TENSOR_FAULTS = """
import resource, torch
from cnnlab.speed.cpu_memory import keep_freed_memory, release_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # 64 MB, every page written, then freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
assert keep_freed_memory()
print(*[faults() for _ in range(10)], release_freed_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_freed_tensor_memory_is_reused_without_faulting_its_pages_in_again() -> None:
    # In a fresh interpreter, as a run starts: this process's earlier tests would have left
    # the heap in a state of their own.
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_TENSOR_FAULTS],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    *faults, released = done.stdout.split()
    # The heap grows a few times first (each block's alignment slack can leave the freed one
    # a little short); from then on the same block is reused. glibc's default maps a block
    # this size afresh every time: 16,384 page faults on every one of them.
    assert all(int(f) < 1_000 for f in faults[-3:]), faults
    assert released == "True"


@pytest.mark.parametrize("keep", [True, False])
def test_runs_keep_freed_cpu_memory_unless_configured_not_to(
    compose_cfg: Callable[..., DictConfig], monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: calls.append(True) or True)
    apply_runtime_settings(compose_cfg([f"keep_freed_cpu_memory={str(keep).lower()}"]))
    assert calls == ([True] if keep else [])


def _fake_nvml(monkeypatch: pytest.MonkeyPatch, installed: bool) -> list[str]:
    """Stands in for the NVIDIA driver's NVML library; returns the attempts to load it."""
    attempts: list[str] = []
    real_cdll = ctypes.CDLL

    def cdll(name: str | None, *args: Any, **kwargs: Any) -> Any:
        if name != "libnvidia-ml.so.1":
            return real_cdll(name, *args, **kwargs)
        attempts.append(name)
        if not installed:
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return types.SimpleNamespace()

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # as importing Lightning does
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return attempts


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="a CPU-only torch never asks NVML")
def test_without_nvml_the_cuda_check_stops_loading_it_every_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if torch.cuda.is_initialized():
        pytest.skip("CUDA is initialised: torch then caches the device count and asks no one")
    attempts = _fake_nvml(monkeypatch, installed=False)
    available = torch.cuda.is_available()
    assert len(attempts) == 1  # each call (every optimizer step) tries to load NVML again
    assert skip_unavailable_nvml_check()
    assert len(attempts) == 2  # its own probe
    assert [torch.cuda.is_available() for _ in range(3)] == [available] * 3  # same answer
    assert len(attempts) == 2  # ...without loading NVML
    assert not skip_unavailable_nvml_check()  # once is enough


def test_with_nvml_the_fork_safe_cuda_check_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = _fake_nvml(monkeypatch, installed=True)
    assert not skip_unavailable_nvml_check()
    assert attempts == ["libnvidia-ml.so.1"] or not torch.backends.cuda.is_built()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


def test_dataset_moves_to_the_accelerator_and_batches_are_gathered_there(
    synthetic_data_dir: Path,
) -> None:
    """On a GPU the splits live in its memory; 'meta' stands in for it on this CPU machine."""
    dm = MNISTDataModule(data_dir=synthetic_data_dir, on_device=True)
    dm.trainer = _fake_trainer("meta")
    dm.setup()
    assert all(x.device.type == "meta" and y.device.type == "meta" for x, y in dm.splits.values())
    images, _ = next(iter(dm.train_dataloader()))
    assert images.device.type == "meta" and images.shape == (32, 1, 28, 28)
    assert images.dtype == torch.uint8  # normalised on the device, after the gather

    auto = MNISTDataModule(data_dir=synthetic_data_dir, on_device="auto")
    auto.trainer = _fake_trainer("cpu")
    auto.setup()
    assert auto.splits["train"][0].device.type == "cpu"


def test_step_phases_are_medians_over_steps_and_rest_is_the_remainder() -> None:
    phases = StepPhases()
    for step in range(StepPhases.SKIP_STEPS + 3):
        t = 10.0 * step  # seconds
        slow = 1.0 if step == StepPhases.SKIP_STEPS else 0.0  # one noisy step: not the median
        for name, at in (
            ("start", t),
            ("forward", t + 0.5),  # the batch
            ("forward_end", t + 2.5 + slow),
            ("backward", t + 3.0 + slow),  # zero_grad
            ("backward_end", t + 6.0 + slow),
            ("optimizer", t + 6.5 + slow),  # the loop's own code
            ("end", t + 8.0 + slow),
        ):
            phases.mark(name, at)
    phases.mark("start", 1e6)  # an unfinished step (the epoch ended): not counted
    assert phases.medians_ms() == pytest.approx(
        {"forward": 2000, "backward": 3000, "optimizer": 1500, "rest": 1500, "step": 8000}
    )
    assert StepPhases().medians_ms() == {}
    ends_only = StepPhases()  # the pipeline's clock: start and end of each step
    for step in range(StepPhases.SKIP_STEPS + 3):
        ends_only.mark("start", 10.0 * step)
        ends_only.mark("end", 10.0 * step + (9.0 if step == StepPhases.SKIP_STEPS else 7.0))
    assert ends_only.medians_ms() == pytest.approx({"step": 7000})  # no rest without phases
    on_gpu = StepPhases(enabled=False)  # asynchronous kernels: marks would need syncs
    for name in ("start", "forward", "forward_end", "backward", "backward_end", "optimizer"):
        on_gpu.mark(name, 1.0)
    on_gpu.mark("end", 2.0)
    assert on_gpu.medians_ms() == {}


def test_tiny_benchmark_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    docs = tmp_path / "benchmarks"
    args = ("--tiny", "--reps", "1", "--out", str(out), "--docs", str(docs))
    result = run_cli("bench.py", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["cpu"] and isinstance(report["machine"]["cpu_flags"], list)
    # The Markdown page that docs/speed.md shows: every row, from this very run's numbers.
    page = only("*_32-true*.md", docs)  # -cl where the default layout is NHWC
    text = page.read_text()
    assert f"Generated by `python src/bench.py {' '.join(args)}`" in text
    assert report["machine"]["cpu"] in text.splitlines()[0]
    for row in report["rows"]:
        assert f"| {row['train_images_per_s']['pipeline']:.0f} |" in text
    assert f"]({page.name})" in (docs / "README.md").read_text()
    rows = {(r["net"], r["data"], r["batch_size"]) for r in report["rows"]}
    assert rows == {
        ("net_1", "mnist", 32),
        ("net_2", "mnist", 32),
        ("net_1", "cifar10", 128),
        ("net_2", "cifar10", 128),
    }
    for row in report["rows"]:
        for key in ("train_images_per_s", "eval_images_per_s"):
            values = row[key]
            assert values["pipeline"] > 0 and values["bare"] > 0
            assert values["ratio"] == pytest.approx(values["pipeline"] / values["bare"])
        train_ips = row["train_images_per_s"]
        assert train_ips["minimal_lightning"] > 0
        assert train_ips["minimal_lightning_ratio"] == pytest.approx(
            train_ips["minimal_lightning"] / train_ips["bare"]
        )
        # one rep: the best run is the median run
        assert row["estimate"] == "best of 1 alternating runs"
        for name, median in row["train_images_per_s_median"].items():
            key = "minimal_lightning" if name == "minimal" else name
            assert median == pytest.approx(train_ips[key])
        runs = row["runs"]
        assert len(runs["pipeline"]) == len(runs["bare"]) == len(runs["minimal"]) == 1
        # every contender trained the same number of images
        assert {run["images"] for contender in runs.values() for run in contender} == {
            3 * row["batch_size"]
        }
        assert row["epoch_s"]["pipeline"] > 0 and row["peak_rss_mb"] > 0
        assert row["peak_rss_scope"] == "this row"  # Linux: each row counts its own peak
        assert 0 < row["eval_share_of_full_epoch"] < 1
        for loop in ("bare", "minimal"):  # each loop's step, split into its phases
            phases = row["step_ms_median"][loop]
            assert set(phases) == {"forward", "backward", "optimizer", "rest", "step"}
            assert all(phases[name] > 0 for name in ("forward", "backward", "optimizer", "step"))
            assert phases["rest"] < phases["step"]
        assert set(row["step_ms_median"]["pipeline"]) == {"step"}
        verdict = row["per_step"]
        bare, minimal = row["step_ms_median"]["bare"], row["step_ms_median"]["minimal"]
        assert verdict["pipeline_ratio"] == pytest.approx(
            bare["step"] / row["step_ms_median"]["pipeline"]["step"]
        )
        assert verdict["lightning_loop_ms"] == pytest.approx(minimal["rest"] - bare["rest"])
        assert verdict["lightning_ratio_cap"] == pytest.approx(
            bare["step"] / (bare["step"] + verdict["lightning_loop_ms"])
        )
    assert report["machine"]["cpu"]
    assert "min.PL" in result.stdout and "optimizer" in result.stdout  # the phase table
    assert "PL loop" in result.stdout and "cap" in result.stdout
    assert "net_1" in result.stdout and "ratio" in result.stdout
    # The code probe ran (CPU) and every row's verdict by code comes from it.
    probe = report["code_probe"]
    assert probe["row"]["net"] == "mlp" and probe["row"]["steps"] == 3  # --tiny: 3 steps
    assert probe["pipeline_code_ms"] == pytest.approx(
        probe["step_ms"]["pipeline"] - probe["step_ms"]["minimal"]
    )
    assert "pipeline adds" in text and "| pipeline / min. Lightning by code |" in text
    for row in report["rows"]:
        assert 0 < row["per_step"]["pipeline_vs_minimal_by_code"] < 2
    # Each row also times the bare loop in the other layout: what channels_last buys here.
    assert "| NHWC / NCHW |" in text
    for row in report["rows"]:
        layout = row["layout"]
        assert layout["nhwc"] > 0 and layout["nchw"] > 0
        assert layout["nhwc_over_nchw"] == pytest.approx(layout["nhwc"] / layout["nchw"])
        this = "nhwc" if row["channels_last"] else "nchw"
        assert layout[this] == pytest.approx(row["train_images_per_s"]["bare"])
        assert len(row["runs"]["bare_other_layout"]) == 1
        assert f"| {layout['nhwc_over_nchw']:.3f} |" in text


def test_accuracy_check_pairs_fp32_and_the_fast_precision_per_seed_in_both_layouts(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    limits = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "logger=csv"]
    settings = Settings(
        precision="bf16-mixed", channels_last=True, accuracy_seeds=2, extra_overrides=limits
    )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        check = accuracy_check(settings, synthetic_data_dir, tmp_path)
    assert check["seeds"] == [42, 43]
    variants = {
        "fp32": ("32-true", False),
        "fast": ("bf16-mixed", True),
        "fp32_same_layout": ("32-true", True),  # the layout's rounding without bf16
    }
    for label, (precision, channels_last) in variants.items():
        runs = check[label]["runs"]
        assert (check[label]["precision"], check[label]["channels_last"]) == (
            precision,
            channels_last,
        )
        assert [run["seed"] for run in runs] == [42, 43]
        assert check[label]["test_acc"] == pytest.approx(sum(r["test_acc"] for r in runs) / 2)
        for run in runs:
            metrics = json.loads(
                (tmp_path / f"{label}-seed{run['seed']}" / "metrics.json").read_text()
            )
            assert metrics["seed"] == run["seed"] and metrics["steps"] == 3
            assert metrics["test"]["test/acc"] == pytest.approx(run["test_acc"])
    for baseline, suffix in (("fp32", ""), ("fp32_same_layout", "_to_same_layout")):
        differences = [
            100 * (fast["test_acc"] - base["test_acc"])
            for base, fast in zip(check[baseline]["runs"], check["fast"]["runs"], strict=True)
        ]
        assert check[f"per_seed_difference{suffix}_points"] == pytest.approx(differences)
        assert check[f"test_acc_difference{suffix}_points"] == pytest.approx(sum(differences) / 2)


@pytest.mark.slow
def test_compiled_net_trains_the_same_maths(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    losses = _losses_with(compose_cfg, synthetic_data_dir, "model.compile_net", steps=4)
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-4, atol=1e-5)


# -- a machine that is not idle ---------------------------------------------------------------


def test_busy_processes_run_while_inside_and_are_gone_after() -> None:
    from cnnlab.bench.load import busy_processes

    with busy_processes(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            os.kill(pid, 0)  # alive
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_auto_threads_leave_out_a_core_another_process_keeps_busy() -> None:
    from cnnlab.bench.load import busy_processes
    from cnnlab.speed.threads import set_torch_threads

    before, cores = torch.get_num_threads(), os.cpu_count() or 1
    if cores < 2:
        pytest.skip("one CPU: there is no core to leave out")
    try:
        torch.set_num_threads(cores)
        with busy_processes(1):
            assert set_torch_threads("auto") <= cores - 1
            assert torch.get_num_threads() <= cores - 1
        # The next run of this process (a sweep's next job) starts again from torch's count,
        # not from what the load left; a fixed count is taken as it is.
        assert set_torch_threads(3) == 3 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_auto_threads_cap_at_the_idle_cores_and_restore_once_they_are_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cnnlab.speed import threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        monkeypatch.setattr(threads, "free_cores", lambda: 1.4)
        assert threads.set_torch_threads("auto") == 1
        monkeypatch.setattr(threads, "free_cores", lambda: 3.6)
        assert threads.set_torch_threads("auto") == 4  # back to torch's own count
        monkeypatch.setattr(threads, "free_cores", lambda: None)  # no /proc/stat
        assert threads.set_torch_threads("auto") == 4
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "two", "true"])
def test_a_torch_threads_value_that_is_neither_auto_nor_a_count_is_refused(
    compose_cfg: Callable[..., DictConfig], value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.errors import ConfigError
    from cnnlab.training.checks import validate_train_config

    monkeypatch.delenv("CNNLAB_TORCH_THREADS")
    assert compose_cfg().torch_threads == "auto"
    monkeypatch.setenv("CNNLAB_TORCH_THREADS", "3")  # a count for every run, as tests set it
    assert compose_cfg().torch_threads == 3
    with pytest.raises(ConfigError, match=r"^torch_threads=.* is invalid: use auto \(torch"):
        validate_train_config(compose_cfg([f"torch_threads={value}"]))


def test_each_rows_verdict_by_code_adds_the_probes_code_cost_to_its_minimal_step() -> None:
    from cnnlab.bench.runner import add_code_verdicts

    rows = [
        {"per_step": {"pipeline_ratio": 1.0}, "step_ms_median": {"minimal": {"step": 10.0}}},
        {"per_step": {"pipeline_ratio": 1.0}, "step_ms_median": {"minimal": {"step": 1.0}}},
        {"per_step": None, "step_ms_median": {}},  # a GPU row: no phases, no verdict
    ]
    add_code_verdicts(rows, {"pipeline_code_ms": 0.1})
    assert rows[0]["per_step"]["pipeline_vs_minimal_by_code"] == pytest.approx(10 / 10.1)
    assert rows[1]["per_step"]["pipeline_vs_minimal_by_code"] == pytest.approx(1 / 1.1)
    assert rows[2]["per_step"] is None
    add_code_verdicts(rows[:1], {"pipeline_code_ms": -0.2})  # cnnlab's trims win: above 1
    assert rows[0]["per_step"]["pipeline_vs_minimal_by_code"] == pytest.approx(10 / 9.8)


def test_a_benchmark_under_load_says_so_and_gets_its_own_page(tmp_path: Path) -> None:
    from cnnlab.bench.tables import format_table, write_markdown

    machine = {"cpu": "Some CPU", "cpu_flags": ["AVX-512"], "torch": "2", "threads": 1}
    report = {"machine": {**machine, "gpu": None}, "rows": [], "accuracy_check": None}
    report["settings"] = {"precision": "32-true", "channels_last": False, "optimizer": "adam"}
    quiet = write_markdown({**report, "settings": {**report["settings"], "load": 0}}, tmp_path,
                           "python src/bench.py", "now")  # fmt: skip
    loaded = {**report, "settings": {**report["settings"], "load": 1}}
    page = write_markdown(loaded, tmp_path, "python src/bench.py --load 1", "now")
    assert (quiet.name, page.name) == (
        "some-cpu-avx-512_32-true.md",
        "some-cpu-avx-512_32-true_load1.md",
    )
    assert "1 busy process(es) beside it (--load 1)" in page.read_text()
    assert "machine quiet" in quiet.read_text() and "machine quiet" in format_table(
        report | {"settings": {"load": 0}}
    )


# -- the seed's Keras as a contender -----------------------------------------------------------


def test_keras_and_cnnlab_train_on_exactly_the_same_images(tmp_path: Path) -> None:
    import numpy as np

    from cnnlab.bench.keras_comparison import _write_workload

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(1200, 28, 28), dtype=np.uint8)
    labels = (np.arange(1200) % 10).astype(np.uint8)
    folder = _write_workload(tmp_path, images, labels, train=900)
    dm = MNISTDataModule(data_dir=folder, val_split="last", val_fraction=0.1)
    dm.setup()
    keras_arrays = np.load(folder / "keras.npz")
    cnnlab_images, cnnlab_labels = dm.splits["train"]
    assert np.array_equal(cnnlab_images[:, 0].numpy(), keras_arrays["images"])
    assert np.array_equal(cnnlab_labels.numpy(), keras_arrays["labels"])
    assert len(keras_arrays["labels"]) == 900


def test_keras_table_gives_the_ratios_to_keras_and_the_share_kept_under_load() -> None:
    from cnnlab.bench.keras_comparison import format_keras_table, keras_markdown

    def speeds(keras: float, cnnlab: float, bare: float) -> dict[str, float]:
        return {"keras": keras, "cnnlab": cnnlab, "bare": bare}

    full, subset = "full training split", "cache-resident subset"
    medians = {full: speeds(600, 1200, 1500), subset: speeds(1300, 1300, 1430)}
    loaded = {full: speeds(300, 720, 600), subset: speeds(650, 650, 715)}
    result = {
        "settings": {"optimizer": "adam", "reps": 2, "load": 1},
        "torch_threads": {"quiet": 2, "load 1": 1},
        "median_images_per_s": {"quiet": medians, "load 1": loaded},
        "machine": {"cpu": "Some CPU", "cpu_flags": [], "torch": "2"},
        "tensorflow": "2.21.0",
    }
    table = format_keras_table(result, "Some CPU")
    full_quiet = next(
        line for line in table.splitlines() if line.startswith("quiet  ") and "full" in line
    )
    assert full_quiet.split()[-3:] == ["2.00", "2.50", "2"]  # cnnlab/Keras, bare/Keras, threads
    assert "under load 1, full training split: Keras 0.50, cnnlab 0.60, bare loop 0.40" in table
    page = keras_markdown(result, "python src/bench.py --keras k", "now")
    assert (
        "| quiet | cache-resident subset | 9,600 | 1300 | 1300 | 1430 | 1.00 | 1.10 | 2 |" in page
    )
