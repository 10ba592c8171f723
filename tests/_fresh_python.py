"""Test helper: run code in a fresh interpreter (this one's), for checks on what gets imported."""

from __future__ import annotations

import subprocess
import sys


def fresh_python(code: str, timeout: float = 120) -> str:
    """Run `code` with `python -c` in a new process; its stdout, stripped. Fails on a non-zero exit."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()
