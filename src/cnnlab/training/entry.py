"""How an entry point runs a task and how the task ends: its recorded status and exit code.

Statuses: running, completed, failed, diverged, interrupted (`cnnlab.results.record`). A
failed job of a sweep is recorded in its own folder and the sweep goes on; the sweep exits
non-zero at the end (`cnnlab.results.sweep_summary.SweepSummary`).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.errors import CnnlabError, ConfigError, Interrupted, RunFolderVanished
from cnnlab.process_setup import set_up_process
from cnnlab.results.record import RunRecord
from cnnlab.scale.sweeps import clear_attempt, fail_fast_marker, job_state, stop_marker, swept_keys
from cnnlab.training.interruption import stop_on_signals
from cnnlab.training.known_keys import composition_problem

log = logging.getLogger(__name__)


def config_syntax_problem(conf: Path, argv: Sequence[str]) -> str | None:
    """A YAML syntax error in the config files (`conf/`, or a `--config-path`/`--config-dir`
    given on the command line) as `file:line:column: problem`; None when all parse.

    Checked before Hydra starts, which would report a one-line mistake with a long traceback.
    """
    folders = [conf]
    for flag, value in itertools.pairwise(argv):
        if flag in ("--config-path", "-cp", "--config-dir", "-cd"):
            folders.append(Path(value))
    for path in sorted(p for folder in folders for p in folder.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            return f"{where}: {err.problem or err}. Fix the YAML there."
        except (yaml.YAMLError, OSError) as err:
            return f"{path}: {err}"
    return None


# Hydra's flags that take a value, and those after which it creates no run folder.
_VALUE_FLAGS = {
    "--config-path": "path", "-cp": "path", "--config-name": "name", "-cn": "name",
    "--config-dir": "dir", "-cd": "dir",
}  # fmt: skip
_NO_RUN_FLAGS = (
    "--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
    "--shell-completion", "-sc", "--experimental-rerun",
)  # fmt: skip


def launch_problem(conf: Path, argv: Sequence[str], config_name: str = "train") -> str | None:
    """What would stop the command before any of cnnlab's code runs, as one line; None if
    nothing. Checked before Hydra starts, which reports these with a long traceback:

    * a value that cannot be resolved (`run_label=${oc.env:UNSET}`), anywhere in the config;
    * a run or sweep folder that cannot be created: `paths.log_dir` read-only, or a file.

    The config is composed as Hydra will compose it (a sweep: its first job's values); when
    that fails, Hydra's own message follows as before.
    """
    args = list(argv[1:])
    if full_error_requested() or any(arg.split("=", 1)[0] in _NO_RUN_FLAGS for arg in args):
        return None  # HYDRA_FULL_ERROR=1 asks for Hydra's own traceback
    flags: dict[str, str] = {}
    overrides: list[str] = []
    multirun = False
    words = iter(args)
    for arg in words:
        name, equals, value = arg.partition("=")
        if arg in ("-m", "--multirun"):
            multirun = True
        elif name in _VALUE_FLAGS:
            flags[_VALUE_FLAGS[name]] = value if equals else next(words, "")
        elif not arg.startswith("-"):
            overrides.append(arg)
    if "dir" in flags:  # --config-dir adds a search path: left to Hydra
        return None
    config_dir = conf
    if "path" in flags:  # as Hydra reads it: relative to the script
        given = Path(flags["path"])
        config_dir = given if given.is_absolute() else Path(argv[0]).resolve().parent / given
    name = flags.get("name", config_name)
    try:
        cfg = _compose(config_dir, name, _first_job(overrides))
    except Exception as err:  # an unknown option or key: the names meant, or Hydra's own words
        return _composition_problem(err, config_dir, name, overrides)
    try:
        return _interpolation_problem(cfg) or _output_folder_problem(cfg, overrides, multirun)
    finally:
        HydraConfig.instance().cfg = None  # Hydra sets its own when it starts


def _composition_problem(
    err: Exception, config_dir: Path, config_name: str, overrides: Sequence[str]
) -> str | None:
    """An unknown key or option as one line naming the closest valid ones (None: Hydra's
    own message stands)."""
    try:
        first = _first_job(overrides)
        return composition_problem(err, first, lambda o: _compose(config_dir, config_name, o))
    except Exception:
        return None
    finally:
        HydraConfig.instance().cfg = None


def _first_job(overrides: Sequence[str]) -> list[str]:
    """The overrides of a sweep's first job (`a=1,2` -> `a=1`); searched ranges are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    first: list[str] = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            first.append(override.input_line)
            continue
        try:
            value = next(iter(override.sweep_string_iterator()))
        except Exception:  # interval(...), glob(...): left to the sweeper
            continue
        first.append(f"{override.get_key_element()}={value}")
    return first


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir.resolve()), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def interpolation_message(err: Exception, cfg: DictConfig | None = None) -> str:
    """One line for a config value that cannot be resolved: the key, its value, the reason."""
    key = getattr(err, "full_key", None) or "a config value"
    raw = _raw_value(cfg, key) if cfg is not None else None
    what = f"{key}={raw}" if raw is not None else key
    reason = str(getattr(err, "msg", None) or err).split("\n", 1)[0]
    if cause := re.search(r"Environment variable '([^']+)' not found", reason):
        name = cause.group(1)
        return (
            f"{what} cannot be resolved: the environment variable {name} is not set. Fix: set "
            f"{name}, give a default (${{oc.env:{name},<default>}}) or give {key} another value."
        )
    reason = reason.removeprefix("KeyError raised while resolving interpolation: ").strip('"')
    return f"{what} cannot be resolved: {reason}. Fix: give {key} a value that resolves."


def _raw_value(cfg: DictConfig, key: str) -> str | None:
    """The value of `key` as written (an interpolation, unresolved)."""
    parent_key, _, last = key.rpartition(".")
    try:
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        node = parent._get_node(last) if OmegaConf.is_config(parent) else None
        return None if node is None else str(node._value())
    except Exception:
        return None


def _interpolation_problem(cfg: DictConfig) -> str | None:
    """The first value of the run's config (Hydra's own section aside, as the run gets it)
    that does not resolve."""
    from omegaconf import read_write
    from omegaconf.errors import InterpolationResolutionError

    with read_write(cfg), open_dict(cfg):
        cfg.hydra.runtime.output_dir = "<run folder>"  # what ${hydra:runtime.output_dir} needs
    HydraConfig.instance().set_config(cfg)
    task = cfg.copy()
    with read_write(task), open_dict(task):
        del task["hydra"]
    try:
        OmegaConf.to_container(task, resolve=True)
    except InterpolationResolutionError as err:
        return interpolation_message(err, task)
    return None


def _output_folder_problem(cfg: DictConfig, overrides: Sequence[str], multirun: bool) -> str | None:
    """The run (or sweep) folder Hydra is about to create, and why it cannot: a file on its
    way, or a folder that cannot be written."""
    from omegaconf.errors import InterpolationResolutionError

    multirun = multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN
    section = "sweep" if multirun else "run"
    folder_key = f"hydra.{section}.dir"
    try:
        target = Path(str(OmegaConf.select(cfg, folder_key))).expanduser().absolute()
        log_dir = OmegaConf.select(cfg, "paths.log_dir")
    except InterpolationResolutionError as err:
        return interpolation_message(err, cfg)
    keys = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    key, value = (folder_key, target) if folder_key in keys else ("paths.log_dir", log_dir)
    what = "sweep" if multirun else "run"
    existing = target
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return (
            f"{key}={value}: the {what} folder {target} cannot be created, as {existing} is a "
            f"file, not a folder. Fix: point {key} at a folder (it is created if missing)."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        why = "is on a read-only file system" if read_only else "is not writable"
        return (
            f"{key}={value}: the {what} folder {target} cannot be created, as {existing} {why}. "
            f"Fix: point {key} at a writable folder."
        )
    return None


def full_error_requested() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def as_user_error(err: Exception) -> Exception:
    """Unwrap Hydra's InstantiationException: the config could not be turned into an object.
    Lightning's MisconfigurationException (e.g. a fraction of batches that rounds to none)
    and a config value that does not resolve are user errors as well.

    A user error inside it is returned as is; any other cause (an unknown activation, an
    unexpected keyword, a GPU asked for on a machine without one) becomes a ConfigError
    naming the config key, so it is reported in one line like other bad values.
    """
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from omegaconf.errors import InterpolationResolutionError

    if isinstance(err, MisconfigurationException):  # Lightning's own "this cannot work"
        problem = ConfigError(f"Lightning refused the configuration: {err}")
        problem.__cause__ = err
        return problem
    if isinstance(err, InterpolationResolutionError):  # `launch_problem` missed it
        problem = ConfigError(interpolation_message(err))
        problem.__cause__ = err
        return problem
    if not isinstance(err, InstantiationException):
        return err
    root: BaseException = err
    while isinstance(root, InstantiationException) and root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, CnnlabError):
        return root
    message = str(err)
    key = message.rsplit("full_key: ", 1)[1].strip() if "full_key: " in message else "config"
    cause = str(root) if root is not err else message.split("\n", 1)[-1]
    return ConfigError(f"{key}: could not be built from the config: {type(root).__name__}: {cause}")


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def as_disk_error(err: Exception, cfg: DictConfig) -> Exception:
    """A write that failed for want of space (or a read-only disk), as one line naming the
    folder and its free space; the original error stays its cause."""
    if not isinstance(err, OSError) or err.errno not in _DISK_FULL:
        return err
    where = Path(str(OmegaConf.select(cfg, "paths.output_dir", default=".")))
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    # A library may write through a temporary file elsewhere: name the file only if it is ours.
    inside = err.filename and str(err.filename).startswith(str(where))
    written = f"{err.filename}" if inside else f"a file of {where.name}"
    problem = CnnlabError(
        f"Could not write {written} ({err.strerror}): {where} has {free}. "
        "Free some space (or point paths.log_dir at another disk) and resume from the last "
        "checkpoint; no partly written checkpoint is left under a real name."
    )
    problem.__cause__ = err
    return problem


def hydra_choices() -> dict[str, Any]:
    """Which option of each config group this run uses, and the overrides that made it."""
    if not HydraConfig.initialized():
        return {"choices": {}, "overrides": []}
    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    if choices.get("local") is not None and not _local_config_present(hydra_cfg, choices["local"]):
        choices["local"] = None  # Hydra names an optional config even when it has none
    return {"choices": choices, "overrides": list(hydra_cfg.overrides.task)}


def _local_config_present(hydra_cfg: DictConfig, option: str) -> bool:
    """conf/local/<option>.yaml (this machine's settings) exists in a config folder of the run."""
    folders = [s.path for s in hydra_cfg.runtime.config_sources if s.schema == "file"]
    return any((Path(folder) / "local" / f"{option}.yaml").is_file() for folder in folders)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def swept_in_this_sweep() -> list[str]:
    """The keys this run's sweep varies (none for a single run)."""
    if not in_multirun():
        return []
    hydra = HydraConfig.get()
    return swept_keys(Path(hydra.sweep.dir), OmegaConf.select(hydra, "sweeper.params"))


def record_status(cfg: DictConfig, status: str, **fields: Any) -> None:
    """Merge `status` and `fields` into the run folder's metrics.json, keeping what is there."""
    output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if not output_dir:
        return
    record = RunRecord.of_folder(Path(output_dir))
    for key, value in hydra_choices().items():
        record.fields.setdefault(key, value)
    try:
        record.ended(status, **fields)
    except OSError as err:  # a full disk: say so, and keep the error that ended the run
        log.error("The run's record %s could not be written either: %s", record.path, err)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


@dataclass
class RunFolder:
    """The run's folder as Hydra made it, to tell when it vanished (deleted, moved or
    unmounted) while the run wrote to it: a new folder made in its place is not it either."""

    path: Path | None
    identity: tuple[int, int] | None

    @classmethod
    def of(cls, cfg: DictConfig) -> RunFolder:
        output_dir = OmegaConf.select(cfg, "paths.output_dir", default=None)
        path = Path(str(output_dir)) if output_dir else None
        return cls(path, _identity(path) if path is not None else None)

    def vanished(self) -> bool:
        return (
            self.path is not None
            and self.identity is not None
            and (_identity(self.path) != self.identity)
        )

    def vanished_error(self, cause: BaseException | None = None) -> RunFolderVanished:
        problem = RunFolderVanished(
            f"The run folder {self.path} vanished while the run was writing to it (deleted, "
            "moved or unmounted), so the run stopped and nothing more of it could be kept. "
            "Run the command again: it gets a new folder."
        )
        problem.__cause__ = cause
        return problem

    def record(self, cfg: DictConfig, status: str, **fields: Any) -> None:
        """`record_status`, except into a folder that vanished: no new one is made for it."""
        if not self.vanished() or (self.path is not None and self.path.is_dir()):
            record_status(cfg, status, **fields)

    @contextlib.contextmanager
    def quiet_threads_once_gone(self) -> Iterator[None]:
        """Writer threads (TensorBoard's) fail on their own once the folder is gone: their
        tracebacks say nothing the run's one message does not. Others print as before."""
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if isinstance(args.exc_value, OSError) and self.vanished():
                log.debug("A writer thread stopped: %s", args.exc_value)
                return
            previous(args)

        threading.excepthook = hook
        try:
            yield
        finally:
            if not self.vanished():  # a vanished folder's threads may still fail on exit
                threading.excepthook = previous


def run_entry(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task`, turning any failure into a recorded status and a clear message.

    Single run: a user error (CnnlabError) prints one message and exits non-zero; other
    errors keep their traceback. Multirun: the failure is recorded in the job's folder and
    logged, and None is returned so the other jobs (and the sweep report) still run.
    A diverged or interrupted run (`cnnlab.errors.RunStopped`) is recorded with that status;
    once a sweep got SIGINT/SIGTERM, its remaining jobs are recorded as interrupted unrun.
    """
    set_up_process()  # again for job processes that never ran a script (joblib, submitit)
    folder = RunFolder.of(cfg)
    with stop_on_signals(keep_request=in_multirun()) as stop, folder.quiet_threads_once_gone():
        if stop.signum is not None:
            record_status(
                cfg, "interrupted", error=f"not started: the sweep was stopped by {stop.name}"
            )
            return None
        if in_multirun():
            done, value = _sweep_job_state(cfg)
            if done:
                return value
        try:
            result = task(cfg)
            if folder.vanished():  # a logger or checkpoint made a new one in its place
                raise folder.vanished_error()
            return result
        except Exception as raised:
            if isinstance(raised, RunFolderVanished) or not folder.vanished():
                err: Exception = as_disk_error(as_user_error(raised), cfg)
            else:
                err = folder.vanished_error(raised)
            status = getattr(err, "status", "failed")
            # A diverged or interrupted run's status already says what happened.
            error = str(err) if status != "failed" else f"{type(err).__name__}: {err}"
            folder.record(cfg, status, error=error, **getattr(err, "record", {}))
            if full_error_requested():
                raise
            if in_multirun():
                marker = fail_fast_marker(cfg)
                if marker is not None and not marker.exists():
                    job = Path(str(cfg.paths.output_dir)).name
                    marker.write_text(f"{job}: {status}: {error}\n")
                if isinstance(err, CnnlabError):
                    log.error("Job %s: %s", status, err)
                else:
                    log.error("Job failed:\n%s", "".join(traceback.format_exception(err)))
                return None
            if isinstance(err, CnnlabError):
                print(f"Error: {err}", file=sys.stderr)
                sys.exit(err.exit_code)
            raise
        except (KeyboardInterrupt, SystemExit) as err:
            # Lightning's own SIGTERM handling (graceful), or a second signal (at once).
            if stop.signum is None and not isinstance(err, KeyboardInterrupt):
                raise
            stopped = stop.stopped or Interrupted(
                stop.signum or signal.SIGINT,
                f"Stopped at once by {stop.name or 'SIGINT'}; resume from the last checkpoint in "
                "the run folder's checkpoints/ with ckpt_path=<file>.",
            )
            folder.record(cfg, stopped.status, error=str(stopped), **stopped.record)
            if in_multirun():
                if not stop.at_once:  # Lightning's own graceful SIGTERM handling
                    log.error("Job interrupted: %s", stopped)
                    return None
                raise  # a second signal stops the whole sweep at once
            print(f"Error: {stopped}", file=sys.stderr)
            sys.exit(stopped.exit_code)


def _sweep_job_state(cfg: DictConfig) -> tuple[bool, Any]:
    """Before a sweep job runs: (True, what to return) when it must not train, else (False,
    None) with the config set to resume it. A job's folder holds a record only when its sweep
    runs again into the same folder (a resume, or a cluster's requeue)."""
    if HydraConfig.initialized() and (name := stop_marker(Path(HydraConfig.get().sweep.dir))):
        record_status(cfg, "interrupted", error=f"not started: the sweep was stopped by {name}")
        return True, None
    marker = fail_fast_marker(cfg)
    if marker is not None and marker.is_file():
        first = marker.read_text().strip()
        record_status(
            cfg, "interrupted", error=f"not started: sweep.fail_fast and a job failed ({first})"
        )
        return True, None
    output_dir = Path(str(cfg.paths.output_dir))
    state = job_state(output_dir)
    before, now = state.record.get("overrides"), hydra_choices()["overrides"]
    if state.record and before is not None and list(before) != now:
        log.error(
            "%s holds a job run with other overrides (%s, now %s); it is left as it is. Resume "
            "a sweep with its own command (make resume DIR=<sweep folder>).",
            output_dir, " ".join(before), " ".join(now),
        )  # fmt: skip
        return True, None
    if state.action == "keep":
        log.info("%s: %s before; kept as it is", output_dir.name, state.record["status"])
        return True, state.record
    if state.action == "resume" and not cfg.get("ckpt_path"):
        log.info("%s: resuming from %s", output_dir.name, state.checkpoint)
        with open_dict(cfg):
            cfg.ckpt_path = str(state.checkpoint)
    elif state.action == "run" and state.record:
        log.info("%s: %s before; running it again", output_dir.name, state.record.get("status"))
        clear_attempt(output_dir)
    return False, None
