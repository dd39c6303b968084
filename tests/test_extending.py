"""docs/extending.md, done exactly as it says: its files written into a scratch copy of the
project, its commands run there on synthetic data."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, metrics_of, only, run_cli

PAGE = ROOT / "docs" / "extending.md"
# "`path`:" on its own line, a blank line, then the fenced block holding that file.
FILE_BLOCK = re.compile(
    r"^`(?P<path>(?:src|conf)/[^`]+)`:\n\n```(?:python|yaml)\n(?P<body>.*?)^```", re.M | re.S
)
COMMAND_BLOCK = re.compile(r"^```bash\n(?P<body>.*?)^```", re.M | re.S)
# What the page leaves to its defaults and a test cannot afford: one epoch of a few batches,
# no checkpoint (the project's own smoke preset).
QUICK = ["debug=fast", "data.verify_md5=false"]  # the CIFAR-10 batches here are synthetic


def _sections() -> list[tuple[str, str]]:
    """(heading, text) of each `## ` section of the page."""
    parts = re.split(r"^## (.+)$", PAGE.read_text(), flags=re.M)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def _files() -> dict[str, str]:
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(PAGE.read_text())}


def _commands() -> list[tuple[str, list[str]]]:
    commands = []
    for heading, text in _sections():
        for block in COMMAND_BLOCK.finditer(text):
            for line in block["body"].splitlines():
                words = shlex.split(line)
                assert words[:2] == ["python", "src/train.py"], line
                commands.append((heading, words[2:]))
    return commands


def test_the_page_shows_one_python_file_at_most_and_one_yaml_per_addition() -> None:
    files = _files()
    for heading, text in _sections()[:-1]:  # all but "Where else to look"
        shown = [m["path"] for m in FILE_BLOCK.finditer(text)]
        python = [p for p in shown if p.endswith(".py")]
        yamls = [p for p in shown if p.endswith(".yaml")]
        assert len(python) <= 1 and len(yamls) == 1, (heading, shown)
        assert COMMAND_BLOCK.search(text), f"section {heading!r} shows no command"
    # net, dataset, callback, metric, transform: two files each; optimizer: a yaml alone
    assert len(files) == 11


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """src/ and conf/ of this checkout with the page's files added."""
    copy = tmp_path_factory.mktemp("project")
    for part in ("src", "conf"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("*.egg-info"))
    for path, body in _files().items():
        assert not (ROOT / path).exists(), f"{path} is part of the project: pick another name"
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        (copy / path).write_text(body)
    return copy


@pytest.fixture(scope="module")
def shapes_data(synthetic_data_dir: Path) -> Path:
    """The page's NumPy archives: 28x28 grey images of three classes, in `shapes/`."""
    rng = np.random.default_rng(0)
    for name, count in (("train.npz", 120), ("test.npz", 30)):
        labels = rng.integers(0, 3, size=count).astype(np.uint8)
        images = rng.integers(0, 255, size=(count, 28, 28, 1), dtype=np.uint8)
        (synthetic_data_dir / "shapes").mkdir(exist_ok=True)
        np.savez(synthetic_data_dir / "shapes" / name, images=images, labels=labels)
    return synthetic_data_dir


def _command_params() -> list[object]:
    """Every command; the first of each section in the fast suite, the others marked slow."""
    params, seen = [], set()
    for section, args in _commands():
        marks = [pytest.mark.slow] if section in seen else []
        seen.add(section)
        params.append(pytest.param(section, args, id=" ".join(args), marks=marks))
    return params


@pytest.mark.parametrize(("section", "args"), _command_params())
def test_every_command_of_the_page_runs(
    project_copy: Path, shapes_data: Path, tmp_path: Path, section: str, args: list[str]
) -> None:
    result = run_cli(
        "train.py",
        *args,
        *QUICK,
        f"paths.data_dir={shapes_data}",
        f"paths.log_dir={tmp_path}",
        cwd=project_copy,
        script_root=project_copy,
    )
    assert result.returncode == 0, f"{section}: {args}\n{result.stderr[-3000:]}"
    runs = sorted(tmp_path.glob("train/**/metrics.json"))
    assert runs, result.stderr[-2000:]
    for record_path in runs:
        record = metrics_of(record_path.parent)
        assert record["status"] == "completed", record.get("error")
        assert record["params"] > 0 and record["test"]["test/acc"] >= 0
    if "data=shapes" in args:
        assert metrics_of(runs[0].parent)["class_names"] == ["circle", "square", "triangle"]
    if "model=lenet" in args:
        width = next((a.split("=")[1] for a in args if a.startswith("model.net.width=")), "6")
        config = only("train/runs/*/.hydra/config.yaml", tmp_path).read_text()
        assert f"width: {width}" in config and "cnnlab.models.lenet.lenet" in config
    if "model=net_1_f1" in args:  # the page's metric, logged and kept in every epoch
        history = metrics_of(runs[0].parent)["history"]
        assert history and all(0 <= epoch["val/f1"] <= 1 for epoch in history)
    if "data=cifar10_flips" in args:
        config = only("train/runs/*/.hydra/config.yaml", tmp_path).read_text()
        assert "cnnlab.data.flips.random_flip" in config
    if "model.net.activation=silu" in args:  # a value cnnlab's own nets would refuse
        summary = only("train/runs/*/model_summary.txt", tmp_path).read_text()
        assert "(SiLU)" in summary and "(ReLU)" not in summary
