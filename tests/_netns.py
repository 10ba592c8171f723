"""Network namespaces for the WebRTC tests (tests/test_reactor_e2e.py, tests/test_reactor_js.py).

libwebrtc (inside `reactor-sdk`) and Chromium ignore loopback ICE candidates, so `serve` and the
clients run in a network namespace of the tests' own whose only non-loopback interface is one end
of a veth pair (the other end in a second namespace of ours, so the link is up): the HTTP calls go
over the namespace's loopback (local mode, no token), the media over the veth address. Needs root
and `ip` (iproute2): without them the tests are skipped, unless `LONGLIVE_REQUIRE_NETNS=1` (CI),
where that is a failure. Nothing outside the namespaces is touched; they are deleted at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

REQUIRE_ENV = "LONGLIVE_REQUIRE_NETNS"
READY = re.compile(r"serving longlive \((?P<model>[^)]*)\) on ws://(?P<host>[^\s:]+):(?P<port>\d+)")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _netns_available() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


class Namespaces:
    """Two namespaces of ours joined by a veth pair (10.213.N.1 and .2 inside them only)."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.a, self.b = f"llrx{tag}a", f"llrx{tag}b"
        self.subnet = 10 + os.getpid() % 200
        self.address_a = f"10.213.{self.subnet}.1"

    def create(self) -> None:
        _ip("netns", "add", self.a)
        _ip("netns", "add", self.b)
        _ip(
            "link",
            "add",
            f"{self.a}0",
            "netns",
            self.a,
            "type",
            "veth",
            "peer",
            "name",
            f"{self.b}0",
            "netns",
            self.b,
        )
        for ns, dev, host in ((self.a, f"{self.a}0", 1), (self.b, f"{self.b}0", 2)):
            _ip("-n", ns, "addr", "add", f"10.213.{self.subnet}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def delete(self) -> None:
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def exec(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


def make_netns() -> Iterator[Namespaces]:
    why = _netns_available()
    if why is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but {why}")
        pytest.skip(f"REACTOR WEBRTC TEST NOT RUN: {why}")
    ns = Namespaces()
    ns.delete()  # a leftover of a killed run with the same pid
    ns.create()
    try:
        yield ns
    finally:
        ns.delete()


class Serve:
    def __init__(self, proc: subprocess.Popen[str], lines: list[str], url: str) -> None:
        self.proc, self.lines, self.url = proc, lines, url

    @property
    def stderr(self) -> str:
        return "".join(self.lines)


def run_serve(netns: Namespaces, host: str = "127.0.0.1", token: str | None = None) -> Iterator[Serve]:
    """`serve --model demo` in namespace A on `host` (a token, through LONGLIVE_TOKEN, if given)."""
    cmd = [
        *netns.exec(netns.a),
        sys.executable, "-m", "longlive_runner", "serve",
        "--model", "demo", "--host", host, "--port", "0", "--log-level", "info",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LONGLIVE_TOKEN", None)
    if token is not None:
        env["LONGLIVE_TOKEN"] = token
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    lines: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            m = READY.search(line)
            if m and not ready.is_set():
                found["url"] = f"http://{m['host']}:{m['port']}"
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(120) or "url" not in found:
            raise RuntimeError(f"serve did not start:\n{''.join(lines)}")
        yield Serve(proc, lines, found["url"])
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
