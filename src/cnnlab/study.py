"""The assignment's whole study in one command: its three parts as sweeps, a check of their
datasets before any training, and one report that follows the assignment's figures
(`cnnlab.results.study_report`)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from hydra.utils import instantiate

from cnnlab.commands import path_override, python_command
from cnnlab.errors import CnnlabError
from cnnlab.results.study_report import Part, build_study_report


@dataclass(frozen=True)
class PartPlan:
    name: str
    title: str
    overrides: tuple[str, ...]
    takes_data: bool  # the user's `data=...` applies (the MNIST parts)


PLAN = (
    PartPlan(
        "mnist",
        "net_1 and net_2 on MNIST with Adadelta, Adam and Adagrad (Keras' defaults)",
        (
            "experiment=assignment_mnist",
            "model=net_1,net_2",
            "optimizer=adadelta_keras,adam_keras,adagrad_keras",
        ),
        True,
    ),
    PartPlan(
        "cifar10",
        "net_1 on CIFAR-10 (batch 128, validation 0.2)",
        ("experiment=assignment_cifar10",),
        False,
    ),
    PartPlan(
        "models", "models A-F (MLPs, early stopping)", ("experiment=assignment_models",), True
    ),
)


def _is_data_choice(arg: str) -> bool:
    return arg.lstrip("+~").split("=", 1)[0] == "data"


def part_overrides(plan: PartPlan, args: Sequence[str]) -> list[str]:
    """The part's own overrides, then the user's: `data=...` only where the part takes it."""
    return [*plan.overrides, *(a for a in args if plan.takes_data or not _is_data_choice(a))]


def chosen(names: Sequence[str] | None) -> tuple[PartPlan, ...]:
    """The parts named (all of them for None), in the study's order."""
    known = {plan.name for plan in PLAN}
    if names and (unknown := set(names) - known):
        raise CnnlabError(
            f"--parts: no part {', '.join(sorted(unknown))}; "
            f"the parts are {', '.join(p.name for p in PLAN)}"
        )
    return tuple(plan for plan in PLAN if not names or plan.name in names)


def missing_datasets(args: Sequence[str], plans: Sequence[PartPlan] = PLAN) -> list[str]:
    """Each dataset the study cannot get (download included), with its message; needs an
    initialised Hydra (`hydra.initialize`), as `src/study.py` does."""
    problems: dict[str, str] = {}
    for plan in plans:
        fixed = [o for o in part_overrides(plan, args) if "," not in o.split("=", 1)[-1]]
        data = instantiate(compose(config_name="train", overrides=fixed).data)
        if data.name in problems:
            continue
        try:
            data.prepare_data()
        except CnnlabError as err:
            problems[data.name] = str(err)
    return list(problems.values())  # each message names its dataset


def run_study(
    train_script: Path, folder: Path, args: Sequence[str], plans: Sequence[PartPlan] = PLAN
) -> tuple[Path, list[str]]:
    """Run the parts one after another into `folder`, then write its report; returns the
    report and the parts that did not end cleanly. A part not run keeps an empty section."""
    folder.mkdir(parents=True, exist_ok=True)
    parts, failed = {}, []
    for plan in PLAN:
        overrides = part_overrides(plan, args)
        part_dir = folder / plan.name
        command = python_command("src/train.py", "-m", *overrides)
        parts[plan.name] = Part(plan.name, plan.title, command, part_dir)
        if plan not in plans:
            continue
        print(f"== {plan.title}: {command}", flush=True)
        sweep = [sys.executable, str(train_script), "-m", *overrides]
        done = subprocess.run([*sweep, path_override("hydra.sweep.dir", part_dir)])
        if done.returncode != 0:
            failed.append(f"{plan.name} (exit code {done.returncode})")
    report = build_study_report(folder, parts["mnist"], parts["cifar10"], parts["models"])
    return report, failed
