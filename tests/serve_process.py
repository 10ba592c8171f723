"""A real `longlive-runner serve` (or `cluster`) subprocess, for tests and benchmarks.

```python
with start_runner() as runner:        # python -m longlive_runner serve --model tiny --port 0
    runner.url                        # "ws://127.0.0.1:PORT" (the port the runner printed)
    runner.http_url                   # "http://127.0.0.1:PORT"
with start_cluster(workers=2) as cluster:   # longlive-runner cluster --workers 2 (needs Ray)
    cluster.url                       # ready once every worker answers (/health)
```
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

__all__ = ["READY", "RunnerProcess", "cluster_command", "runner_command", "start_cluster", "start_runner"]

READY = re.compile(r"serving longlive \((?P<model>[^)]*)\) on (?P<url>ws://\S+)")


class RunnerProcess:
    """A started `longlive-runner serve` subprocess; its stderr is collected in `stderr_lines`."""

    def __init__(self, proc: subprocess.Popen[str], stderr_lines: list[str]) -> None:
        self.proc = proc
        self.stderr_lines = stderr_lines
        self.url = ""
        self.model = ""

    @property
    def http_url(self) -> str:
        return "http" + self.url[len("ws") :]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful shutdown), then SIGKILL after `timeout`; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> RunnerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def runner_command(*args: str, model: str = "tiny", host: str = "127.0.0.1", port: int = 0) -> list[str]:
    return [
        sys.executable,
        "-m",
        "longlive_runner",
        "serve",
        "--model",
        model,
        "--host",
        host,
        "--port",
        str(port),
        *args,
    ]


def start_runner(
    *args: str,
    model: str = "tiny",
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> RunnerProcess:
    """Start `longlive-runner serve` and wait until it prints its URL and `/health` answers.

    `port=0` lets the runner pick a free port (no race with other processes). Raises
    RuntimeError, with the runner's stderr, if it exits or is not ready within `timeout`.
    """
    return _start(runner_command(*args, model=model, host=host, port=port), timeout, env)


def cluster_command(
    *args: str, workers: int = 2, model: str = "demo", host: str = "127.0.0.1", port: int = 0
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "longlive_runner",
        "cluster",
        "--workers",
        str(workers),
        "--model",
        model,
        "--host",
        host,
        "--port",
        str(port),
        *args,
    ]


def start_cluster(
    *args: str,
    workers: int = 2,
    model: str = "demo",
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 180.0,
    env: dict[str, str] | None = None,
) -> RunnerProcess:
    """Start `longlive-runner cluster` (a local Ray instance unless `--address` is among `args`)
    and wait until every worker is up (`/health` shows `workers_ready == workers`)."""
    return _start(
        cluster_command(*args, workers=workers, model=model, host=host, port=port),
        timeout,
        {"RAY_USAGE_STATS_ENABLED": "0", **(env or {})},
        lambda health: health.get("workers_ready") == workers,
    )


def _start(
    cmd: list[str],
    timeout: float,
    env: dict[str, str] | None,
    healthy: Callable[[dict[str, Any]], bool] = lambda health: True,
) -> RunnerProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    lines: list[str] = []
    ready = threading.Event()
    runner = RunnerProcess(proc, lines)

    def read_stderr() -> None:  # keeps the pipe drained for the whole life of the process
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            match = READY.search(line)
            if match and not ready.is_set():
                runner.url, runner.model = match["url"], match["model"]
                ready.set()
        ready.set()  # the process ended

    threading.Thread(target=read_stderr, name="runner-stderr", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        if not ready.wait(timeout) or not runner.url:
            raise RuntimeError(f"the runner did not start (exit status {proc.poll()}):\n{runner.stderr}")
        while True:
            try:
                response = httpx.get(runner.http_url + "/health", timeout=5)
                if response.status_code == 200 and healthy(response.json()):
                    return runner
            except (httpx.HTTPError, ValueError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the runner's /health never answered:\n{runner.stderr}")
            time.sleep(0.05)
    except BaseException:
        runner.stop(timeout=5)
        raise
