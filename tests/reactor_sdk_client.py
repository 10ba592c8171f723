"""Scenarios driven by the official Python client `reactor-sdk` 1.13.0 (a test helper, run as a
subprocess by tests/test_reactor_e2e.py inside a network namespace; not a test module itself).

    python tests/reactor_sdk_client.py SCENARIO URL [TOKEN]

prints one JSON object: what the client saw (frames with their arrival time and dominant colour,
messages, replies, errors). The assertions are the test's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import numpy as np
from reactor_sdk import Reactor, ReactorError

RED = "a red circle moving right on a black background"
BLUE = "a blue square moving down on a black background"


def colour(frame: np.ndarray) -> str:
    """The dominant saturated colour of a decoded RGB frame: "red", "blue" or "none"."""
    f = frame.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    red = int(np.count_nonzero((r > 140) & (g < 90) & (b < 90)))
    blue = int(np.count_nonzero((b > 140) & (r < 90) & (g < 110)))
    if max(red, blue) < frame.shape[0] * frame.shape[1] // 200:
        return "none"
    return "red" if red > blue else "blue"


class Watcher:
    """One client with its frames and messages recorded."""

    def __init__(self, url: str, token: str | None) -> None:
        if token is None:
            self.client = Reactor("longlive", local=True, api_url=url)
        else:  # the coordinator form: the runner's token as the JWT
            self.client = Reactor("longlive", jwt=token, api_url=url)
        self.t0 = time.monotonic()
        self.frames: list[tuple[float, str, list[int]]] = []
        self.messages: list[dict[str, Any]] = []
        self.client.on("message", self._message)

    def _message(self, msg: Any) -> None:
        self.messages.append({"t": time.monotonic() - self.t0, "msg": msg})

    def _frame(self, frame: np.ndarray) -> None:
        self.frames.append((time.monotonic() - self.t0, colour(frame), list(frame.shape)))

    async def connect(self) -> float:
        start = time.monotonic()
        await asyncio.wait_for(self.client.connect(), 30)
        self.client.track("main_video").on_frame(self._frame)
        return time.monotonic() - start

    def now(self) -> float:
        return time.monotonic() - self.t0

    def count(self) -> int:
        return len(self.frames)

    async def frames_until(self, n: int, timeout: float) -> int:
        """Wait until `n` more frames arrived (or `timeout` s): waits adapt to the model's speed,
        which a busy machine slows, instead of sleeping a fixed time."""
        target, deadline = self.count() + n, time.monotonic() + timeout
        while self.count() < target and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.count()

    async def quiet(self, seconds: float, timeout: float) -> float:
        """Wait until no frame arrived for `seconds` (the video stopped); its start time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.frames[-1][0] if self.frames else 0.0
            if self.now() - last >= seconds:
                return last
            await asyncio.sleep(0.05)
        return self.now()

    async def command(self, name: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            reply = await asyncio.wait_for(self.client.send_command(name, data), 15)
        except ReactorError as exc:
            return {"error": exc.code, "message": exc.message}
        return {"reply": reply}

    def report(self) -> dict[str, Any]:
        return {"frames": self.frames, "messages": self.messages}


async def main_scenario(url: str, token: str | None) -> dict[str, Any]:
    w = Watcher(url, token)
    out: dict[str, Any] = {"connect_s": await w.connect(), "marks": {}}
    marks = out["marks"]
    out["schedule_red"] = await w.command("schedule_prompt", {"new_prompt": RED, "timestamp": 0})
    out["schedule_blue"] = await w.command("schedule_prompt", {"new_prompt": BLUE, "timestamp": 12})
    marks["start"] = w.now()
    out["start"] = await w.command("start", {})
    out["refused_resume"] = await w.command("resume", {})
    out["refused_unknown"] = await w.command("set_shot", {"prompt": "x"})
    out["refused_bad_field"] = await w.command("schedule_prompt", {"new_prompt": "x", "timestamp": 1.5})
    await w.frames_until(64, 30)  # past the switch at video frame 45
    marks["pause"] = w.now()
    out["pause"] = await w.command("pause", {})
    await w.quiet(2.5, 15)  # the block in progress and those made ahead play out, then nothing
    marks["paused_from"] = w.now()
    await asyncio.sleep(1.0)
    marks["paused_to"] = w.now()
    out["state_paused"] = await w.command("get_state", {})
    out["resume"] = await w.command("resume", {})
    await w.frames_until(5, 15)
    marks["resumed_to"] = w.now()
    out["reset"] = await w.command("reset", {})
    out["state_reset"] = await w.command("get_state", {})
    out["schema"] = await asyncio.wait_for(w.client.request_schema(), 10)
    await w.client.disconnect()
    out.update(w.report())
    return out


async def shared_scenario(url: str, token: str | None) -> dict[str, Any]:
    """Two clients on one session, then a reconnect of the second."""
    a, b = Watcher(url, token), Watcher(url, token)
    out: dict[str, Any] = {"marks": {}}
    await a.connect()
    out["a_schedule"] = await a.command("schedule_prompt", {"new_prompt": RED, "timestamp": 0})
    out["a_start"] = await a.command("start", {})
    await b.connect()
    out["b_state"] = await b.command("get_state", {})
    out["marks"]["b_before_reconnect"] = await b.frames_until(10, 20)
    out["b_session"] = b.client.session_id
    out["a_session"] = a.client.session_id
    await asyncio.wait_for(b.client.reconnect(), 30)
    out["marks"]["b_reconnected_at"] = b.now()
    out["marks"]["b_after_reconnect"] = await b.frames_until(10, 20)
    out["b_state_after"] = await b.command("get_state", {})
    await a.client.disconnect()
    out["marks"]["b_at_a_left"] = b.count()
    out["marks"]["b_after_a_left"] = await b.frames_until(5, 15)
    out["reset"] = await b.command("reset", {})
    await b.client.disconnect()
    out["a"], out["b"] = a.report(), b.report()
    return out


async def remote_scenario(url: str, token: str | None) -> dict[str, Any]:
    """From another network namespace, with the runner's token as the JWT (coordinator mode)."""
    out: dict[str, Any] = {"marks": {}}
    wrong = Reactor("longlive", jwt="not-the-token-0123456789", api_url=url)
    try:
        await asyncio.wait_for(wrong.connect(), 30)
        out["wrong_token"] = {"connected": True}
    except ReactorError as exc:
        out["wrong_token"] = {"error": exc.code, "status": exc.status}
    w = Watcher(url, token)
    out["connect_retries"] = 0
    try:
        out["connect_s"] = await w.connect()
    except ReactorError as exc:  # the first request over a veth made a moment ago: once more
        out["connect_retries"], out["first_error"] = 1, str(exc)
        w = Watcher(url, token)
        out["connect_s"] = await w.connect()
    out["reset"] = await w.command("reset", {})
    out["schedule"] = await w.command("schedule_prompt", {"new_prompt": RED, "timestamp": 0})
    out["marks"]["start"] = w.now()
    out["start"] = await w.command("start", {})
    out["refused"] = await w.command("start", {})
    await w.frames_until(16, 20)
    out["marks"]["end"] = w.now()
    out["reset_end"] = await w.command("reset", {})
    await w.client.disconnect()
    out.update(w.report())
    return out


async def ours_scenario(url: str, token: str | None) -> dict[str, Any]:
    """Our own SDK (`longlive.Reactor`) over WebRTC: `longlive.webrtc.webrtc_transport`."""
    from longlive import CommandError
    from longlive import Reactor as Ours
    from longlive.webrtc import webrtc_transport

    out: dict[str, Any] = {"frames": []}
    t0 = time.monotonic()
    async with Ours(transport_factory=webrtc_transport(url, token=token)) as reactor:
        out["connect_s"] = time.monotonic() - t0
        await reactor.reset()
        await reactor.schedule_prompt(RED, timestamp=0)
        await reactor.schedule_prompt(BLUE, timestamp=12)
        t_start = time.monotonic()
        await reactor.start()
        try:
            await reactor.resume()
            out["refused"] = None
        except CommandError as exc:
            out["refused"] = exc.code
        async for frame in reactor.frames():
            out["frames"].append(
                [
                    time.monotonic() - t_start,
                    colour(frame.image),
                    frame.index,
                    frame.generation,
                    list(frame.image.shape),
                ]
            )
            if frame.index >= 60 or time.monotonic() - t_start > 30:
                break
        state = await reactor.get_state()
        out["state_frame"] = state.current_start_frame
        await reactor.reset()
    return out


async def cluster_scenario(url: str, token: str | None) -> dict[str, Any]:
    """`longlive-runner cluster`: a session of its own on a worker, video from the worker; a
    second client from the same address meanwhile (the cap per address: 1 with 2 workers)."""
    w = Watcher(url, token)
    out: dict[str, Any] = {"connect_s": await w.connect(), "session_id": w.client.session_id}
    out["schedule"] = await w.command("schedule_prompt", {"new_prompt": RED, "timestamp": 0})
    out["start"] = await w.command("start", {})
    out["frames_seen"] = await w.frames_until(24, 40)
    second = Watcher(url, token)
    try:
        await second.connect()
        out["second"] = {"session_id": second.client.session_id}
        await second.client.disconnect()
    except Exception as exc:  # what the official client surfaces for the gateway's 503
        out["second"] = {"error": f"{type(exc).__name__}: {exc}"}
    out["state"] = await w.command("get_state", {})
    await w.client.disconnect()
    out.update(w.report())
    return out


SCENARIOS = {
    "cluster": cluster_scenario,
    "main": main_scenario,
    "shared": shared_scenario,
    "remote": remote_scenario,
    "ours": ours_scenario,
}


def main() -> None:
    name, url = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else None
    result = asyncio.run(SCENARIOS[name](url, token))
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
