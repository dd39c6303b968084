"""Trust: files from elsewhere never run code, a full disk or a read-only dataset costs one
clear line and no wrong record, reports know what they miss, printed commands paste."""

from __future__ import annotations

import errno
import gzip
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from cnnlab.data import CIFAR10DataModule, MNISTDataModule
from cnnlab.errors import ConfigError, DatasetCorruptError
from cnnlab.training import interruption
from cnnlab.training.checkpoint import AtomicCheckpointIO
from cnnlab.training.checks import validate_train_config
from conftest import ROOT, metrics_of, only, run_cli, run_sweep

QUICK = [
    "debug=fast",
    "callbacks.model_checkpoint.enabled=true",
    "callbacks.progress_bar.enabled=false",
]


class _CreatesFile:
    """A pickle that creates `path` when it is loaded: what a hostile file would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


# -- files from elsewhere -----------------------------------------------------------------------


@pytest.mark.parametrize("script", ["evaluate.py", "train.py"])
def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(
    synthetic_data_dir: Path, tmp_path: Path, script: str
) -> None:
    marker = tmp_path / "it-ran"
    hostile = tmp_path / "shared.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "extra": _CreatesFile(marker)}, hostile)
    result = run_cli(
        script,
        f"ckpt_path={hostile}",
        f"paths.log_dir={tmp_path / 'out'}",
        f"paths.data_dir={synthetic_data_dir}",
        *(QUICK if script == "train.py" else []),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "holds objects other than tensors and plain values" in errors[0]
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_a_cifar_batch_that_would_run_code_is_refused_by_parser_and_diagnosis(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(synthetic_data_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "it-ran"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({"data": _CreatesFile(marker), "labels": [0]}))
    with pytest.raises(DatasetCorruptError) as info:
        CIFAR10DataModule(data_dir=tmp_path, verify_md5=False).setup()
    assert f"{batch} cannot be unpickled" in str(info.value)
    assert "only numpy arrays and plain values" in str(info.value)
    assert not marker.exists()


def test_cifar_files_under_official_names_must_match_their_published_md5(
    synthetic_data_dir: Path, tmp_path: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    assert compose_cfg(["data=cifar10"]).data.verify_md5 is True
    shutil.copytree(synthetic_data_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    with pytest.raises(DatasetCorruptError) as info:
        CIFAR10DataModule(data_dir=tmp_path).setup()
    message = str(info.value)
    assert "/cifar-10-batches-py/data_batch_1 is not the official file (md5 " in message
    assert "published c99cafc152244af753f735de768cd75f" in message
    assert message.endswith("if these are your own files, set data.verify_md5=false.")


def test_files_that_match_their_published_md5_are_read(
    synthetic_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchvision.datasets.utils import calculate_md5

    folder = shutil.copytree(
        synthetic_data_dir / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py"
    )
    published = {path.name: calculate_md5(path) for path in folder.iterdir()}
    monkeypatch.setattr(CIFAR10DataModule, "published_md5", published)
    dm = CIFAR10DataModule(data_dir=tmp_path)
    dm.setup()
    assert dm.describe()["sizes"]["test"] == 200


# -- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB filesystem of its own (tmpfs), where the system lets this process mount one."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_ends_the_run_with_one_line_and_no_broken_checkpoint(
    synthetic_data_dir: Path, tiny_disk: Path
) -> None:
    result = run_cli(
        "train.py", f"paths.data_dir={synthetic_data_dir}", f"paths.log_dir={tiny_disk}", *QUICK
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    run = only("train/runs/*", tiny_disk)
    assert f"{run} has " in errors[0] and "MiB free" in errors[0]
    assert "Traceback" not in result.stderr
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"
    assert not list(run.glob("checkpoints/*.ckpt")), "a partly written checkpoint was kept"
    record = metrics_of(run)
    assert record["status"] == "failed" and "No space left on device" in record["error"]


def test_a_checkpoint_that_cannot_be_written_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same guarantee where no small filesystem can be mounted: the rename fails."""

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    target = tmp_path / "checkpoints" / "epoch000-val_acc0.6044.ckpt"
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"weights": torch.zeros(3)}, target)
    assert list(target.parent.iterdir()) == []


# -- read-only data ------------------------------------------------------------------------------


def test_complete_files_in_a_folder_that_cannot_be_written_are_used_as_they_are(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(synthetic_data_dir / "MNIST", tmp_path / "MNIST")
    (tmp_path / ".cnnlab.lock").mkdir()  # the lock file cannot be opened: as on a read-only disk
    data = MNISTDataModule(data_dir=tmp_path)
    data.setup()
    assert len(data.splits["train"][1]) == 540


def test_a_folder_that_still_needs_unpacking_and_cannot_be_written_says_so(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (synthetic_data_dir / "MNIST" / "raw").iterdir():
        (raw / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    (tmp_path / ".cnnlab.lock").mkdir()
    with pytest.raises(Exception, match=r"cannot be written .* point data\.data_dir at a writable"):
        MNISTDataModule(data_dir=tmp_path).prepare_data()


# -- reports and commands ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_report_names_missing_and_unreadable_jobs_and_fails(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    result, sweep = run_sweep(synthetic_data_dir, tmp_path, "seed=1,2,3", "debug=fast")
    assert result.returncode == 0, result.stderr[-2000:]
    (sweep / "1_seed=2" / "metrics.json").write_text("{not json")
    shutil.rmtree(sweep / "2_seed=3")
    report = run_cli("report.py", str(sweep))
    assert report.returncode == 1
    assert (
        "incomplete: job 2 (seed=3) has no folder; 1_seed=2: its metrics.json cannot be read"
        in (report.stderr)
    )
    text = (sweep / "report.md").read_text()
    assert text.count("**Incomplete:**") == 1 and "| job 2 (seed=3) | missing |" in text
    assert "**optimizer" not in text and "**seed=1**" in text  # the best of what is complete


@pytest.mark.parametrize("folder", ["run ünïcödé", "it's, here"])
def test_the_printed_resume_command_pastes(tmp_path: Path, folder: str) -> None:
    checkpoint = tmp_path / folder / "checkpoints" / "last.ckpt"
    command = interruption.resume_command(str(checkpoint))
    words = shlex.split(command)  # what the shell passes on
    parsed = OverridesParser.create().parse_override(words[-1])
    assert parsed.key_or_group == "ckpt_path" and parsed.value() == str(checkpoint)
    pasted = subprocess.run(  # the pasted line, up to composing its config
        ["bash", "-c", f"{command} --cfg job"],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pasted.returncode == 0, pasted.stderr[-2000:]
    assert str(checkpoint) in pasted.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=-1", "seed=-1 is invalid: a seed must be an integer in 0..4294967295"),
        ("optimizer.lr=1e-300", "optimizer.lr=1e-300 is invalid: it rounds to 0 in float32"),
    ],
)
def test_values_that_would_fail_late_or_mislead_are_refused(
    compose_cfg: Callable[..., DictConfig], override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        validate_train_config(compose_cfg([override]))


def test_a_batch_larger_than_the_training_split_is_refused_before_a_step(
    synthetic_data_dir: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size=100000000 is larger than MNIST's"):
        MNISTDataModule(data_dir=synthetic_data_dir, batch_size=100_000_000).setup()


def test_a_yaml_mistake_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    adam = conf / "optimizer" / "adam.yaml"
    broken = len(adam.read_text().splitlines()) + 2  # the line after the unclosed list
    with open(adam, "a") as handle:
        handle.write("lr: [0.1\nbetas: 2\n")
    result = run_cli("train.py", "--config-path", str(conf), "optimizer=adam")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line
    assert result.stderr.startswith(f"Error: {adam}:{broken}:")


# -- files are data: nothing read from a file builds an object -----------------------------------


def _write_text_target(path: Path) -> dict[str, object]:
    """A config that, handed to Hydra's instantiate, writes `path`: what an attacker would save."""
    return {
        "_target_": "pathlib.Path.write_text",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(path)]}, "import os"],
    }


def _checkpoint(path: Path, data: object = None, net: object = None, **extra: object) -> Path:
    """A checkpoint as cnnlab writes it (an untrained mlp on 28x28 MNIST), with the given
    `cnnlab_config.data` and `hyper_parameters.net` in place of its own."""
    from cnnlab.models.classifier import ImageClassifier

    own_net = {"_target_": "cnnlab.models.nets.mlp", "hidden_sizes": [8], "activation": "relu"}
    model = ImageClassifier(net=own_net, sample_shape=[1, 28, 28], num_classes=10)
    data_cfg = {"_target_": "cnnlab.data.datasets.MNISTDataModule", "batch_size": 32}
    hparams = {**model.hparams, "net": own_net if net is None else net}
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": hparams,
        "cnnlab_config": {"data": data_cfg if data is None else data},
        **extra,
    }
    torch.save(checkpoint, path)
    return path


def _evaluate(ckpt: Path, data_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`src/evaluate.py` on `ckpt`, reading `data_dir`, writing under `tmp_path / "out"`."""
    return run_cli(
        "evaluate.py",
        f"ckpt_path={ckpt}",
        f"paths.log_dir={tmp_path / 'out'}",
        f"paths.data_dir={data_dir}",
    )


@pytest.mark.parametrize(
    "route",
    [
        "data",
        "net",
        # Also refused in-process by test_load_from_checkpoint_builds_only_the_projects_nets.
        pytest.param("net inside an allowed one", marks=pytest.mark.slow),
        pytest.param("net argument", marks=pytest.mark.slow),
    ],
)
def test_evaluating_a_checkpoint_whose_config_would_build_objects_runs_nothing(
    synthetic_data_dir: Path, tmp_path: Path, route: str
) -> None:
    marker = tmp_path / "zz.pth"
    evil = _write_text_target(marker)
    crafted = {
        "data": {"data": evil},
        "net": {"net": {"_target_": "builtins.dict", "p": evil}},
        "net inside an allowed one": {
            "net": {"_target_": "cnnlab.models.nets.mlp", "hidden_sizes": [8], "init": evil}
        },
        "net argument": {"net": {"_target_": "cnnlab.models.nets.mlp", "_args_": [evil]}},
    }[route]
    hostile = _checkpoint(tmp_path / "shared.ckpt", **crafted)  # type: ignore[arg-type]
    result = _evaluate(hostile, synthetic_data_dir, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "is not built" in errors[0] or "is refused" in errors[0], errors[0]
    assert not marker.exists()


def test_a_checkpoint_of_the_projects_own_configs_evaluates_on_this_machines_data(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    # The file names a data folder elsewhere: the one read is this machine's paths.data_dir.
    data = {"_target_": "cnnlab.data.datasets.MNISTDataModule", "data_dir": str(tmp_path / "x")}
    ckpt = _checkpoint(tmp_path / "own.ckpt", data=data)
    result = _evaluate(ckpt, synthetic_data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Test accuracy:" in result.stdout
    assert not (tmp_path / "x").exists()


def test_a_transform_named_in_a_checkpoint_is_never_built(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "it-ran"
    data = {
        "_target_": "cnnlab.data.datasets.MNISTDataModule",
        "train_transform": _write_text_target(marker),
        "eval_transform": _write_text_target(marker),
    }
    ckpt = _checkpoint(tmp_path / "flips.ckpt", data=data)
    result = _evaluate(ckpt, synthetic_data_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "it is not rebuilt from the file: pass eval_transform=" in result.stdout + result.stderr
    assert not marker.exists()


def test_evaluate_without_a_checkpoint_says_how_to_give_one(tmp_path: Path) -> None:
    result = run_cli("evaluate.py", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: ckpt_path is required: python src/evaluate.py "
        "ckpt_path=<run folder>/checkpoints/last.ckpt"
    )


def test_evaluate_into_an_outputs_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    ckpt = _checkpoint(tmp_path / "own.ckpt")
    result = run_cli("evaluate.py", f"ckpt_path={ckpt}", f"paths.log_dir={tmp_path / 'afile'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert "is a file, not a folder" in result.stderr


def test_load_from_checkpoint_builds_only_the_projects_nets(tmp_path: Path) -> None:
    from cnnlab.models.classifier import ImageClassifier

    marker = tmp_path / "it-ran"
    own = ImageClassifier.load_from_checkpoint(_checkpoint(tmp_path / "own.ckpt"))
    assert own.hparams["net"]["_target_"] == "cnnlab.models.nets.mlp"
    hostile = _checkpoint(tmp_path / "h.ckpt", net={"_target_": "builtins.dict", "p": 1})
    with pytest.raises(ConfigError, match=r"hyper_parameters\.net\._target_='builtins\.dict'"):
        ImageClassifier.load_from_checkpoint(hostile)
    nested = {"_target_": "cnnlab.models.nets.mlp", "init": _write_text_target(marker)}
    with pytest.raises(ConfigError, match=r"hyper_parameters\.net\.init holds dict"):
        ImageClassifier.load_from_checkpoint(_checkpoint(tmp_path / "n.ckpt", net=nested))
    assert not marker.exists()


def _bomb(path: Path, inflated: int) -> Path:
    """A real checkpoint whose tensor entry is stored deflated: small on disk, `inflated`
    bytes once read."""
    import zipfile

    plain = _checkpoint(path.with_suffix(".plain"))
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as bomb:
        for entry in source.infolist():
            payload = source.read(entry)
            if "/data/" in entry.filename and len(payload) > 1000:
                payload = bytes(inflated)
            bomb.writestr(entry.filename, payload, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_a_checkpoint_that_inflates_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from cnnlab.models.loading import read_checkpoint

    bomb = _bomb(tmp_path / "bomb.ckpt", 64 * 2**20)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ConfigError, match=r"holds compressed entries .* it is refused"):
        read_checkpoint(bomb, "")


def test_a_checkpoint_far_larger_than_its_model_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    from cnnlab.models.classifier import ImageClassifier
    from cnnlab.models.loading import read_checkpoint

    net = {"_target_": "cnnlab.models.nets.mlp", "hidden_sizes": [8], "activation": "relu"}
    model = ImageClassifier(net=net, sample_shape=[1, 28, 28], num_classes=10)
    big = _checkpoint(tmp_path / "big.ckpt", padding=torch.zeros(6 * 2**20))  # 24 MiB
    with pytest.raises(ConfigError, match=r"holds 24\.\d MiB of tensors, more than a checkpoint"):
        read_checkpoint(big, "", model=model)
    with pytest.raises(ConfigError, match=r"more than a checkpoint of this model can"):
        ImageClassifier.load_from_checkpoint(big)
    assert read_checkpoint(_checkpoint(tmp_path / "fits.ckpt"), "", model=model)["state_dict"]


# -- a sweep folder being resumed ----------------------------------------------------------------


def _sweep_folder(folder: Path, *task: str, hydra: tuple[str, ...] = ()) -> Path:
    """A sweep folder as Hydra leaves it, with the given saved overrides."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    saved = {"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN", *hydra], "task": task}}}
    (folder / "multirun.yaml").write_text(yaml.safe_dump(saved))
    return folder


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("+callbacks.evil={_target_:pathlib.Path.write_text,_args_:[x]}", "only plain values"),
        ("+callbacks.evil={a:1}", "only plain values"),
        ("model.net._target_=os.system", "only plain keys"),
        ("run_label=${oc.env:HOME}", "only plain values"),
        ("callbacks.model_checkpoint.dirpath=/etc", "names a file or folder to write to"),
        ("optimizer=evil", "optimizer has no option evil"),
    ],
)
def test_a_resumed_sweep_takes_no_saved_override_that_could_build_or_write(
    tmp_path: Path, override: str, problem: str
) -> None:
    from cnnlab.scale.sweeps import resume_arguments

    sweep = _sweep_folder(tmp_path / "sweep", "optimizer=adam,sgd", override)
    with pytest.raises(Exception, match="is not taken from a file") as info:
        resume_arguments(sweep, ROOT / "conf")
    assert problem in str(info.value) and "run its command again yourself" in str(info.value)


@pytest.mark.parametrize(
    "hydra_override",
    ["hydra.searchpath=[file:///tmp]", "hydra.launcher.setup=[rm]", "hydra.job.chdir=true"],
)
def test_a_resumed_sweep_takes_no_saved_hydra_setting_beyond_the_launchers_numbers(
    tmp_path: Path, hydra_override: str
) -> None:
    from cnnlab.scale.sweeps import resume_arguments

    sweep = _sweep_folder(tmp_path / "sweep", "seed=1,2", hydra=(hydra_override,))
    with pytest.raises(Exception, match="only the launcher's and sweeper's numbers"):
        resume_arguments(sweep, ROOT / "conf")


def test_a_resumed_sweep_takes_group_choices_and_plain_values(tmp_path: Path) -> None:
    from cnnlab.scale.sweeps import resume_arguments

    task = (
        "optimizer=adadelta,adam,adagrad",
        "head=A",
        "trainer.max_epochs=3",
        "seed=range(1,3)",
        "run_label='model A'",
        f"paths.data_dir={tmp_path}",
        "model.net.hidden_sizes=[40,40]",
    )
    hydra = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    sweep = _sweep_folder(tmp_path / "sweep", *task, hydra=hydra)
    arguments = resume_arguments(sweep, ROOT / "conf")
    assert arguments[:3] == ["-m", *hydra] and arguments[3:-1] == list(task)
    assert arguments[-1].startswith("hydra.sweep.dir=")


def test_a_resume_with_a_crafted_override_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "it-ran"
    evil = f"+callbacks.evil={{_target_:pathlib.Path.write_text,self:{marker},data:x}}"
    sweep = _sweep_folder(tmp_path / "sweep", "seed=1,2", evil)
    result = run_cli("train.py", "--resume", str(sweep))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is not taken from a file" in result.stderr
    assert not marker.exists()


def test_a_sweep_folder_in_use_is_not_resumed_a_second_time(
    synthetic_data_dir: Path, tmp_path: Path
) -> None:
    sweep = _sweep_folder(
        tmp_path / "sweep", "seed=1,2", "debug=fast", f"paths.data_dir={synthetic_data_dir}"
    )
    job = sweep / "0_seed=1"
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "last.ckpt").write_bytes(b"the first resume's")
    holder = subprocess.Popen(  # the first resume, holding the folder
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from cnnlab.scale.locks import "
            "hold_folder\nwith hold_folder(Path(sys.argv[1]), 'test'):\n print('held', "
            "flush=True); time.sleep(60)",
            str(sweep),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = run_cli("train.py", "--resume", str(sweep))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: {sweep.resolve()} is in use by process {holder.pid} (test): wait for it to "
        f"end, or stop it (kill {holder.pid}), then run this again"
    ], result.stderr[-2000:]
    assert (job / "checkpoints" / "last.ckpt").read_bytes() == b"the first resume's"
    assert not (job / "metrics.json").exists()
