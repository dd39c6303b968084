"""The private Lightning names in cnnlab.lightning_internals still mean what they meant."""

from typing import Any

import pytorch_lightning as pl
import torch

from cnnlab.lightning_internals import HOOK_NAME_ATTRIBUTE, count_optimizer_step, relaunches_script


class _Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)
        self.seen: list[Any] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append(getattr(self, HOOK_NAME_ATTRIBUTE, "<not set>"))
        return self.layer(batch[0]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_names_the_running_hook_in_the_attribute_the_trims_skip() -> None:
    model = _Recorder()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 2)))
    trainer = pl.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(model, data)
    assert model.seen == ["training_step", "training_step"], (
        f"Lightning no longer sets {HOOK_NAME_ATTRIBUTE} around hooks: update "
        "cnnlab.lightning_internals.HOOK_NAME_ATTRIBUTE"
    )


def test_ddp_relaunch_is_recognised_by_lightnings_launcher_class() -> None:
    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    single = pl.Trainer(accelerator="cpu", devices=1, logger=False)
    assert relaunches_script(ddp), "Lightning's script launcher class changed"
    assert not relaunches_script(single)


class _ConstantValidation(_Recorder):
    """A validation metric that never improves after the first epoch."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_m", 1.0)


def test_last_checkpoint_follows_every_epoch_when_the_best_stops_improving(tmp_path: Any) -> None:
    from cnnlab.training.checkpoint import ResumableModelCheckpoint

    checkpoint = ResumableModelCheckpoint(
        dirpath=tmp_path, monitor="val_m", mode="max", save_top_k=1, save_last=True
    )
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 2)))
    trainer = pl.Trainer(
        max_epochs=3, logger=False, callbacks=[checkpoint], enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(_ConstantValidation(), data, data)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2, "last.ckpt stopped following training: see save_last_if_stale"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]


class _StepsOutsideLightning(pl.LightningModule):
    """Manual optimization whose optimizer step runs outside `LightningOptimizer.step`, as a
    replayed CUDA graph's does."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        optimizer = self.optimizers()
        self.layer(batch[0]).sum().backward()
        optimizer.optimizer.step()  # the raw optimizer: Lightning does not see it
        count_optimizer_step(optimizer)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_step_counted_outside_lightnings_optimizer_advances_the_global_step() -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(3, 2)))
    trainer = pl.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(_StepsOutsideLightning(), data)
    assert trainer.global_step == 6, (
        "Lightning no longer counts manual steps through LightningOptimizer._on_before_step "
        "and _on_after_step: update cnnlab.lightning_internals.count_optimizer_step"
    )
