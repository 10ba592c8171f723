"""The WebRTC side of one Reactor connection (aiortc): a peer connection, its `control` and
`data` channels, and the `main_video` track fed from the runner's frames.

A `ReactorConnection` is one hub peer (`hub.Runner.attach`), like a websocket client: it gets the
same text messages and the same frames, and its commands go to the same session. Going out,
texts are translated (`vocabulary.Translator`) and framed (`framing.Codec`) on the data channels;
frames go to a `PacedVideoTrack` that hands them to aiortc's encoder (VP8, or H.264 when the
client prefers it) at the video's rate (16 fps for LongLive): the runner already generates at
most `lead_blocks` blocks ahead of playback (`--pace realtime`), the track plays them out in
real time. aiortc encodes once per connection (a viewer's own encoder follows its own
congestion control); see docs/reactor-clients.md.

Output tracks start paused (the Reactor convention) until the client sends `resume_track`; a
connection made on the flat route of JS SDK 2.9.0, which never sends it, starts resumed. While
the track is paused its frames are dropped, not buffered (on resume the client sees the live
video, not a stale backlog).

Bounds: one message from the client is at most `max_message_bytes` (longer, or not readable in
the connection's framing: the channel gets a `command_error` / v1 `Error`; more than
`max_bad_messages` of those: the connection is closed); commands are rate-limited per connection
(a token bucket); text not yet taken by the client (the data channel's `bufferedAmount`) is
bounded: past `max_buffered_bytes` the connection is closed, as the hub does to a slow websocket;
a client that takes its answer and never connects is dropped after `connect_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.sdp import candidate_from_sdp
from av import VideoFrame

from longlive.errors import ConnectionClosedError, ErrorCode, ProtocolError
from longlive.protocol import CommandErrorMessage, encode_message

from .framing import (
    CONTROL,
    DATA,
    NATIVE,
    Codec,
    Command,
    Framing,
    FramingError,
    Outgoing,
    Platform,
    TrackVerb,
)
from .schema import openapi_document
from .signalling import TRACK_NAME, Candidate, IceServer, Offer
from .vocabulary import Broadcast, Refusal, Reply, Translator

if TYPE_CHECKING:
    from ..hub import Peer, Runner

__all__ = ["MediaOptions", "PacedVideoTrack", "ReactorConnection"]

logger = logging.getLogger(__name__)

VIDEO_CLOCK = 90_000


@dataclass(frozen=True)
class MediaOptions:
    ice_servers: tuple[IceServer, ...] = ()
    max_message_bytes: int = 64 * 1024
    max_buffered_bytes: int = 4 * 2**20
    max_bad_messages: int = 32
    commands_per_second: float = 50.0
    command_burst: int = 100
    max_track_frames: int = 48
    #: Messages queued before the client's first message tells its framing (v0 / v1).
    max_unframed_messages: int = 64
    #: Seconds from the answer to a connected peer connection; then the connection is dropped.
    connect_timeout: float = 30.0


def rtc_configuration(servers: tuple[IceServer, ...]) -> RTCConfiguration:
    """An explicit server list, even empty: aiortc's default is a public STUN server."""
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in servers
        ]
    )


class PacedVideoTrack(VideoStreamTrack):
    """The `main_video` track: frames put by the connection, played out at `fps`."""

    kind = "video"

    def __init__(self, fps: float, *, max_frames: int = 48) -> None:
        super().__init__()
        self.fps = fps
        self._frames: deque[tuple[np.ndarray, Any]] = deque(maxlen=max_frames)
        #: Set for a native (our protocol) connection: frame i goes out with pts i * (clock / fps),
        #: and `on_output(i, header)` is called as it goes, so the client pairs frames and headers.
        self.on_output: Callable[[int, Any], None] | None = None
        self._ready = asyncio.Event()
        self.paused = True
        self.frames_sent = 0
        self.frames_dropped = 0
        self._t0: float | None = None
        self._next_at = 0.0

    def put(self, rgb: np.ndarray, header: Any = None) -> None:
        if self.paused or self.readyState != "live":
            self.frames_dropped += 1
            return
        if len(self._frames) == self._frames.maxlen:
            self.frames_dropped += 1
        self._frames.append((rgb, header))
        self._ready.set()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            self.frames_dropped += len(self._frames)
            self._frames.clear()

    def drop_queued(self) -> None:
        self.frames_dropped += len(self._frames)
        self._frames.clear()

    async def recv(self) -> VideoFrame:
        while not self._frames:
            if self.readyState != "live":
                from aiortc.mediastreams import MediaStreamError

                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        if now < self._next_at:  # pace: one frame per 1/fps
            await asyncio.sleep(self._next_at - now)
            now = time.monotonic()
        self._next_at = max(now, self._next_at) + 1.0 / self.fps
        if not self._frames:  # cleared while waiting (pause, reset): look again
            return await self.recv()
        rgb, header = self._frames.popleft()
        frame = VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if self.on_output is not None:
            frame.pts = self.frames_sent * round(VIDEO_CLOCK / self.fps)
            self.on_output(self.frames_sent, header)
        else:
            frame.pts = int((now - self._t0) * VIDEO_CLOCK)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class _Bucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ReactorConnection:
    """One Reactor client's peer connection, attached to the runner as a hub peer."""

    def __init__(
        self,
        runner: Runner,
        offer: Offer,
        *,
        options: MediaOptions,
        fps: float,
        on_closed: Callable[[ReactorConnection], None],
        name: str | None = None,
    ) -> None:
        self.runner = runner
        self.connection_id = offer.connection_id
        self.epoch = offer.epoch
        self.offer = offer
        self.options = options
        self.name = name or f"reactor-{offer.connection_id}"
        self._on_closed = on_closed
        self.pc = RTCPeerConnection(rtc_configuration(options.ice_servers))
        self.track = PacedVideoTrack(fps, max_frames=options.max_track_frames)
        self.codec = Codec(Framing.V0 if offer.flat else None, max_message_bytes=options.max_message_bytes)
        self.translator = Translator(prefix=f"rc{offer.connection_id}.")
        self.channels: dict[str, RTCDataChannel] = {}
        self._unframed: deque[Any] = deque()
        #: "reactor" (the `control` / `data` channels: Reactor's clients) or "native" (one
        #: `longlive` channel carrying this runner's own protocol: `longlive.webrtc`); None until
        #: the client's first channel arrives. Texts from the runner wait for it (bounded).
        self.mode: str | None = None
        self._raw_held: deque[str] = deque()
        self._native_unsent: list[str] = []
        self._bucket = _Bucket(options.commands_per_second, options.command_burst)
        self.bad_messages = 0
        self.closed = False
        self.close_reason = ""
        self.peer: Peer | None = None
        self._pump: asyncio.Task[None] | None = None
        self._remote_set = False
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue(maxsize=max(8, 2 * options.command_burst))
        self._consumer: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._waiting_candidates: list[Candidate] = []
        self.track.set_paused(not offer.flat)  # the flat route's client never sends resume_track
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_state)

    def __repr__(self) -> str:
        return f"<ReactorConnection {self.connection_id} epoch {self.epoch}>"

    # --- negotiation ----------------------------------------------------------------------------
    async def negotiate(self, early: list[Candidate]) -> str:
        """Apply the offer, attach the track, make the answer (host candidates gathered)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.offer.sdp, type="offer"))
        self._remote_set = True
        mids = [t.mid for t in self.offer.tracks if t.name == TRACK_NAME and t.kind == "video"]
        video = [t for t in self.pc.getTransceivers() if t.kind == "video"]
        chosen = next((t for t in video if mids and t.mid == mids[0]), video[0] if video else None)
        if chosen is None:
            raise ValueError("the offer has no video m-section for main_video")
        chosen.sender.replaceTrack(self.track)
        chosen.direction = "sendonly"
        for other in video:
            if other is not chosen:
                other.direction = "inactive"
        waiting, self._waiting_candidates = [*early, *self._waiting_candidates], []
        for cand in waiting:
            with contextlib.suppress(ValueError):  # a bad one was the client's; the rest may do
                await self.add_candidate(cand)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self.peer = self.runner.attach(self.name)
        if self.peer.closed:
            raise ConnectionClosedError(self.peer.close_code, self.peer.close_reason)
        self._pump = asyncio.get_running_loop().create_task(
            self._pump_peer(self.peer), name=f"{self.name}-pump"
        )
        self._watchdog = asyncio.get_running_loop().call_later(
            self.options.connect_timeout, self._check_connected
        )
        sdp: str = self.pc.localDescription.sdp
        return sdp

    async def add_candidate(self, cand: Candidate) -> None:
        """A trickled remote candidate (held until the offer is applied; the signalling bounds
        how many a connection may send). ValueError when it cannot be read."""
        if not self._remote_set:
            self._waiting_candidates.append(cand)
            return
        text = cand.candidate.strip()
        if text.startswith("a="):
            text = text[2:]
        if text.startswith("candidate:"):
            text = text[len("candidate:") :]
        if not text:  # end of candidates
            return
        try:
            ice = candidate_from_sdp(text)
        except (AssertionError, ValueError, IndexError) as exc:
            raise ValueError(f"not an ICE candidate: {cand.candidate[:80]!r}") from exc
        ice.sdpMid = cand.sdp_mid
        ice.sdpMLineIndex = cand.sdp_mline_index
        if ice.sdpMid is None and ice.sdpMLineIndex is None:
            ice.sdpMLineIndex = 0
        await self.pc.addIceCandidate(ice)

    # --- lifecycle ----------------------------------------------------------------------------
    def _check_connected(self) -> None:
        """An answered offer whose client never connects must not hold a slot of the runner."""
        self._watchdog = None
        if not self.closed and self.pc.connectionState != "connected":
            asyncio.get_running_loop().create_task(
                self.close(f"not connected within {self.options.connect_timeout:g} s of the answer")
            )

    def _on_state(self) -> None:
        state = self.pc.connectionState
        logger.info("%s: peer connection %s", self.name, state)
        if state in ("failed", "closed"):
            asyncio.get_running_loop().create_task(self.close(f"peer connection {state}"))

    async def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self.peer is not None:
            self.runner.detach(self.peer, 1000, reason)
        for task in (self._pump, self._consumer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self.track.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        self._on_closed(self)

    async def end_session(self, reason: str) -> None:
        """Tell the client its session ended, then close (runner shutdown)."""
        with contextlib.suppress(Exception):
            if self.codec.framing is not None:
                self._send(self.codec.encode_session_ended(reason))
        await self.close(reason)

    # --- runner -> client -----------------------------------------------------------------------
    async def _pump_peer(self, peer: Peer) -> None:
        try:
            while True:
                item = await peer.get()
                if isinstance(item, str):
                    self._runner_text(item)
                else:
                    self.track.put(item.rgb, item.header)
        except ConnectionClosedError as exc:
            if not self.closed:
                await self.close(f"the runner closed the connection: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug must not leave the peer connection open
            logger.exception("%s: sending failed", self.name)
            await self.close("internal error")

    def _runner_text(self, text: str) -> None:
        if self.mode is None:
            self._raw_held.append(text)
            # keep `hello` (the first), drop the oldest of the rest past the bound
            while len(self._raw_held) > self.options.max_unframed_messages:
                first = self._raw_held.popleft()
                self._raw_held.popleft()
                self._raw_held.appendleft(first)
        elif self.mode == NATIVE:
            self._send((NATIVE, text))
        else:
            for out in self.translator.translate(text):
                self._emit(out)

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == NATIVE:
            self.track.set_paused(False)  # our protocol has no resume_track
            self.track.on_output = self._frame_out
        held, self._raw_held = list(self._raw_held), deque()
        for text in held:
            self._runner_text(text)

    def _frame_out(self, index: int, header: Any) -> None:
        """A native connection: frame `index` of the track goes out; its header follows on the
        `longlive` channel, as a binary JSON message {"i", "h"} (docs/reactor-clients.md)."""
        if header is None:
            return
        self._send((NATIVE, json.dumps({"i": index, "h": dataclasses.asdict(header)}).encode()))

    def _emit(self, out: Broadcast | Reply | Refusal) -> None:
        if self.codec.framing is None:  # the client has not said how it frames: hold (bounded)
            self._unframed.append(out)
            while len(self._unframed) > self.options.max_unframed_messages:
                self._unframed.popleft()
            return
        if isinstance(out, Broadcast):
            self._send(self.codec.encode_message(out.type, out.data))
        elif isinstance(out, Reply):
            encoded = self.codec.encode_reply(out.request_id, out.type, out.data)
            if encoded is not None:
                self._send(encoded)
            elif out.type == "state" and self.codec.framing is Framing.V0:
                self._send(self.codec.encode_message("state", out.data))  # v0 get_state
        else:
            self._send(self.codec.encode_refusal(out.request_id, out.command, out.code, out.reason))

    def _send(self, out: Outgoing | None) -> None:
        if out is None or self.closed:
            return
        label, payload = out
        channel = self.channels.get(label) or (self.channels.get(DATA) if label == CONTROL else None)
        if channel is None or channel.readyState != "open":
            if label == NATIVE and channel is not None and isinstance(payload, str):
                self._native_unsent.append(payload)  # before the channel opened: hello, state
                del self._native_unsent[: -self.options.max_unframed_messages]
            return
        if channel.bufferedAmount > self.options.max_buffered_bytes:
            asyncio.get_running_loop().create_task(
                self.close(f"client too slow: more than {self.options.max_buffered_bytes} bytes not read")
            )
            return
        channel.send(payload)

    # --- client -> runner -----------------------------------------------------------------------
    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        label = channel.label if channel.label in (CONTROL, DATA, NATIVE) else DATA
        mode = NATIVE if label == NATIVE else "reactor"
        if label in self.channels or (self.mode is not None and self.mode != mode):
            channel.close()  # a second channel of one label, or of the other protocol: not ours
            return
        self.channels[label] = channel
        if self.mode is None:
            self._set_mode(mode)

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            self._on_message(label, message)

        @channel.on("open")
        def on_open() -> None:
            self._flush_open()

        if channel.readyState == "open":
            self._flush_open()

    def _flush_open(self) -> None:
        if self.mode == NATIVE:
            held, self._native_unsent = self._native_unsent, []
            for text in held:
                self._send((NATIVE, text))
        else:
            self._flush_unframed()

    def _flush_unframed(self) -> None:
        if self.codec.framing is None:
            return
        held, self._unframed = list(self._unframed), deque()
        for out in held:
            self._emit(out)

    def _on_message(self, label: str, message: str | bytes) -> None:
        if self.closed or self.peer is None:
            return
        if label == NATIVE:
            self._native_message(message)
            return
        first = self.codec.framing is None
        try:
            inbound = self.codec.decode(label, message)
        except FramingError as exc:
            self._bad(str(exc))
            return
        finally:
            if first and self.codec.framing is not None:
                self._flush_unframed()
        if isinstance(inbound, Command):
            self._command(inbound)
        elif isinstance(inbound, TrackVerb):
            self._track_verb(inbound)
        else:
            self._platform(inbound)

    def _native_message(self, message: str | bytes) -> None:
        """Our protocol verbatim: the session parses, validates and answers (docs/protocol.md)."""
        assert self.peer is not None
        size = len(message.encode("utf-8")) if isinstance(message, str) else len(message)
        if size > self.options.max_message_bytes:
            self._bad(f"message of {size} bytes, the limit is {self.options.max_message_bytes}")
            return
        if not self._bucket.take():
            self._send((NATIVE, encode_message(CommandErrorMessage(
                command=None, code="rate_limited",
                reason=f"more than {self.options.commands_per_second:g} commands per second",
            ))))  # fmt: skip
            return
        self._deliver(message, None, None)

    def _deliver(self, message: str | bytes, request_id: str | None, command: str | None) -> None:
        """Hand a command to the runner, in the order received: `Runner.receive` (a long
        prompt is analysed off the event loop first), one at a time, by this connection's task."""
        if self._inbox.full():  # the bucket keeps far below this; a bound all the same
            reason = "too many commands waiting"
            if self.mode == NATIVE:
                self._send((NATIVE, encode_message(CommandErrorMessage(command, "rate_limited", reason))))
            else:
                self._send(self.codec.encode_refusal(request_id, command, "rate_limited", reason))
            return
        self._inbox.put_nowait(message)
        if self._consumer is None:
            self._consumer = asyncio.get_running_loop().create_task(self._consume(), name=f"{self.name}-in")

    async def _consume(self) -> None:
        while not self.closed:
            message = await self._inbox.get()
            peer = self.peer
            if peer is None or self.closed:
                return
            before = self.runner.session.generation
            if isinstance(message, str):
                await self.runner.receive(peer, message)
            else:
                self.runner.receive_binary(peer, message)
            if self.runner.session.generation != before:
                self.track.drop_queued()  # a reset: frames of the old video not yet played

    def _bad(self, reason: str) -> None:
        self.bad_messages += 1
        logger.info("%s: bad message: %s", self.name, reason)
        if self.mode == NATIVE:
            self._send(
                (NATIVE, encode_message(CommandErrorMessage(None, ErrorCode.MESSAGE_TOO_LARGE, reason)))
            )
        else:
            self._send(self.codec.encode_refusal(None, None, ErrorCode.BAD_JSON, reason))
        if self.bad_messages > self.options.max_bad_messages:
            asyncio.get_running_loop().create_task(
                self.close(f"more than {self.options.max_bad_messages} bad messages")
            )

    def _command(self, cmd: Command) -> None:
        assert self.peer is not None
        if not self._bucket.take():
            self._send(
                self.codec.encode_refusal(
                    cmd.request_id,
                    cmd.command,
                    "rate_limited",
                    f"more than {self.options.commands_per_second:g} commands per second",
                )
            )
            return
        try:
            text = self.translator.command_text(cmd)
        except ProtocolError as exc:
            self._send(self.codec.encode_refusal(cmd.request_id, cmd.command, exc.code, exc.reason))
            return
        self._deliver(text, cmd.request_id, cmd.command)

    def _track_verb(self, verb: TrackVerb) -> None:
        if verb.verb in ("pause_track", "resume_track"):
            if verb.track == TRACK_NAME:
                self.track.set_paused(verb.verb == "pause_track")
            return
        if verb.verb == "publish_track":
            self._send(
                self.codec.encode_publish_response(
                    verb.request_id, verb.track, ("not_supported", "this model takes no input tracks")
                )
            )

    def _platform(self, req: Platform) -> None:
        if req.name == "ping":
            self._send(self.codec.encode_platform_ack(req.request_id))
        elif req.name == "request_schema":
            self._send(self.codec.encode_schema(req.request_id, openapi_document(self.runner.limits)))
        else:
            self._send(
                self.codec.encode_platform_error(
                    req.request_id,
                    req.name,
                    "not_supported",
                    f"{req.name} is not supported by longlive-runner",
                )
            )
