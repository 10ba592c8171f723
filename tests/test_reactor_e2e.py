"""Reactor's official Python client (`reactor-sdk` 1.13.0) drives `longlive-runner serve` over
WebRTC, changing only its URL (local mode), with the demo model.

libwebrtc (inside `reactor-sdk`) ignores loopback ICE candidates, so `serve` and the client run
in a network namespace of this test's own whose only non-loopback interface is one end of a veth
pair (the other end in a second namespace of ours, so the link is up): the HTTP calls go over the
namespace's loopback (local mode, no token), the media over the veth address. Needs root and
`ip` (iproute2): without them the tests are skipped, unless `LONGLIVE_REQUIRE_NETNS=1` (CI), where
that is a failure. Nothing outside the namespaces is touched; they are deleted at the end.

One `serve` for the module; each scenario is `tests/reactor_sdk_client.py` run in the namespace
(it prints what the client saw; the assertions are here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiortc", reason="the webrtc extra is not installed")
pytest.importorskip("reactor_sdk", reason="reactor-sdk==1.13.0 (dev extra) is not installed")

REQUIRE_ENV = "LONGLIVE_REQUIRE_NETNS"
HERE = Path(__file__).resolve().parent
CLIENT = HERE / "reactor_sdk_client.py"
READY = re.compile(r"serving longlive \((?P<model>[^)]*)\) on ws://(?P<host>[^\s:]+):(?P<port>\d+)")
RED = "a red circle moving right on a black background"
BLUE = "a blue square moving down on a black background"


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


@pytest.fixture(scope="module")
def netns() -> Iterator[Namespaces]:
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


@pytest.fixture(scope="module")
def serve(netns: Namespaces) -> Iterator[Serve]:
    cmd = [
        *netns.exec(netns.a),
        sys.executable, "-m", "longlive_runner", "serve",
        "--model", "demo", "--host", "127.0.0.1", "--port", "0", "--log-level", "info",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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


def run_client(netns: Namespaces, serve: Serve, scenario: str, *extra: str) -> dict[str, Any]:
    cmd = [*netns.exec(netns.a), sys.executable, str(CLIENT), scenario, serve.url, *extra]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=90, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    if done.returncode != 0:
        raise AssertionError(
            f"client failed ({done.returncode}):\n{done.stderr[-4000:]}\nserve:\n{serve.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _types(messages: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m["msg"]["data"] for m in messages if isinstance(m["msg"], dict) and m["msg"].get("type") == kind]


def test_python_client_drives_serve_over_webrtc(netns: Namespaces, serve: Serve) -> None:
    r = run_client(netns, serve, "main")
    marks, frames = r["marks"], r["frames"]
    assert r["connect_s"] < 10
    for key in ("schedule_red", "schedule_blue", "start", "pause", "resume", "reset"):
        assert "reply" in r[key], (key, r[key])
    # refused commands carry our error codes as v1 errors
    assert r["refused_resume"]["error"] == "not_paused"
    assert r["refused_unknown"]["error"] == "unknown_type"
    assert r["refused_bad_field"]["error"] == "bad_field"  # 1.5 is not a frame; 0.0 would be 0

    # >= 3 s of video at 16 fps before the pause, decoded from the compressed track
    playing = [f for f in frames if marks["start"] <= f[0] <= marks["pause"]]
    assert playing, serve.stderr[-3000:]
    first = playing[0][0]
    assert first - marks["start"] < 3.0  # time to first frame
    assert playing[-1][0] - first >= 3.0
    steady = [f for f in playing if f[0] >= first + 0.5]
    fps = (len(steady) - 1) / (steady[-1][0] - steady[0][0])
    assert 13.0 <= fps <= 18.5, fps
    assert playing[0][2] == [64, 64, 3]
    # the scheduled switch at latent frame 12 (video frame 45) shows in the decoded colours
    colours = [c for _, c, _ in playing]
    assert colours[:20].count("red") >= 18, colours[:20]
    first_blue = colours.index("blue")
    assert 35 <= first_blue <= 55, first_blue
    assert colours[first_blue + 3 :].count("red") == 0
    # messages: progress after each block, state snapshots, the switch as an event
    progress = [m["current_start_frame"] for m in _types(r["messages"], "progress")]
    assert progress[:4] == [0, 3, 6, 9]  # 0 at start, then +3 latent frames per block
    assert any(s.get("current_frame", 0) >= 12 for s in _types(r["messages"], "state"))
    switched = [e for e in _types(r["messages"], "event") if e.get("event") == "prompt_switched"]
    assert any(e["new_prompt"] == BLUE and e["previous_prompt"] == RED for e in switched)
    # pause: the video stops (after the blocks already made); resume: it goes on
    assert not [f for f in frames if marks["paused_from"] <= f[0] <= marks["paused_to"]]
    paused = r["state_paused"]["reply"]
    assert paused["type"] == "state" and paused["data"]["paused"] is True
    assert len([f for f in frames if marks["paused_to"] < f[0] <= marks["resumed_to"]]) >= 5
    # reset: back to idle, no prompts
    state = r["state_reset"]["reply"]["data"]
    assert state["current_frame"] == 0 and state["scheduled_prompts"] == {} and state["running"] is False
    # requestSchema: the OpenAPI document of the commands
    assert r["schema"]["openapi"].startswith("3.")
    assert "/commands/schedule_prompt" in r["schema"]["paths"]


def test_two_clients_share_one_session_and_one_reconnects(netns: Namespaces, serve: Serve) -> None:
    r = run_client(netns, serve, "shared")
    marks = r["marks"]
    assert r["a_session"] == r["b_session"]
    b_state = r["b_state"]["reply"]["data"]
    assert b_state["running"] is True and b_state["scheduled_prompts"] == {"0": RED}
    assert marks["b_before_reconnect"] >= 10
    assert marks["b_after_reconnect"] - marks["b_before_reconnect"] >= 10  # video again after reconnect
    assert r["b_state_after"]["reply"]["data"]["running"] is True
    assert marks["b_after_a_left"] > marks["b_at_a_left"]  # A leaving does not stop B's video
    assert "reply" in r["reset"]
