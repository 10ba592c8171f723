"""A dependency-free progress bar for long work, drawn on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`with ProgressBar(total, "generating", unit="frames") as bar: bar.update(n)`."""

    def __init__(
        self, total: float, label: str, unit: str = "", stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.total = max(float(total), 1e-9)
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0.0
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, n: float = 1, postfix: str = "") -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last_draw > 0.1 or self.done >= self.total):
            self._last_draw = now
            self._draw(postfix)

    def _draw(self, postfix: str) -> None:
        frac = min(self.done / self.total, 1.0)
        width = 24
        filled = int(frac * width)
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        done = _fmt(self.done)
        total = _fmt(self.total)
        line = (
            f"\r{self.label} |{'#' * filled}{'.' * (width - filled)}| {done}/{total} {self.unit} "
            f"[{elapsed:5.1f}s, {rate:.1f} {self.unit}/s]{' ' + postfix if postfix else ''}"
        )
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw("")
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(x: float) -> str:
    if x >= 1 << 30:
        return f"{x / (1 << 30):.2f}G"
    if x >= 1 << 20:
        return f"{x / (1 << 20):.1f}M"
    return f"{x:.0f}"
