"""A real `longlive-runner cluster` subprocess (its own local Ray instance), once per test session.

Fixtures (visible through tests/conftest.py):

- `cluster_process`: `longlive-runner cluster --workers 2 --model demo --port 0` (2 CPU workers),
  started once for the whole test session, ready when both workers answer;
- `cluster_url`: its websocket URL.

Without Ray the fixtures skip, loudly; with `LONGLIVE_REQUIRE_CLUSTER=1` (set by .ci/run) a
missing Ray fails instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import serve_process
from serve_process import RunnerProcess

CLUSTER_WORKERS = 2
#: Seconds a session outlives its last client (clients of a test rejoin within it: reconnect).
CLUSTER_GRACE = 1.0
REQUIRE_ENV = "LONGLIVE_REQUIRE_CLUSTER"


def require_ray() -> None:
    """Skip (or fail, under LONGLIVE_REQUIRE_CLUSTER=1) when Ray is not installed."""
    if importlib.util.find_spec("ray") is not None:
        return
    reason = (
        "CLUSTER TESTS NOT RUN: Ray is not installed (pip install -e '.[cluster]'); "
        f"set {REQUIRE_ENV}=1 to make this a failure"
    )
    if os.environ.get(REQUIRE_ENV, "") not in ("", "0"):
        pytest.fail(reason.replace("NOT RUN", "REQUIRED") + f" ({REQUIRE_ENV} is set)")
    pytest.skip(reason)


def start_cluster(*args: str, workers: int = CLUSTER_WORKERS, timeout: float = 180.0) -> RunnerProcess:
    """Start `longlive-runner cluster --model demo` and wait until every worker is up."""
    return serve_process.start_cluster(
        "--device", "cpu", "--grace-period", str(CLUSTER_GRACE), "--pace", "fast", "--log-level", "info",
        *args, workers=workers, model="demo", timeout=timeout, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def health(cluster: RunnerProcess) -> dict[str, Any]:
    return dict(httpx.get(cluster.http_url + "/health", timeout=5).json())


def info(cluster: RunnerProcess) -> dict[str, Any]:
    return dict(httpx.get(cluster.http_url + "/info", timeout=5).json())


def wait_idle(cluster: RunnerProcess, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until no session runs (those of earlier tests ended) and every worker is free."""
    deadline = time.monotonic() + timeout
    while True:
        h = health(cluster)
        if h["sessions"] == 0 and h["queue_length"] == 0 and h["workers_ready"] == h["workers"]:
            return h
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster is still busy: {h}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def cluster_process() -> Iterator[RunnerProcess]:
    """`longlive-runner cluster --workers 2 --model demo`, shared by the whole test session."""
    require_ray()
    with start_cluster() as cluster:
        yield cluster
    log = os.environ.get("LONGLIVE_CLUSTER_LOG")
    if log:  # the gateway's log, for a failure that needs it
        with open(log, "w", encoding="utf-8") as f:
            f.write(cluster.stderr)


@pytest.fixture(scope="session")
def cluster_url(cluster_process: RunnerProcess) -> str:
    return cluster_process.url
