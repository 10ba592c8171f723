"""The SDK over WebRTC: the same `Reactor` API, with the video as a compressed track.

```python
from longlive import Reactor
from longlive.webrtc import webrtc_transport

async with Reactor(transport_factory=webrtc_transport("http://runner.example:8765", token=TOKEN)) as reactor:
    ...                                  # the same calls, messages and numpy frames as over ws://
```

For a notebook far from the GPU: a 480x832 video takes about 0.3-0.5 Mbit/s as VP8 instead of
160 Mbit/s of raw RGB (docs/performance.md). Needs the `webrtc` extra (aiortc). The runner's
Reactor front (`longlive-runner serve` with the extra, docs/reactor-clients.md) takes the offer;
this client opens ONE data channel, labelled `longlive`, that carries this runner's own protocol
unchanged (docs/protocol.md: commands, replies, broadcasts), and receives the `main_video` track.
Each frame's header (`FrameHeader`: video frame, block, generation) comes on the channel as a
binary message `{"i": n, "h": {...}}` for the n-th frame of the track, whose timestamp is
n * 90000 / fps; frames are decoded to RGB and handed to the SDK as `(header, pixels)`.

What differs from the websocket: frames are lossy (VP8), and a block's `progress` may arrive
before its last frames (the track plays at the video's rate; the channel does not wait for it).
Signalling: the coordinator form of the runner's routes when a token is given (`POST /sessions`
with `Authorization: Bearer`), else the local form (`POST /start_session`); no STUN or TURN
server unless the runner's `ice_servers` lists some.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from .auth import token_from_env
from .errors import ConnectionClosedError
from .protocol import FrameHeader

__all__ = ["WebRTCTransport", "webrtc_transport"]

CHANNEL = "longlive"
VIDEO_CLOCK = 90_000
#: Decoded frames or headers waiting for their other half before the oldest are dropped.
MAX_UNPAIRED = 96
#: Items (texts, frames) waiting for `recv()`; past it the oldest frame is dropped.
MAX_QUEUED = 256

Received = str | tuple[FrameHeader, np.ndarray]


def _http(method: str, url: str, body: Any, token: str | None, timeout: float) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "Reactor-API-Version": "1",
        "Reactor-WebRTC-Version": "1.0",
    }
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise ConnectionClosedError(None, f"{method} {url}: {exc}") from None
    try:
        return status, json.loads(raw) if raw.strip() else None
    except ValueError:
        return status, None


class WebRTCTransport:
    """A `Transport` (the SDK's) over a WebRTC peer connection to a runner's Reactor front."""

    def __init__(self, pc: RTCPeerConnection, channel: Any, fps: float) -> None:
        self._pc = pc
        self._channel = channel
        self._fps = fps
        self._items: deque[Received] = deque()
        self._ready = asyncio.Event()
        self._headers: dict[int, FrameHeader] = {}
        self._frames: dict[int, np.ndarray] = {}
        self._closed: ConnectionClosedError | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.frames_received = 0

        @channel.on("message")  # type: ignore[untyped-decorator]
        def on_message(message: str | bytes) -> None:
            if isinstance(message, str):
                self._push(message)
            else:
                self._header(message)

        @channel.on("close")  # type: ignore[untyped-decorator]
        def on_close() -> None:
            self._lost("the data channel closed")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._lost(f"the peer connection is {pc.connectionState}")

    # --- opening --------------------------------------------------------------------------------
    @classmethod
    async def connect(cls, url: str, *, token: str | None = None, timeout: float = 30.0) -> WebRTCTransport:
        """Negotiate with the runner at `url` (http://host:port); `token` default `$LONGLIVE_TOKEN`."""
        token = token if token is not None else token_from_env()
        base = url.rstrip("/")
        if base.startswith("ws"):
            base = "http" + base[2:]

        async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            return await asyncio.to_thread(_http, method, base + path, body, token, timeout)

        if token is None:
            status, session = await call("POST", "/start_session", {})
        else:
            status, session = await call("POST", "/sessions", {"model": {"name": "longlive"}})
        if status not in (200, 201) or not isinstance(session, dict):
            raise ConnectionClosedError(None, f"the runner refused the session: HTTP {status} {session}")
        sid = session["session_id"]
        fps = float(session.get("capabilities", {}).get("emission_fps") or 16.0)
        prefix = f"/sessions/{sid}/transport/webrtc"
        status, servers = await call("GET", f"{prefix}/ice_servers")
        ice = [
            RTCIceServer(
                urls=s["uris"],
                username=(s.get("credentials") or {}).get("username"),
                credential=(s.get("credentials") or {}).get("password"),
            )
            for s in (servers or {}).get("ice_servers", [])
        ]
        status, reg = await call("POST", f"{prefix}/connections", {})
        if status != 201 or not isinstance(reg, dict):
            raise ConnectionClosedError(None, f"the runner refused a connection: HTTP {status} {reg}")
        cid = reg["connection_id"]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))  # an explicit list: no public STUN
        try:
            transceiver = pc.addTransceiver("video", direction="recvonly")
            channel = pc.createDataChannel(CHANNEL)
            transport = cls(pc, channel, fps)

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                if track.kind == "video":
                    transport._tasks.append(
                        asyncio.get_running_loop().create_task(transport._read_video(track))
                    )

            await pc.setLocalDescription(await pc.createOffer())
            mapping = [
                {"mid": transceiver.mid, "name": "main_video", "kind": "video", "direction": "recvonly"}
            ]
            status, body = await call(
                "POST",
                f"{prefix}/connections/{cid}/sdp_params",
                {"sdp_offer": pc.localDescription.sdp, "track_mapping": mapping},
            )
            if status != 202:
                raise ConnectionClosedError(None, f"the runner refused the offer: HTTP {status} {body}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            delay = 0.05
            while True:
                status, body = await call("GET", f"{prefix}/connections/{cid}/sdp_params")
                if status == 200 and isinstance(body, dict):
                    break
                if status != 202 or loop.time() > deadline:
                    raise ConnectionClosedError(None, f"no SDP answer: HTTP {status} {body}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp_answer"], type="answer"))
            opened = asyncio.Event()
            channel.on("open", opened.set)
            if channel.readyState != "open":
                await asyncio.wait_for(opened.wait(), max(1.0, deadline - loop.time()))
        except BaseException:
            await pc.close()
            raise
        return transport

    # --- receiving ------------------------------------------------------------------------------
    def _push(self, item: Received) -> None:
        self._items.append(item)
        if len(self._items) > MAX_QUEUED:  # drop the oldest frame (never a text)
            for i, queued in enumerate(self._items):
                if not isinstance(queued, str):
                    del self._items[i]
                    break
        self._ready.set()

    def _header(self, raw: bytes) -> None:
        try:
            obj = json.loads(raw)
            index, header = int(obj["i"]), FrameHeader(**obj["h"])
        except (ValueError, KeyError, TypeError):
            return
        self._headers[index] = header
        self._pair(index)

    async def _read_video(self, track: MediaStreamTrack) -> None:
        step = VIDEO_CLOCK / self._fps
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, VideoFrame) or frame.pts is None:
                    continue
                pts = frame.pts
                rgb = frame.to_ndarray(format="rgb24")
                index = round(pts / step)
                self._frames[index] = rgb
                self._pair(index)
        except MediaStreamError:
            self._lost("the video track ended")

    def _pair(self, index: int) -> None:
        if index in self._headers and index in self._frames:
            header, rgb = self._headers.pop(index), self._frames.pop(index)
            if rgb.shape[:2] != (header.height, header.width):
                return  # not the frame that header describes (a decoder hiccup): skipped
            self.frames_received += 1
            self._push((header, rgb))
        for pending in (self._headers, self._frames):
            while len(pending) > MAX_UNPAIRED:
                del pending[min(pending)]

    def _lost(self, reason: str) -> None:
        if self._closed is None:
            self._closed = ConnectionClosedError(None, reason)
            self._ready.set()

    async def recv(self) -> Received:
        while True:
            if self._items:
                return self._items.popleft()
            if self._closed is not None:
                raise self._closed
            self._ready.clear()
            await self._ready.wait()

    async def send_text(self, text: str) -> None:
        if self._closed is not None:
            raise self._closed
        if self._channel.readyState != "open":
            raise ConnectionClosedError(None, "the data channel is not open")
        self._channel.send(text)

    async def close(self) -> None:
        self._lost("closed by the client")
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self._pc.close()


def webrtc_transport(
    url: str, *, token: str | None = None, timeout: float = 30.0
) -> Callable[[], Awaitable[WebRTCTransport]]:
    """A `transport_factory` for `Reactor`: each call negotiates a new WebRTC connection."""

    async def factory() -> WebRTCTransport:
        return await WebRTCTransport.connect(url, token=token, timeout=timeout)

    return factory
