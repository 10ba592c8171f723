"""Pytest fixtures around a real `longlive-runner serve` process (tests/serve_process.py).

Fixtures (make them visible with one line in tests/conftest.py:
`from _runner_process import runner_process, runner_url  # noqa: F401`):

- `runner_process`: one runner per test module (`RunnerProcess`);
- `runner_url`: its WebSocket URL.

The runner is shared by the tests of a module: send `reset` first when a test needs a fresh session.
A module chooses the runner's options with a module-level `RUNNER_OPTIONS`, built from
`start_runner`'s arguments (serve's arguments, then `model=`, `env=`, ...):

    RUNNER_OPTIONS = runner_options("--grace-period", "off", env={"OMP_NUM_THREADS": "1"})
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from serve_process import RunnerProcess, runner_command, start_runner

RunnerOptions = tuple[tuple[str, ...], dict[str, Any]]


def runner_options(*args: str, **options: Any) -> RunnerOptions:
    """A module's `RUNNER_OPTIONS` for `runner_process`: the arguments of `start_runner`."""
    return args, options


@pytest.fixture(scope="module")
def runner_process(request: pytest.FixtureRequest) -> Iterator[RunnerProcess]:
    """A `longlive-runner serve --model tiny` process shared by one test module, started with the
    module's `RUNNER_OPTIONS` (`runner_options(...)`), if it sets them."""
    args, options = getattr(request.module, "RUNNER_OPTIONS", runner_options())
    with start_runner(*args, **options) as runner:
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
    "RunnerOptions",
    "RunnerProcess",
    "run_serve",
    "runner_command",
    "runner_options",
    "runner_process",
    "runner_url",
    "start_runner",
]
