"""Every command cnnlab prints pastes as it is: the shell gives back the words, and Hydra reads
each path override as that path, whatever it holds (a sweep job's `1_optimizer=adam`)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from cnnlab.commands import make_command, path_override, python_command, quote_path_overrides
from cnnlab.results.report import rebuild_command
from cnnlab.training.interruption import resume_command

PATHS = [
    "outputs/train/multiruns/2026-01-01_10-00-00_1/1_optimizer=adam/checkpoints/last.ckpt",
    "/runs/0_optimizer=adam,model=net_2/it's here/last.ckpt",
    '/runs/a "quoted" $HOME `x` back\\slash!/last.ckpt',
]


def _hydra_value(override: str) -> object:
    return OverridesParser.create().parse_override(override).value()


@pytest.mark.parametrize("path", PATHS)
def test_a_printed_resume_command_pastes_back_to_its_checkpoint(path: str) -> None:
    words = shlex.split(resume_command(path))
    assert words[:2] == ["python", "src/train.py"]
    assert _hydra_value(words[-1]) == path


@pytest.mark.parametrize("path", PATHS)
def test_a_printed_evaluate_command_pastes_back_to_its_checkpoint(path: str) -> None:
    command = python_command("src/evaluate.py", path_override("ckpt_path", path))
    words = shlex.split(command)
    assert words[:2] == ["python", "src/evaluate.py"]
    assert _hydra_value(words[2]) == path


def test_a_plain_sweep_checkpoint_is_quoted_as_people_write_it() -> None:
    command = python_command("src/evaluate.py", path_override("ckpt_path", PATHS[0]))
    assert command == f"python src/evaluate.py \"ckpt_path='{PATHS[0]}'\""


@pytest.mark.parametrize("path", PATHS)
def test_the_reports_rebuild_and_make_commands_paste_back_to_the_folder(path: str) -> None:
    folder = Path(path).parent
    assert shlex.split(rebuild_command(folder)) == ["python", "src/report.py", str(folder)]
    assert shlex.split(make_command("report", DIR=folder)) == ["make", "report", f"DIR={folder}"]


@pytest.mark.parametrize("path", PATHS)
def test_a_path_typed_without_quotes_reaches_hydra_as_itself(path: str) -> None:
    quoted = quote_path_overrides(["optimizer=adam", f"ckpt_path={path}", f"+data.data_dir={path}"])
    assert quoted[0] == "optimizer=adam"
    assert _hydra_value(quoted[1]) == path and _hydra_value(quoted[2]) == path


def test_what_hydra_already_parses_is_left_as_typed() -> None:
    typed = ["ckpt_path=runs/a/last.ckpt", "ckpt_path='a=b.ckpt'", "ckpt_path=null", "x=a=b", "-m"]
    assert quote_path_overrides(typed) == typed
