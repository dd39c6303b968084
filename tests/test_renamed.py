"""Names that changed in this release are refused with one line naming the new one."""

import importlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cnnlab.renamed import (
    RENAMED_EXPERIMENTS,
    RENAMED_KEYS,
    RENAMED_MODULES,
    renamed_experiment_message,
    renamed_key_message,
)
from conftest import CONF_DIR, ROOT, run_cli


@pytest.mark.parametrize(
    "arg",
    [
        "experiment=seed_mnist",
        "+experiment=seed_mnist",
        "experiment=assignment_cifar10,seed_mnist",
        "experiment=choice(assignment_models,seed_mnist)",
    ],
)
def test_an_old_experiment_name_gets_its_new_one(arg: str) -> None:
    message = renamed_experiment_message(["-m", "optimizer=adam", arg])
    assert message == "experiment=seed_mnist is now experiment=assignment_mnist"


@pytest.mark.parametrize(
    "argv", [["experiment=assignment_mnist"], ["seed=1", "optimizer=adam"], ["-m", "seed=1,2"]]
)
def test_current_names_and_rng_seeds_pass(argv: list[str]) -> None:
    assert renamed_experiment_message(argv) is None


def test_every_new_experiment_name_exists_and_no_old_one_does() -> None:
    presets = {path.stem for path in (CONF_DIR / "experiment").glob("*.yaml")}
    assert set(RENAMED_EXPERIMENTS.values()) <= presets
    assert not set(RENAMED_EXPERIMENTS) & presets


def test_train_refuses_an_old_experiment_name_in_one_line(tmp_path: Path) -> None:
    result = run_cli("train.py", "experiment=seed_models", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr == "Error: experiment=seed_models is now experiment=assignment_models\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_seed_points_to_make_assignment() -> None:
    outer_make = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")  # when the suite runs under make test
    env = {k: v for k, v in os.environ.items() if k not in outer_make}
    result = subprocess.run(
        ["make", "seed"], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.endswith("*** make seed is now make assignment.  Stop.\n")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED_MODULES.items()))
def test_an_old_module_names_its_new_home(old: str, new: str) -> None:
    with pytest.raises(ImportError, match=f"^{old} is now {new}: from {new} import ") as raised:
        importlib.import_module(old)
    assert raised.value.name == old
    importlib.import_module(new)


def test_a_moved_key_gets_its_new_name_and_the_new_keys_exist() -> None:
    assert (
        renamed_key_message(["optimizer=adam", "model.channels_last=true"])
        == "model.channels_last is now channels_last: channels_last=true"
    )
    assert renamed_key_message(["channels_last=true", "model.net.init=keras"]) is None
    train_yaml = (CONF_DIR / "train.yaml").read_text()
    for old, new in RENAMED_KEYS.items():
        assert f"\n{new}:" in train_yaml
        assert f"\n{old.split('.')[-1]}:" not in (CONF_DIR / "model" / "net_1.yaml").read_text()
