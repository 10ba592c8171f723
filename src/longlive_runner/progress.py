"""Progress bars on stderr, drawn by tqdm: live on a terminal, whole lines in a log.

On a terminal the bar redraws in place (tqdm's `\\r`). Where stderr is not a terminal (CI logs, a
file, a pipe) a redrawn bar would make one endless line, so the bar is written as separate lines,
at most one every `LOG_INTERVAL` seconds, plus the last one.
"""

from __future__ import annotations

import sys
import textwrap
from typing import Any, NoReturn, TextIO

from tqdm import tqdm

__all__ = ["LOG_INTERVAL", "format_bytes", "progress_bar", "shorten"]

#: Seconds between two lines of a bar written to a log (not a terminal).
LOG_INTERVAL = 10.0


class _Lines:
    """A stream for tqdm that writes each state of the bar as its own line (no `\\r`)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = ""

    def write(self, text: str) -> None:
        for part in text.replace("\n", "\r").split("\r"):
            part = part.rstrip()
            if part and part != self._last:
                self._stream.write(part + "\n")
                self._last = part

    def flush(self) -> None:
        self._stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(
    total: float | None,
    desc: str,
    *,
    unit: str = "it",
    enabled: bool = True,
    stream: TextIO | None = None,
    initial: float = 0,
    bytes: bool = False,
) -> tqdm[NoReturn]:
    """A tqdm bar on `stream` (default stderr); `bytes`: sizes and rates in kB/MB/GB.

    `with progress_bar(93, "generating", unit="frames") as bar: bar.update(9)`.
    """
    stream = stream if stream is not None else sys.stderr
    terminal = _is_terminal(stream)
    options: dict[str, Any] = {}
    if bytes:
        options.update(unit="B", unit_scale=True, unit_divisor=1000)
    else:
        options.update(unit=f" {unit}" if unit else "it")
    return tqdm(
        total=total,
        desc=desc,
        initial=initial,
        disable=not enabled,
        file=stream if terminal else _Lines(stream),
        dynamic_ncols=terminal,
        ascii=not terminal,
        mininterval=0.1 if terminal else LOG_INTERVAL,
        leave=True,
        **options,
    )


def format_bytes(n: float) -> str:
    """A size in bytes as the bars write it (tqdm's SI form: 2.50MB)."""
    text: str = tqdm.format_sizeof(n, suffix="B", divisor=1000)
    return text


def shorten(text: str, width: int = 40) -> str:
    """`text` cut to `width` characters at a word boundary (a bar's postfix)."""
    return textwrap.shorten(text, width=width, placeholder="…")
