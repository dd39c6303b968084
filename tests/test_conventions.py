"""The conventions of lightning-hydra-template that users reach for: tags, extras (the config
tree, silenced warnings), the debug modes, the optional loggers, callbacks=none, trainer=mps
and the git-ignored conf/local/."""

import importlib.util
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.profilers import SimpleProfiler

from cnnlab.errors import ConfigError
from cnnlab.results.markdown import runs_table
from cnnlab.results.record import RunRecord, read_json
from cnnlab.results.runs import Run
from cnnlab.training import run as run_module
from cnnlab.training.checks import check_optional_loggers, validate_train_config
from cnnlab.training.dashboard import dashboard_hparams
from cnnlab.training.entry import as_user_error, hydra_choices
from cnnlab.training.extras import apply_extras, config_tree, run_tags
from cnnlab.training.run import build, instantiate_callbacks, instantiate_loggers, train
from conftest import CONF_DIR, ROOT, metrics_of

SMALL = ["data.batch_size=8", "data.eval_batch_size=16"]


# -- tags ---------------------------------------------------------------------------------------
def test_tags_are_a_list_of_words(compose_cfg: Callable[..., DictConfig]) -> None:
    assert run_tags(compose_cfg()) == ["dev"]
    assert run_tags(compose_cfg(["tags=[baseline,keras]"])) == ["baseline", "keras"]
    assert run_tags(compose_cfg(["tags=solo"])) == ["solo"]
    assert run_tags(compose_cfg(["tags=null"])) == []
    with pytest.raises(ConfigError, match=r"tags=.*give a list of words"):
        validate_train_config(compose_cfg(["tags=[{a: 1}]"]))


def test_tags_reach_the_record_the_loggers_the_dashboard_and_the_report(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    record = RunRecord(tmp_path / "run")
    record.started({"optimizer": "adam"}, [], tags=["baseline", "keras"])
    assert read_json(record.path)["tags"] == ["baseline", "keras"]

    cfg = compose_cfg(["logger=many", "tags=[baseline,keras]"])
    loggers = instantiate_loggers(cfg.logger, run_tags(cfg))
    tensorboard = next(x for x in loggers if isinstance(x, TensorBoardLogger))
    csv = next(x for x in loggers if isinstance(x, CSVLogger))
    assert tensorboard.hparams["tags"] == ["baseline", "keras"]  # its hparams.yaml
    assert csv.experiment.hparams["tags"] == ["baseline", "keras"]
    assert dashboard_hparams(cfg, {})["tags"] == "baseline,keras"  # HPARAMS takes text

    run = Run(tmp_path / "run", read_json(record.path), confusion={}, overrides={}, label="run")
    header, _, row = runs_table([run], tmp_path).splitlines()
    assert header.endswith("| tags |") and row.endswith("| baseline, keras |")


# -- extras -------------------------------------------------------------------------------------
def test_the_config_tree_shows_the_groups_and_what_the_command_changed() -> None:
    tree = config_tree(
        {"data": "mnist", "trainer": "default", "head": None, "hydra": "default"},
        ["trainer.max_epochs=2", "+trainer.max_time=1h", "seed=7", "data=mnist", "x=\x1b[2Jy"],
        "Config",
    )
    assert tree == (
        "Config\n"
        "|-- data: mnist\n"
        "|-- trainer: default\n"
        "|   |-- max_epochs=2\n"
        "|   `-- max_time=1h\n"
        "|-- seed=7\n"
        "`-- x=[2Jy\n"  # a terminal's escape is shown as text
    )


def _with_hydra(overrides: list[str], job_num: int | None = None) -> DictConfig:
    """A composed config with Hydra's own section set, as in a run (job_num: a sweep job)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/runs/0_optimizer=adam"
        if job_num is not None:
            cfg.hydra.mode = "MULTIRUN"
            cfg.hydra.job.num = job_num
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_print_config_prints_once_per_run_and_once_per_sweep(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        apply_extras(_with_hydra(["optimizer=adam", "trainer.max_epochs=2"]))
        single = capsys.readouterr().out
        apply_extras(_with_hydra(["optimizer=adam"], job_num=0))
        first_job = capsys.readouterr().out
        apply_extras(_with_hydra(["optimizer=adam"], job_num=1))
        apply_extras(_with_hydra(["optimizer=adam", "extras.print_config=false"]))
        quiet = capsys.readouterr().out
    finally:
        HydraConfig.instance().cfg = None
    assert single.startswith("Config (all of it: /runs/0_optimizer=adam/.hydra/config.yaml)\n")
    assert "|-- optimizer: adam\n" in single and "|   `-- max_epochs=2\n" in single
    assert "local:" not in single  # no conf/local/default.yaml here: nothing to show
    assert first_job.startswith("Config of the sweep's first job, 0_optimizer=adam")
    assert quiet == ""


def test_ignore_warnings_silences_python_warnings(compose_cfg: Callable[..., DictConfig]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_extras(compose_cfg())
        warnings.warn("still shown", UserWarning, stacklevel=1)
        apply_extras(compose_cfg(["extras.ignore_warnings=true"]))
        warnings.warn("silenced", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["still shown"]


# -- debug modes, callbacks=none ----------------------------------------------------------------
def test_the_debug_modes_set_what_they_say(compose_cfg: Callable[..., DictConfig]) -> None:
    trainers = {}
    for mode in ("overfit", "limit", "profiler", "fdr"):
        cfg = compose_cfg([f"debug={mode}"])
        validate_train_config(cfg)  # none contradicts cnnlab's checks
        callbacks = instantiate_callbacks(cfg.callbacks)
        trainers[mode] = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert trainers["overfit"].overfit_batches == 3 and trainers["overfit"].max_epochs == 20
    limit = trainers["limit"]
    assert (limit.limit_train_batches, limit.limit_val_batches) == (0.05, 0.25)
    assert isinstance(trainers["profiler"].profiler, SimpleProfiler)
    assert trainers["fdr"].fast_dev_run is True and trainers["fdr"].checkpoint_callback is None


@pytest.fixture
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's figures take longer than these tiny runs; what they show is tested elsewhere."""
    monkeypatch.setattr(run_module, "draw_run_figures", lambda *args, **kwargs: {})


def test_overfit_with_callbacks_none_repeats_its_batch_and_still_records_and_tests(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, no_figures: None
) -> None:
    cfg = compose_cfg(
        [
            *("debug=overfit", "trainer.overfit_batches=1", "trainer.max_epochs=4"),
            *("optimizer=adam", "callbacks=none", "logger=csv"),
            *(f"paths.data_dir={synthetic_data_dir}", *SMALL),
        ]
    )
    trainer = build(cfg).trainer
    assert trainer.checkpoint_callback is None and trainer.progress_bar_callback is None
    summary = train(cfg)
    losses = [epoch["train/loss"] for epoch in summary["history"]]
    assert summary["status"] == "completed" and summary["steps"] == 4  # one batch per epoch
    assert losses == sorted(losses, reverse=True) and losses[-1] < 0.75 * losses[0]  # the same
    record = metrics_of(Path(cfg.paths.output_dir))
    assert record["test"]["checkpoint"] == "final weights" and "test/acc" in record["test"]


def test_fast_dev_run_tests_the_final_weights_and_records_the_run(
    compose_cfg: Callable[..., DictConfig], synthetic_data_dir: Path, no_figures: None
) -> None:
    cfg = compose_cfg(["debug=fdr", "logger=csv", f"paths.data_dir={synthetic_data_dir}", *SMALL])
    train(cfg)
    record = metrics_of(Path(cfg.paths.output_dir))
    assert record["status"] == "completed" and record["steps"] == 1
    assert record["test"]["checkpoint"] == "final weights" and "test/acc" in record["test"]


# -- trainer=mps --------------------------------------------------------------------------------
@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_trainer_mps_without_mps_is_one_line_as_trainer_gpu_without_a_gpu(
    compose_cfg: Callable[..., DictConfig],
) -> None:
    cfg = compose_cfg(["trainer=mps"])
    assert (cfg.trainer.accelerator, cfg.trainer.devices) == ("mps", 1)
    with pytest.raises(Exception) as info:
        instantiate(cfg.trainer)
    problem = as_user_error(info.value)
    assert isinstance(problem, ConfigError) and "MPS" in str(problem)
    assert "\n" not in str(problem) and "['cpu']" in str(problem)


# -- optional loggers ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("logger", "extra", "name_key"), [("mlflow", "mlflow", "run_name"), ("wandb", "wandb", "name")]
)
def test_an_optional_logger_without_its_package_names_the_extra(
    compose_cfg: Callable[..., DictConfig], logger: str, extra: str, name_key: str
) -> None:
    cfg = compose_cfg([f"logger={logger}"])
    assert cfg.logger[logger][name_key] == "run"  # the run folder's name (tmp_path / "run")
    assert compose_cfg([f"logger={logger}", "run_label=mine"]).logger[logger][name_key] == "mine"
    with pytest.raises(ConfigError) as info:
        check_optional_loggers(cfg, installed=lambda module: False)
    assert f'pip install -e ".[{extra}]"' in str(info.value) and "\n" not in str(info.value)
    check_optional_loggers(cfg, installed=lambda module: True)
    if importlib.util.find_spec(extra) is None:  # as in CI: the whole check says the same
        with pytest.raises(ConfigError, match=rf'pip install -e "\.\[{extra}\]"'):
            validate_train_config(cfg)


def test_mlflow_logs_into_a_local_store(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    cfg = compose_cfg(["logger=mlflow", "tags=[baseline]", "run_label=mine"])
    (tmp_path / "outputs").mkdir()  # a run's log_dir exists: Hydra made its folder in it
    (logger,) = instantiate_loggers(cfg.logger, run_tags(cfg))
    logger.log_metrics({"val/acc": 0.5}, step=0)
    logger.finalize("success")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    run = client.get_run(logger.run_id)
    assert run.data.metrics["val/acc"] == 0.5 and run.data.params["tags"] == "['baseline']"
    assert run.info.run_name == "mine"


def test_wandb_logs_offline_into_the_run_folder(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    pytest.importorskip("wandb")
    cfg = compose_cfg(["logger=wandb", "tags=[baseline]"])
    (logger,) = instantiate_loggers(cfg.logger, run_tags(cfg))
    logger.log_metrics({"val/acc": 0.5}, step=0)
    assert logger.experiment.config["tags"] == ["baseline"]
    assert list(logger.experiment.tags) == ["baseline"]
    logger.experiment.finish()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


# -- conf/local ---------------------------------------------------------------------------------
def test_a_local_config_is_picked_up_and_git_ignores_it(tmp_path: Path) -> None:
    conf = shutil.copytree(CONF_DIR, tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    (conf / "local" / "default.yaml").write_text(
        "# @package _global_\nseed: 7\ntrainer:\n  max_epochs: 3\n"
    )
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        mine = compose("train", overrides=["trainer.max_epochs=5"], return_hydra_config=True)
        fast = compose("train", overrides=["debug=fast"])
        evaluation = compose("eval", overrides=["ckpt_path=x"])
    assert (mine.seed, mine.trainer.max_epochs) == (7, 5)  # the command line wins
    assert fast.trainer.max_epochs == 1  # and so does a debug mode
    assert evaluation.get("seed") == 7
    try:
        HydraConfig.instance().set_config(mine)
        assert hydra_choices()["choices"]["local"] == "default"
    finally:
        HydraConfig.instance().cfg = None

    def ignored(path: str) -> bool:
        check = ["git", "check-ignore", "-q", "--no-index", path]
        return subprocess.run(check, cwd=ROOT, check=False).returncode == 0

    assert ignored("conf/local/default.yaml") and not ignored("conf/local/.gitkeep")
