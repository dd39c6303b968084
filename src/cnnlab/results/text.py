"""Text from users shown as text: run labels, statuses, error messages, class names, folders.

Every place that shows such a value (report.md, the console, log lines, figures, TensorBoard)
passes it through one of these helpers, so a label like `$x^$`, `<script>`, `a|b` or
`"\\x1b[2J"` is drawn, printed and rendered as the characters it holds: never as mathtext,
HTML, a broken table or a terminal command.
"""

from __future__ import annotations

import logging
import re
import textwrap
from typing import Any

# Line breaks and tabs (C0 and C1 ones, and Unicode's line and paragraph separators).
_BREAKS = re.compile("[\t\n\v\f\r\x1c-\x1f\x85\u2028\u2029]")
# C0 and C1 control characters and DEL: terminal escapes (ESC, CSI, OSC, BEL ...) start here.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# The same, but line breaks and tabs kept: multi-line log messages and tracebacks.
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARKDOWN = str.maketrans({"\\": "\\\\", "|": "\\|", "&": "&amp;", "<": "&lt;", ">": "&gt;"})


def plain(text: Any) -> str:
    """One line without control characters: line breaks and tabs become spaces, terminal
    escape sequences lose the control characters that make them commands."""
    return _CONTROL.sub("", _BREAKS.sub(" ", str(text)))


def plain_lines(text: Any) -> str:
    """Like `plain`, but keeps newlines and tabs (log messages, tracebacks)."""
    return _CONTROL_BUT_LINES.sub("", str(text).replace("\r\n", "\n"))


def markdown(text: Any) -> str:
    """Literal text in Markdown, a table cell or a heading: no HTML (`<`, `>`, `&` escaped),
    `|` and backslashes escaped so a cell stays one cell, one line."""
    return plain(text).translate(_MARKDOWN)


def code(text: Any) -> str:
    """An inline code span holding `text` exactly: its fence is longer than any run of
    backticks inside it, so the span cannot be closed early (HTML is literal in a span)."""
    text = plain(text)
    runs = [len(run) for run in re.findall("`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def figure_text(text: Any, width: int | None = None, limit: int | None = None) -> str:
    """Text for matplotlib, drawn as written: one line (or wrapped to `width` after commas
    and spaces), cut to `limit` characters with an ellipsis, and every `$` escaped, so
    mathtext never parses a label (`$x^$` would raise)."""
    line = plain(text)
    if limit and len(line) > limit:
        line = f"{line[: limit - 1]}\u2026"
    if width:
        line = textwrap.fill(line.replace(",", ", "), width).replace(", ", ",")
    return line.replace("$", r"\$")


class PlainLogText(logging.Filter):
    """A logging filter for console and file handlers: control characters leave the message
    and its traceback (newlines and tabs stay), so a logged label cannot drive the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format: the handler reports it as it would anyway
            return True
        cleaned = plain_lines(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = plain_lines(logging.Formatter().formatException(record.exc_info))
        return True
