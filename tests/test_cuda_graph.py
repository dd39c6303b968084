"""The CUDA-graph training step: when it applies (and why not, in one line), that its plumbing
trains the eager step's maths with Lightning's step counting, and, on a GPU, parity."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from cnnlab.errors import ConfigError
from cnnlab.models.classifier import ImageClassifier
from cnnlab.speed.cuda_graph import CudaGraphStep, EagerReplay, decide, make_capturable
from cnnlab.speed.net import net_speedups
from cnnlab.training.checks import validate_train_config
from cnnlab.training.run import train


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []
        self.steps: list[int] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.losses.append(float(outputs["loss"]))
        self.steps.append(trainer.global_step)


def _run(data_dir: Path, *overrides: str) -> list[str]:
    return [
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=1",
        "test=false",
        "logger=csv",
        "callbacks.progress_bar.enabled=false",
        "callbacks.model_summary.enabled=false",
        "cuda_graph=false",
        *overrides,
    ]


def _trainer(**settings: Any) -> Any:
    """The attributes `decide` reads, as a plain single-GPU fp32 run has them."""
    optimizer = settings.pop("optimizer", None) or torch.optim.Adam(
        [torch.nn.Parameter(torch.ones(1))]
    )
    values = {
        "strategy": types.SimpleNamespace(root_device=torch.device(settings.pop("device", "cuda"))),
        "optimizers": [optimizer],
        "precision": "32-true",
        "world_size": 1,
        "gradient_clip_val": None,
        "accumulate_grad_batches": 1,
        "lr_scheduler_configs": [],
        "callbacks": [],
    }
    values.update(settings)
    return types.SimpleNamespace(**values)


def _model() -> ImageClassifier:
    return ImageClassifier({"_target_": "cnnlab.models.nets.net_1"}, [1, 28, 28], 10)


def test_a_plain_single_gpu_run_captures_the_whole_step() -> None:
    decision = decide(_trainer(), _model())
    assert (decision.mode, decision.reason) == (
        "full",
        "forward, backward and Adam's step are one graph",
    )


def test_an_optimizer_without_a_capturable_step_steps_eagerly_after_the_graph() -> None:
    adagrad = torch.optim.Adagrad([torch.nn.Parameter(torch.ones(1))])
    decision = decide(_trainer(optimizer=adagrad), _model())
    assert decision.mode == "partial"
    assert decision.reason.startswith("Adagrad has no capturable step: forward and backward")


class _PerStepHook(pl.Callback):
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass


class _ClippingModule(ImageClassifier):
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        pass


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"device": "cpu"}, "CUDA graphs need a CUDA device, and this run is on cpu"),
        ({"world_size": 2}, "DDP all-reduces gradients in hooks outside the graph"),
        ({"precision": "16-mixed"}, "precision 16-mixed scales the loss with a host-side check"),
        ({"gradient_clip_val": 1.0}, "trainer.gradient_clip_val clips gradients"),
        ({"accumulate_grad_batches": 4}, "trainer.accumulate_grad_batches steps the optimizer"),
        ({"lr_scheduler_configs": [object()]}, "an lr scheduler changes the learning rate"),
        (
            {"callbacks": [_PerStepHook()]},
            "the callback _PerStepHook runs Python in on_after_backward",
        ),
    ],
)
def test_where_a_graph_cannot_apply_the_run_steps_eagerly_and_says_why(
    settings: dict[str, Any], reason: str
) -> None:
    decision = decide(_trainer(**settings), _model())
    assert decision.mode == "eager"
    assert decision.reason.startswith(reason)


def test_a_module_without_the_step_interface_or_with_per_step_hooks_steps_eagerly() -> None:
    class Plain(pl.LightningModule):
        pass

    assert decide(_trainer(), Plain()).reason.startswith("Plain has no compute_loss")
    clipping = _ClippingModule({"_target_": "cnnlab.models.nets.net_1"}, [1, 28, 28], 10)
    assert decide(_trainer(), clipping).reason == (
        "_ClippingModule.on_before_optimizer_step runs Python in every step"
    )


def test_the_switch_is_off_by_default_and_refuses_a_bad_value(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    assert compose_cfg().cuda_graph is False
    assert not any(isinstance(c, CudaGraphStep) for c in net_speedups(compose_cfg()))
    steps = [
        c for c in net_speedups(compose_cfg(["cuda_graph=auto"])) if isinstance(c, CudaGraphStep)
    ]
    assert len(steps) == 1 and steps[0].setting == "auto"
    with pytest.raises(ConfigError, match=r"^cuda_graph='always' is invalid: use auto"):
        validate_train_config(compose_cfg(["cuda_graph=always"]))


def test_a_run_on_the_cpu_says_in_one_line_why_it_steps_eagerly(
    compose_cfg: Callable[..., DictConfig],
    synthetic_data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = compose_cfg(
        _run(synthetic_data_dir, "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")
    )
    cfg.cuda_graph = True
    with caplog.at_level(logging.INFO, logger="cnnlab.speed.cuda_graph"):
        summary = train(cfg)
    assert summary["status"] == "completed"
    lines = [r.getMessage() for r in caplog.records if r.name == "cnnlab.speed.cuda_graph"]
    assert lines == ["CUDA-graph step off: CUDA graphs need a CUDA device, and this run is on cpu"]


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_the_graph_steps_plumbing_trains_the_eager_steps_maths(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, optimizer: str
) -> None:
    """With each replay run eagerly (no GPU here), the graph step's manual optimization,
    warm-up, static buffers, last smaller batch and step counting give the eager run's
    losses, global steps and epoch metrics exactly."""
    overrides = _run(synthetic_data_dir, f"optimizer={optimizer}", "trainer.limit_val_batches=2")
    eager = LossRecorder()
    eager_summary = train(compose_cfg(overrides), [eager])

    graphed, step = (
        LossRecorder(),
        CudaGraphStep(True, warmup_steps=2, graph_type=EagerReplay, require_cuda=False),
    )
    cfg = compose_cfg(overrides)
    cfg.paths.output_dir += "-graph"
    graph_summary = train(cfg, [step, graphed])

    assert step.decision.mode == ("full" if optimizer == "adam" else "partial")
    # 540 training images in batches of 32: 16 full ones, then one of 28, stepped eagerly.
    assert (step.eager_steps, step.replays) == (2 + 1, 14)
    assert graphed.steps == eager.steps == list(range(1, 18))
    torch.testing.assert_close(graphed.losses, eager.losses, rtol=1e-6, atol=1e-7)
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert graph_summary["history"][0][key] == pytest.approx(
            eager_summary["history"][0][key], rel=1e-6
        )
    assert graph_summary["steps"] == eager_summary["steps"] == 17


def _fails_to_capture(step: Callable[[], Any]) -> Any:
    raise RuntimeError("operation not permitted when stream is capturing")


def test_a_failed_capture_says_so_once_and_the_run_trains_on_eagerly(
    compose_cfg: Callable[..., DictConfig],
    synthetic_data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    overrides = _run(
        synthetic_data_dir, "trainer.limit_train_batches=6", "trainer.limit_val_batches=1"
    )
    eager = LossRecorder()
    train(compose_cfg(overrides), [eager])
    cfg = compose_cfg(overrides)
    cfg.paths.output_dir += "-graph"
    step = CudaGraphStep(True, warmup_steps=2, graph_type=_fails_to_capture, require_cuda=False)
    recorder = LossRecorder()
    with caplog.at_level(logging.WARNING, logger="cnnlab.speed.cuda_graph"):
        assert train(cfg, [step, recorder])["status"] == "completed"
    warnings = [r.getMessage() for r in caplog.records if r.name == "cnnlab.speed.cuda_graph"]
    assert warnings == [
        "CUDA-graph step off: the capture failed (RuntimeError: operation not permitted when "
        "stream is capturing); the run steps eagerly"
    ]
    assert (step.eager_steps, step.replays) == (6, 0)
    assert recorder.steps == eager.steps == list(range(1, 7))
    torch.testing.assert_close(recorder.losses, eager.losses, rtol=1e-6, atol=1e-7)


def test_capturable_state_moves_a_resumed_step_count_to_the_parameters_device() -> None:
    param = torch.nn.Parameter(torch.ones(3, device="meta"))  # stands in for a GPU's
    optimizer = torch.optim.Adam([param])
    # As a checkpoint of an eager run leaves it: the step count a CPU scalar.
    optimizer.state[param]["step"] = torch.tensor(7.0, dtype=torch.float64)
    make_capturable(optimizer)
    assert optimizer.param_groups[0]["capturable"] is True
    step = optimizer.state[param]["step"]
    assert (step.device, step.dtype) == (param.device, torch.float32)


# -- on a GPU (make gpu-check) ----------------------------------------------------------------


def _gpu(data_dir: Path, *overrides: str) -> list[str]:
    return [*_run(data_dir, "trainer.accelerator=gpu", "trainer.deterministic=true"), *overrides]


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["adam", "adadelta", "adagrad"])
def test_on_a_gpu_the_graph_steps_first_50_losses_equal_the_eager_steps(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, optimizer: str
) -> None:
    losses = {}
    for value in ("false", "true"):
        cfg = compose_cfg(
            _gpu(
                synthetic_data_dir,
                f"optimizer={optimizer}",
                "trainer.max_epochs=4",
                "trainer.limit_val_batches=1",
            )
        )
        cfg.cuda_graph = value == "true"
        cfg.paths.output_dir += f"-{value}"
        recorder = LossRecorder()
        assert train(cfg, [recorder])["status"] == "completed"
        losses[value] = recorder.losses[:50]
    assert len(losses["true"]) == 50
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_on_a_gpu_three_epochs_with_the_graph_step_give_the_eager_metrics(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    summaries = {}
    for value in (False, True):
        cfg = compose_cfg(
            _gpu(synthetic_data_dir, "optimizer=adam", "trainer.max_epochs=3", "test=true")
        )
        cfg.cuda_graph = value
        cfg.paths.output_dir += f"-{value}"
        summaries[value] = train(cfg)
    graph, eager = summaries[True], summaries[False]
    assert graph["steps"] == eager["steps"]
    for epoch_graph, epoch_eager in zip(graph["history"], eager["history"], strict=True):
        for key in ("train/loss", "val/loss", "val/acc"):
            assert epoch_graph[key] == pytest.approx(epoch_eager[key], rel=1e-4, abs=1e-5)
    assert graph["test"]["test/acc"] == pytest.approx(eager["test"]["test/acc"], abs=1e-3)


@pytest.mark.gpu
def test_on_a_gpu_a_graph_run_resumed_from_last_ckpt_ends_as_the_uninterrupted_one(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path
) -> None:
    base = _gpu(synthetic_data_dir, "optimizer=adam", "cuda_graph=true")
    whole = compose_cfg([*base, "trainer.max_epochs=3"])
    whole.paths.output_dir += "-whole"
    uninterrupted = train(whole)
    first = compose_cfg([*base, "trainer.max_epochs=2"])
    first.paths.output_dir += "-first"
    part = train(first)
    resumed_cfg = compose_cfg(
        [*base, "trainer.max_epochs=3", f"ckpt_path={part['last_checkpoint']}"]
    )
    resumed_cfg.paths.output_dir += "-resumed"
    resumed = train(resumed_cfg)
    assert resumed["steps"] == uninterrupted["steps"]
    assert resumed["history"][-1]["val/loss"] == pytest.approx(
        uninterrupted["history"][-1]["val/loss"], rel=1e-4
    )
