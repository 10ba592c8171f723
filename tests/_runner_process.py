"""Pytest fixtures around a real `longlive-runner serve` process (tests/serve_process.py).

Fixtures (make them visible with one line in tests/conftest.py:
`from _runner_process import runner_process, runner_url  # noqa: F401`):

- `runner_process`: one runner per test module (`RunnerProcess`);
- `runner_url`: its WebSocket URL.

The runner is shared by the tests of a module: send `reset` first when a test needs a fresh session.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

from serve_process import RunnerProcess, runner_command, start_runner


@pytest.fixture(scope="module")
def runner_process() -> Iterator[RunnerProcess]:
    """A `longlive-runner serve --model tiny` process shared by one test module."""
    with start_runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def runner_url(runner_process: RunnerProcess) -> str:
    """The WebSocket URL of `runner_process`."""
    return runner_process.url


def run_serve(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run `longlive-runner serve ARGS` to completion (for commands expected to fail fast)."""
    return subprocess.run(
        [sys.executable, "-m", "longlive_runner", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


__all__: Sequence[str] = [
    "RunnerProcess",
    "run_serve",
    "runner_command",
    "runner_process",
    "runner_url",
    "start_runner",
]
