"""Commands cnnlab prints for a person to paste, and the paths they hand back to it.

Every printed command is built here, quoted twice: for Hydra's override grammar inside
(`ckpt_path='.../1_optimizer=adam/...'`: a sweep job's folder holds `=`) and for the shell
outside, so it pastes as it is, whatever the path holds (spaces, quotes, commas, `=`).
A path typed without quotes is quoted for Hydra before it parses the command line
(`quote_path_overrides`), so `ckpt_path=<a sweep job's checkpoint>` works as typed.
Torch-free and Hydra-light: the report imports it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from os import PathLike


def hydra_quoted(value: str) -> str:
    """`value` as a quoted Hydra override value: commas, spaces, `=` and quotes stay literal.

    Hydra reads a backslash as an escape only before a quote or the closing quote, so only
    those backslashes are doubled."""
    escaped = re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value)
    return f"'{escaped}'"


def path_override(key: str, path: str | PathLike[str]) -> str:
    """`key='path'`: one override Hydra reads as that literal path."""
    return f"{key}={hydra_quoted(str(path))}"


def shell_quoted(word: str | PathLike[str]) -> str:
    """`word` as the shell reads it back: as it is when safe, else in double quotes where
    nothing in it is special there (`"ckpt_path='...'"` reads better than shlex's `'"'"'`),
    else shlex's single quotes."""
    word = str(word)
    if shlex.quote(word) == word:
        return word
    if not any(char in word for char in '"$`\\!'):
        return f'"{word}"'
    return shlex.quote(word)


def python_command(script: str, *arguments: str | PathLike[str]) -> str:
    """`python <script> <arguments>`, each argument quoted for the shell."""
    return " ".join(shell_quoted(word) for word in ["python", script, *arguments])


def make_command(target: str, **variables: str | PathLike[str]) -> str:
    """`make <target> NAME=value`, each value quoted for the shell."""
    assignments = [f"{name}={shell_quoted(value)}" for name, value in variables.items()]
    return " ".join(["make", target, *assignments])


def is_path_key(key: str) -> bool:
    """Keys whose value is one file or folder: `ckpt_path`, `data.data_dir`, `paths.log_dir`,
    `hydra.sweep.dir`, ..."""
    key = key.lstrip("+")
    return key == "ckpt_path" or key.endswith(("_dir", ".dir", "_path"))


def quote_path_overrides(arguments: Sequence[str]) -> list[str]:
    """`arguments` with each path override that Hydra's grammar cannot parse as typed
    (`ckpt_path=outputs/.../1_optimizer=adam/checkpoints/last.ckpt`) quoted for it.

    What already parses (a plain path, a quoted one, a sweep over paths) is left as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    quoted = []
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if equals and value and is_path_key(key) and not argument.startswith("-"):
            try:
                parser.parse_override(argument)
            except HydraException:  # the grammar's own errors and OverrideParseException
                argument = path_override(key, value)
        quoted.append(argument)
    return quoted
