"""The fast path trains the same maths as a bare loop; each speed switch does what it says."""

import ctypes
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
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.profilers import SimpleProfiler

from cnnlab.data import MNISTDataModule
from cnnlab.errors import ConfigError
from cnnlab.models.classifier import ImageClassifier
from cnnlab.speed import runtime
from cnnlab.speed.lightning_trims import CheapHookBookkeeping, NoProfiler, skip_hook_name_checks
from cnnlab.speed.runtime import apply_runtime_settings, skip_unavailable_nvml_check
from cnnlab.training.checks import validate_train_config
from cnnlab.training.run import train
from cnnlab_bench.contenders import BareLoop
from conftest import ROOT


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
    losses = _losses_with(compose_cfg, synthetic_data_dir, "channels_last", steps=6)
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-4, atol=1e-5)


def test_channels_last_auto_is_nhwc_on_avx512_cpus_and_nchw_on_gpus(
    monkeypatch: pytest.MonkeyPatch, compose_cfg: Callable[..., DictConfig]
) -> None:
    from cnnlab.speed import layout
    from cnnlab.speed.net import ChannelsLast, net_speedups

    cfg = compose_cfg()
    assert cfg.channels_last == "auto"  # the run's default, for every net
    assert [type(c) for c in net_speedups(cfg)] == [ChannelsLast]
    assert net_speedups(compose_cfg(["channels_last=false"])) == []
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for flags, expected_on_cpu in (
        (frozenset({"avx2", "avx512f"}), True),
        (frozenset({"avx2"}), False),
    ):
        monkeypatch.setattr(layout, "cpu_model_and_flags", lambda flags=flags: ("Some CPU", flags))
        assert layout.use_channels_last("auto", cpu) is expected_on_cpu
        assert layout.use_channels_last("auto", gpu) is False  # fp32 on a GPU: not measured faster
        assert layout.use_channels_last(True, gpu) and not layout.use_channels_last(False, cpu)
        # Applied from outside the module once the Trainer says where it runs: NHWC weights,
        # and NHWC inputs through a forward pre-hook; the module itself stays plain.
        model = ImageClassifier({"_target_": "cnnlab.models.nets.net_1"}, [3, 32, 32], 10)
        callback = ChannelsLast("auto")
        for stage in ("fit", "test"):  # fitting then testing the same module: applied once
            callback.setup(_fake_trainer("cpu"), model, stage)  # type: ignore[arg-type]
        conv = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # 32 in
        assert conv.weight.is_contiguous(memory_format=torch.channels_last) is expected_on_cpu
        assert len(model._forward_pre_hooks) == int(expected_on_cpu)
        seen: list[torch.Tensor] = []
        model.net.register_forward_pre_hook(lambda _m, args, seen=seen: seen.append(args[0]))
        model(torch.zeros(2, 3, 32, 32))  # 3 channels: NCHW and NHWC strides differ
        assert seen[0].is_contiguous(memory_format=torch.channels_last) is expected_on_cpu
        assert "channels_last" not in model.hparams  # a checkpoint decides again where it runs
        # auto leaves a net without convolutions alone: NHWC would only add copies.
        mlp = ImageClassifier({"_target_": "cnnlab.models.nets.mlp"}, [1, 28, 28], 10)
        ChannelsLast("auto").setup(_fake_trainer("cpu"), mlp, "fit")  # type: ignore[arg-type]
        assert not mlp._forward_pre_hooks


def test_a_bad_channels_last_value_is_refused_with_the_choices(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    with pytest.raises(
        ConfigError, match=r"^channels_last=.*fast.* is invalid: use auto .*true or false"
    ):
        validate_train_config(compose_cfg(["channels_last=fast"]))


def _fake_trainer(device: str) -> Any:
    """The attributes a datamodule reads from its Trainer, on a device of our choosing."""
    strategy = types.SimpleNamespace(root_device=torch.device(device))
    return types.SimpleNamespace(strategy=strategy, world_size=1, global_rank=0)


def test_lightnings_hook_bookkeeping_skips_the_module_registries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ImageClassifier({"_target_": "cnnlab.models.nets.net_1"}, [1, 28, 28], 10)
    assert not isinstance(model, CheapHookBookkeeping)  # the class itself is plain Lightning
    assert skip_hook_name_checks(model) is model and isinstance(model, ImageClassifier)
    assert type(model).__name__ == "ImageClassifier" and isinstance(model, CheapHookBookkeeping)
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
        self.module = pl_module


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (None, NoProfiler),
        ("trainer.profiler=simple", SimpleProfiler),
        ("cheap_hook_bookkeeping=false", NoProfiler),
    ],
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
    trimmed = override != "cheap_hook_bookkeeping=false"  # the trims are switched one by one
    assert isinstance(spy.module, CheapHookBookkeeping) is trimmed
    if expected is NoProfiler:
        # one shared no-op context, not a generator per hook call
        assert spy.profiler.profile("a") is spy.profiler.profile("b")
        with spy.profiler.profile("training_step"):
            pass
    else:
        assert spy.profiler.recorded_durations["run_training_batch"]  # it measured the steps


_FRESH_TENSOR_FAULTS = """
import resource, torch
from cnnlab.speed.cpu_memory import keep_freed_memory
from cnnlab_bench.timing import release_freed_memory
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


@pytest.mark.slow
def test_compiled_net_trains_the_same_maths(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    losses = _losses_with(compose_cfg, synthetic_data_dir, "compile_net", steps=4)
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-4, atol=1e-5)


# -- a machine that is not idle ---------------------------------------------------------------


def test_auto_threads_leave_out_a_core_another_process_keeps_busy() -> None:
    from cnnlab.speed.threads import set_torch_threads
    from cnnlab_bench.load import busy_processes

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
