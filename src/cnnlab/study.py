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
    title: str  # `{data}`: the dataset the part trains on
    overrides: tuple[str, ...]
    takes_data: bool  # the user's `data=...` applies (the MNIST parts)
    data: str  # the part's own data choice, used unless it takes the user's


PLAN = (
    PartPlan(
        "mnist",
        "net_1 and net_2 on {data} with Adadelta, Adam and Adagrad (Keras' defaults)",
        (
            "experiment=assignment_mnist",
            "model=net_1,net_2",
            "optimizer=adadelta_keras,adam_keras,adagrad_keras",
        ),
        True,
        "mnist",
    ),
    PartPlan(
        "cifar10",
        "net_1 on {data} (batch 128, validation 0.2)",
        ("experiment=assignment_cifar10",),
        False,
        "cifar10",
    ),
    PartPlan(
        "models",
        "models A-F on {data} (MLPs, early stopping)",
        ("experiment=assignment_models",),
        True,
        "mnist",
    ),
)

# The datasets by their `data=` option, as the titles and messages name them.
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def _is_data_choice(arg: str) -> bool:
    return arg.lstrip("+~").split("=", 1)[0] == "data"


def data_choice(args: Sequence[str]) -> str | None:
    """The user's `data=...` option, None when the command names none."""
    choices = [a.split("=", 1)[1] for a in args if "=" in a and _is_data_choice(a)]
    return choices[-1] if choices else None


def part_title(plan: PartPlan, args: Sequence[str]) -> str:
    """The part's title, naming the dataset it trains on (Fashion-MNIST with
    `data=fashion_mnist`, not MNIST)."""
    choice = (data_choice(args) if plan.takes_data else None) or plan.data
    return plan.title.format(data=DATASET_NAMES.get(choice, choice))


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


def _data_problem(overrides: Sequence[str]) -> tuple[str, str | None]:
    """The dataset these overrides train on, and why it cannot be had (None: it can)."""
    fixed = [o for o in overrides if "," not in o.split("=", 1)[-1]]
    data = instantiate(compose(config_name="train", overrides=fixed).data)
    try:
        data.prepare_data()
    except CnnlabError as err:
        # The study says itself which parts run with the data at hand (data= applies to
        # some parts only), so the dataset's own hint of another dataset is left out.
        hint = data.offline_alternative()
        return data.name, (str(err).replace(hint, "") if hint else str(err))
    return data.name, None


def missing_datasets(
    args: Sequence[str], plans: Sequence[PartPlan] = PLAN
) -> dict[str, tuple[str, str]]:
    """For each part that cannot get its dataset (download included): that dataset's name
    and message; needs an initialised Hydra (`hydra.initialize`), as `src/study.py` does."""
    problems: dict[str, tuple[str, str]] = {}
    seen: dict[str, tuple[str, str | None]] = {}
    for plan in plans:
        key = (data_choice(args) if plan.takes_data else None) or plan.data
        if key not in seen:
            seen[key] = _data_problem(part_overrides(plan, args))
        dataset, problem = seen[key]
        if problem is not None:
            problems[plan.name] = (dataset, problem)
    return problems


def fashion_mnist_at_hand(args: Sequence[str]) -> bool:
    """Whether Fashion-MNIST's files are on disk, in `data.data_dir` or a system folder
    (Debian's package), under any name the dataset accepts. Nothing is downloaded, unpacked
    or written for this check."""
    overrides = [a for a in args if not _is_data_choice(a)] + ["data=fashion_mnist"]
    fixed = [o for o in overrides if "," not in o.split("=", 1)[-1]]
    data = instantiate(compose(config_name="train", overrides=fixed).data)
    folders = [data.raw_dir, *data.system_dirs]
    return all(
        any(
            (folder / spelling).is_file()
            for folder in folders
            for spelling in data.file_spellings(name)
        )
        for name in data.expected_files()
    )


def refusal(
    problems: dict[str, tuple[str, str]],
    plans: Sequence[PartPlan],
    args: Sequence[str],
    extra: Sequence[str] = (),
    fashion_at_hand: bool = False,
) -> str:
    """Why the study cannot start (each missing dataset's message once), then the command
    that runs the parts whose data is at hand: `--parts ...`, plus `data=fashion_mnist` for
    the MNIST parts when MNIST is missing, no dataset was chosen and Fashion-MNIST is on
    disk. `extra`: the command's other options (`--out DIR`), kept in the command shown."""
    messages = {dataset: message.strip() for dataset, message in problems.values()}
    lines = [
        f"the study cannot start: it lacks these datasets: {' and '.join(messages)}.",
        *("  " + message.replace("\n", "\n  ") for message in messages.values()),
    ]
    runnable = [p.name for p in plans if p.name not in problems]
    args = list(args)
    swapped = [p.name for p in plans if p.takes_data and problems.get(p.name, ("",))[0] == "MNIST"]
    if swapped and fashion_at_hand and data_choice(args) is None:
        runnable = [p.name for p in plans if p.name in runnable or p.name in swapped]
        args.append("data=fashion_mnist")
    if runnable:
        command = python_command("src/study.py", "--parts", ",".join(runnable), *args, *extra)
        lines.append(f"With the data at hand, run: {command}")
    else:
        lines.append("No part of the study has its data here: get the files as said above.")
    return "\n".join(lines)


def run_study(
    train_script: Path, folder: Path, args: Sequence[str], plans: Sequence[PartPlan] = PLAN
) -> tuple[Path, list[str]]:
    """Run the parts one after another into `folder`, then write its report; returns the
    report and the parts that did not end cleanly. A part left out is marked skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    parts, failed = {}, []
    for plan in PLAN:
        overrides = part_overrides(plan, args)
        part_dir = folder / plan.name
        command = python_command("src/train.py", "-m", *overrides)
        title = part_title(plan, args)
        skipped = None if plan in plans else "not in --parts"
        parts[plan.name] = Part(plan.name, title, command, part_dir, skipped)
        if skipped:
            continue
        print(f"== {title}: {command}", flush=True)
        sweep = [sys.executable, str(train_script), "-m", *overrides]
        done = subprocess.run([*sweep, path_override("hydra.sweep.dir", part_dir)])
        if done.returncode != 0:
            failed.append(f"{plan.name} (exit code {done.returncode})")
    report = build_study_report(folder, parts["mnist"], parts["cifar10"], parts["models"])
    return report, failed
