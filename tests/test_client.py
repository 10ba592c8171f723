"""The client SDK against a scripted in-memory transport (no runner, no torch)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import longlive
from _fresh_python import fresh_python
from longlive import (
    CallbackError,
    CommandError,
    CommandTimeoutError,
    ConnectError,
    ConnectionClosedError,
    Frame,
    GenerationFinished,
    InvalidStateError,
    Progress,
    PromptSwitched,
    ProtocolError,
    Reactor,
    State,
    UnknownMessage,
)
from longlive.protocol import FrameHeader, encode_frame, encode_message
from longlive.protocol.runner import hello_for

H, W = 4, 6


class FakeTransport:
    """A transport whose incoming side the test scripts; `sent` records every command."""

    def __init__(self, responder: Callable[[FakeTransport, dict[str, Any]], None] | None = None) -> None:
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self.responder = responder

    async def send_text(self, text: str) -> None:
        if self.closed:
            raise ConnectionClosedError(1000, "closed")
        msg = json.loads(text)
        self.sent.append(msg)
        if self.responder is not None:
            self.responder(self, msg)

    async def recv(self) -> Any:
        item = await self.incoming.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.incoming.put_nowait(ConnectionClosedError(1000, "closed by the client"))

    # --- scripting -----------------------------------------------------------------------------
    def push(self, type: str, data: dict[str, Any] | None = None, id: str | None = None) -> None:
        obj: dict[str, Any] = {"type": type, "data": data or {}}
        if id is not None:
            obj["id"] = id
        self.incoming.put_nowait(json.dumps(obj))

    def push_msg(self, msg: Any) -> None:
        self.incoming.put_nowait(encode_message(msg))

    def greet(self, generation: int = 0, current_start_frame: int = 0, version: int = 1) -> None:
        hello = hello_for(height=H, width=W).to_data()
        hello["protocol_version"] = version
        self.push("hello", hello)
        self.push_msg(state(generation=generation, current_start_frame=current_start_frame))

    def push_frame(self, video_frame: int, generation: int = 0, block_start: int = 0, value: int = 0) -> None:
        header = FrameHeader(video_frame, block_start, 0, 1, H, W, generation)
        self.incoming.put_nowait((header, np.full((H, W, 3), value % 256, np.uint8)))

    def drop(self, code: int = 1006, reason: str = "gone") -> None:
        self.incoming.put_nowait(ConnectionClosedError(code, reason))

    def commands(self, type: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.sent if type is None or m["type"] == type]


def state(**kw: Any) -> State:
    values: dict[str, Any] = {
        "generation": 0,
        "running": False,
        "paused": False,
        "current_start_frame": 0,
        "video_frame": 0,
    }
    values.update(kw)
    return State(**values)


def auto_ack(t: FakeTransport, msg: dict[str, Any]) -> None:
    """A well-behaved runner: ack every command, then a `state` for state-changing ones."""
    result: dict[str, Any] = {"command": msg["type"]}
    if msg["type"] == "schedule_prompt":
        ts = msg["data"]["timestamp"]
        result.update(
            timestamp=ts,
            requested_timestamp=ts,
            effective_frame=-(-ts // 3) * 3,
            effective_video_frame=0,
            replaced_prompt=None,
            warnings=[],
        )
        t.push("ack", result, msg["id"])
        t.push_msg(state(scheduled_prompts={ts: msg["data"]["new_prompt"]}))
    elif msg["type"] == "get_state":
        t.push("ack", {**result, **state(current_start_frame=42).to_data()}, msg["id"])
    elif msg["type"] == "reset":
        t.push("ack", {**result, "generation": 1}, msg["id"])
        t.push_msg(state(generation=1))
    else:
        fields = {
            "start": {"generation": 0, "seed": msg["data"].get("seed", 0)},
            "pause": {"effective_frame": 3},
            "resume": {"current_start_frame": 3},
            "remove_prompt": {"timestamp": msg["data"].get("timestamp"), "removed_prompt": "a fox"},
        }
        t.push("ack", {**result, **fields.get(msg["type"], {})}, msg["id"])
        t.push_msg(state(running=True))


def factory(t: FakeTransport) -> Callable[[], Any]:
    async def open_transport() -> FakeTransport:
        return t

    return open_transport


async def connected(t: FakeTransport | None = None, **kw: Any) -> tuple[Reactor, FakeTransport]:
    t = t or FakeTransport(auto_ack)
    t.greet()
    kw.setdefault("command_timeout", 2.0)
    reactor = Reactor(transport_factory=factory(t), **kw)
    await reactor.connect()
    return reactor, t


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


# ----------------------------------------------------------------------------------------------
# Connecting
# ----------------------------------------------------------------------------------------------
async def test_connect_waits_for_hello_and_state() -> None:
    t = FakeTransport()
    reactor = Reactor(transport_factory=factory(t))
    statuses: list[str] = []
    reactor.on_status(statuses.append)
    assert reactor.status == "disconnected"
    with pytest.raises(InvalidStateError):
        reactor.hello  # noqa: B018
    task = asyncio.create_task(reactor.connect())
    await settle()
    assert reactor.status == "connecting" and not task.done()
    t.push("hello", hello_for(height=H, width=W).to_data())
    await settle()
    assert not task.done(), "ready only once the first state arrived"
    t.push_msg(state(generation=3, current_start_frame=9, running=True))
    assert await task is reactor
    assert reactor.status == "ready" and reactor.connected
    assert reactor.hello.height == H and reactor.hello.fps == 16
    assert reactor.state.generation == 3 and reactor.generation == 3
    assert reactor.current_start_frame == 9
    await reactor.close()
    assert statuses == ["connecting", "ready", "disconnected"]
    assert t.closed


async def test_protocol_version_mismatch_refused() -> None:
    t = FakeTransport()
    t.greet(version=2)
    reactor = Reactor(transport_factory=factory(t))
    with pytest.raises(ProtocolError, match="protocol version 2"):
        await reactor.connect()
    assert reactor.status == "disconnected" and t.closed


async def test_connect_timeout() -> None:
    t = FakeTransport()
    reactor = Reactor(transport_factory=factory(t), connect_timeout=0.05)
    with pytest.raises(CommandTimeoutError) as info:
        await reactor.connect()
    assert isinstance(info.value, TimeoutError)
    assert reactor.status == "disconnected" and t.closed


async def test_constructor_arguments_checked() -> None:
    with pytest.raises(ValueError):
        Reactor()
    with pytest.raises(ValueError):
        Reactor("ws://x", transport_factory=factory(FakeTransport()))
    with pytest.raises(ValueError):
        Reactor("ws://x", frame_policy="drop_newest")  # type: ignore[arg-type]


async def test_command_without_connection_is_refused_not_dropped() -> None:
    reactor = Reactor(transport_factory=factory(FakeTransport()))
    with pytest.raises(InvalidStateError, match="not connected"):
        await reactor.start()
    with pytest.raises(InvalidStateError):
        await reactor.frames().__anext__()


async def test_command_sent_while_connecting_waits_for_ready() -> None:
    t = FakeTransport(auto_ack)
    reactor = Reactor(transport_factory=factory(t))
    connect = asyncio.create_task(reactor.connect())
    await settle()
    command = asyncio.create_task(reactor.schedule_prompt("a fox", 0))
    await settle()
    assert t.sent == [], "nothing is sent before the runner greeted"
    t.greet()
    scheduled = await command
    await connect
    assert scheduled.timestamp == 0
    assert t.commands("schedule_prompt")[0]["data"] == {"new_prompt": "a fox", "timestamp": 0}
    await reactor.close()


# ----------------------------------------------------------------------------------------------
# Commands and replies
# ----------------------------------------------------------------------------------------------
async def test_request_ids_match_replies_out_of_order() -> None:
    t = FakeTransport()
    reactor, _ = await connected(t)
    first = asyncio.create_task(reactor.send_message("get_state"))
    second = asyncio.create_task(reactor.send_message("custom_thing", {"x": 1}))
    await settle()
    ids = [m["id"] for m in t.sent]
    assert len(set(ids)) == 2 and all(isinstance(i, str) and i for i in ids)
    assert t.sent[1] == {"type": "custom_thing", "data": {"x": 1}, "id": ids[1]}
    t.push("ack", {"command": "custom_thing", "answer": 2}, ids[1])
    t.push("ack", {"command": "get_state", **state(current_start_frame=6).to_data()}, ids[0])
    assert await second == {"answer": 2}
    assert (await first)["current_start_frame"] == 6
    await reactor.close()


async def test_typed_commands_and_results() -> None:
    reactor, t = await connected()
    scheduled = await reactor.schedule_prompt("a fox", 4)
    assert (scheduled.timestamp, scheduled.effective_frame, scheduled.rekeyed) == (4, 6, False)
    # the state broadcast that follows the ack is applied before the command returns
    assert reactor.state.scheduled_prompts == {4: "a fox"}
    assert await reactor.start(seed=7) == longlive.StartResult(generation=0, seed=7)
    assert t.commands("start")[0]["data"] == {"seed": 7}
    assert reactor.state.running
    assert (await reactor.pause()).effective_frame == 3
    assert (await reactor.resume()).current_start_frame == 3
    assert (await reactor.get_state()).current_start_frame == 42
    assert reactor.current_start_frame == 42
    assert (await reactor.reset()).generation == 1
    assert reactor.generation == 1 and reactor.state.generation == 1
    assert [m["type"] for m in t.sent] == [
        "schedule_prompt",
        "start",
        "pause",
        "resume",
        "get_state",
        "reset",
    ]
    await reactor.close()


async def test_command_error_carries_code_reason_and_id() -> None:
    def refuse(t: FakeTransport, msg: dict[str, Any]) -> None:
        t.push(
            "command_error",
            {"command": msg["type"], "code": "no_initial_prompt", "reason": "schedule a prompt at 0"},
            msg["id"],
        )

    reactor, t = await connected(FakeTransport(refuse))
    with pytest.raises(CommandError) as info:
        await reactor.start()
    err = info.value
    assert (err.code, err.command, err.id) == ("no_initial_prompt", "start", t.sent[0]["id"])
    assert "schedule a prompt at 0" in str(err)
    await reactor.close()


async def test_timeout_raises_command_timeout_error() -> None:
    reactor, t = await connected(FakeTransport(), command_timeout=0.05)
    with pytest.raises(CommandTimeoutError) as info:
        await reactor.pause()
    assert isinstance(info.value, TimeoutError)
    assert info.value.command == "pause" and info.value.id == t.sent[0]["id"]
    with pytest.raises(TimeoutError):
        await reactor.send_message("start", timeout=0.01)
    # a late reply is harmless, and the client keeps working
    t.push("ack", {"command": "pause", "effective_frame": 3}, t.sent[0]["id"])
    t.responder = auto_ack
    await settle()
    assert (await reactor.get_state()).current_start_frame == 42
    await reactor.close()


async def test_ack_is_returned_even_if_the_following_state_is_late() -> None:
    def ack_only(t: FakeTransport, msg: dict[str, Any]) -> None:
        t.push("ack", {"command": msg["type"], "effective_frame": 9}, msg["id"])

    reactor, _ = await connected(FakeTransport(ack_only), command_timeout=0.05)
    assert (await reactor.pause()).effective_frame == 9
    await reactor.close()


# ----------------------------------------------------------------------------------------------
# Callbacks
# ----------------------------------------------------------------------------------------------
async def test_sync_async_and_decorator_callbacks() -> None:
    reactor, t = await connected()
    seen: list[Any] = []
    reactor.on_progress(lambda p: seen.append(("sync", p.current_start_frame)))

    @reactor.on("prompt_switched")
    async def switched(msg: PromptSwitched) -> None:
        await asyncio.sleep(0)
        seen.append(("async", msg.new_prompt))

    @reactor.on_generation_finished
    def finished(msg: GenerationFinished) -> None:
        seen.append(("finished", msg.reason))

    everything: list[str] = []
    reactor.on("*", lambda m: everything.append(m.type))
    t.push_msg(Progress(3, 9))
    t.push_msg(PromptSwitched(6, 21, "b", "a"))
    t.push_msg(GenerationFinished("max_frames", 9, 33))
    await settle()
    assert seen == [("sync", 3), ("async", "b"), ("finished", "max_frames")]
    assert everything == ["progress", "prompt_switched", "generation_finished"]
    assert switched.__name__ == "switched"  # the decorators return the function

    reactor.off("progress")
    reactor.off(finished)
    t.push_msg(Progress(6, 21))
    t.push_msg(GenerationFinished("reset", 9, 33))
    await settle()
    assert seen == [("sync", 3), ("async", "b"), ("finished", "max_frames")]
    await reactor.close()


async def test_async_callbacks_do_not_block_the_reader() -> None:
    reactor, t = await connected()
    release = asyncio.Event()
    order: list[int] = []

    @reactor.on_progress
    async def slow(p: Progress) -> None:
        await release.wait()
        order.append(p.current_start_frame)

    t.push_msg(Progress(3, 9))
    t.push_msg(Progress(6, 21))
    await settle()
    assert reactor.current_start_frame == 6, "the reader went on"
    assert (await reactor.get_state()).current_start_frame == 42, "replies are not held up"
    release.set()
    await settle()
    assert order == [3, 6], "async callbacks run in order"
    await reactor.close()


async def test_raising_callback_goes_to_on_error() -> None:
    errors: list[BaseException] = []
    reactor, t = await connected(on_error=errors.append)

    @reactor.on_progress
    def bad(p: Progress) -> None:
        raise ValueError("boom")

    @reactor.on("state")
    async def bad_async(s: State) -> None:
        raise KeyError("async boom")

    t.push_msg(Progress(3, 9))
    t.push_msg(state(current_start_frame=3))
    await settle()
    assert [type(e.error) for e in errors] == [ValueError, KeyError]  # type: ignore[attr-defined]
    first = errors[0]
    assert isinstance(first, CallbackError) and first.event == "progress" and first.callback is bad
    assert isinstance(first.__cause__, ValueError)
    assert reactor.current_start_frame == 3, "the reader survived"
    await reactor.get_state()  # nothing pending: no raise
    await reactor.close()


async def test_raising_callback_without_handler_is_logged_and_kept_never_raised_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reactor, t = await connected()
    assert reactor.callback_error is None
    reactor.on("progress", lambda p: 1 / 0)
    reactor.on("state", lambda s: {}["missing"])
    with caplog.at_level(logging.ERROR, logger="longlive"):
        t.push_msg(Progress(3, 9))
        t.push_msg(state(current_start_frame=3))
        await settle()
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert [type(r.exc_info[1]) for r in logged] == [CallbackError, CallbackError]  # type: ignore[index]
    assert "ZeroDivisionError" in logged[0].getMessage()
    # the next, unrelated calls are not disturbed: the command is sent and answered
    assert (await reactor.get_state()).current_start_frame == 42
    assert t.commands("get_state")
    t.push_frame(0)
    assert (await reactor.frames().__anext__()).index == 0
    # the first unhandled callback error is kept for the program to look at
    kept = reactor.callback_error
    assert isinstance(kept, CallbackError) and kept.event == "progress"
    assert isinstance(kept.error, ZeroDivisionError)
    await reactor.close()


async def test_unknown_and_malformed_messages_never_crash() -> None:
    errors: list[BaseException] = []
    reactor, t = await connected(on_error=errors.append)
    got: list[UnknownMessage] = []
    reactor.on("scene_cut", got.append)
    stream = reactor.messages("scene_cut", "progress")
    t.push("scene_cut", {"frame": 12, "extra": [1, 2]})
    t.incoming.put_nowait("{not json")
    t.push("progress", {"current_start_frame": "three"})  # a known type with a wrong field
    t.push_msg(Progress(3, 9))
    await settle()
    assert len(got) == 1 and got[0].type == "scene_cut" and got[0].data == {"frame": 12, "extra": [1, 2]}
    assert [e.code for e in errors] == ["bad_json", "bad_field"]  # type: ignore[attr-defined]
    assert reactor.current_start_frame == 3
    assert (await stream.__anext__()).type == "scene_cut"
    assert isinstance(await stream.__anext__(), Progress)
    await reactor.close()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_wait_for_message() -> None:
    reactor, t = await connected()
    waiter = asyncio.create_task(
        reactor.wait_for("progress", lambda p: p.current_start_frame >= 6, timeout=2)
    )
    await settle()
    t.push_msg(Progress(3, 9))
    t.push_msg(Progress(6, 21))
    assert (await waiter).current_start_frame == 6  # type: ignore[attr-defined]
    with pytest.raises(TimeoutError):
        await reactor.wait_for("never", timeout=0.01)
    await reactor.close()


async def test_runner_side_drops_are_counted() -> None:
    reactor, t = await connected()
    t.push("frames_dropped", {"count": 5, "total": 5})
    t.push("frames_dropped", {"count": 2, "total": 7})
    await settle()
    assert reactor.frames_dropped_by_runner == 7
    await reactor.close()


# ----------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------
async def test_frames_are_typed_and_read_only() -> None:
    reactor, t = await connected()
    seen: list[Frame] = []
    reactor.on_frame(seen.append)
    header = FrameHeader(21, 6, 0, 12, H, W, 0)
    t.incoming.put_nowait((header, np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)))
    t.incoming.put_nowait(encode_frame(FrameHeader(22, 6, 1, 12, H, W, 0), np.ones((H, W, 3), np.uint8)))
    frames = reactor.frames()
    first, second = await frames.__anext__(), await frames.__anext__()
    assert (first.index, first.start_frame, first.index_in_block, first.frames_in_block) == (21, 6, 0, 12)
    assert first.seconds == 21 / 16 and (first.height, first.width) == (H, W)
    assert first.image.dtype == np.uint8 and first.image.shape == (H, W, 3)
    assert not first.image.flags.writeable
    assert second.index == 22 and second.image.sum() == H * W * 3
    assert seen == [first, second]
    assert reactor.frames_received == 2
    await reactor.close()


async def test_drop_oldest_policy_counts_dropped_frames() -> None:
    reactor, t = await connected(max_buffered_frames=4)
    for i in range(10):
        t.push_frame(i)
    t.push_msg(Progress(3, 10))
    await settle()
    assert reactor.current_start_frame == 3, "the reader never waits for the consumer"
    assert reactor.frames_dropped == 6 and reactor.frames_buffered == 4
    await reactor.close()
    assert [f.index async for f in reactor.frames()] == [6, 7, 8, 9], "close ends after the buffer"


async def test_block_policy_loses_nothing() -> None:
    reactor, t = await connected(max_buffered_frames=2, frame_policy="block")
    for i in range(6):
        t.push_frame(i)
    await settle()
    assert reactor.frames_buffered == 2 and reactor.frames_received == 3, "the reader waits"
    got = []
    async for frame in reactor.frames():
        got.append(frame.index)
        if frame.index == 5:
            break
    assert got == list(range(6)) and reactor.frames_dropped == 0
    await reactor.close()


async def test_no_buffer_mode_still_feeds_callbacks() -> None:
    reactor, t = await connected(max_buffered_frames=0)
    seen: list[int] = []
    reactor.on_frame(lambda f: seen.append(f.index))
    for i in range(3):
        t.push_frame(i)
    await settle()
    assert seen == [0, 1, 2] and reactor.frames_dropped == 0
    with pytest.raises(InvalidStateError):
        await reactor.frames().__anext__()
    await reactor.close()


async def test_frames_end_with_connection_closed_error_on_drop() -> None:
    errors: list[BaseException] = []
    reactor, t = await connected(FakeTransport(), on_error=errors.append)
    pending = asyncio.create_task(reactor.pause())
    await settle()
    t.push_frame(0)
    t.push_frame(1)
    t.drop(1011, "runner crashed")
    got = []
    with pytest.raises(ConnectionClosedError) as info:
        async for frame in reactor.frames():
            got.append(frame.index)
    assert got == [0, 1], "frames received before the drop are delivered first"
    assert (info.value.code, info.value.reason) == (1011, "runner crashed")
    with pytest.raises(ConnectionClosedError):
        await pending
    assert reactor.status == "disconnected"
    assert [type(e) for e in errors] == [ConnectionClosedError]
    with pytest.raises(ConnectionClosedError, match="runner crashed"):
        await reactor.start()
    await reactor.close()


async def test_frames_end_normally_on_close() -> None:
    reactor, t = await connected()

    async def consume() -> list[int]:
        return [f.index async for f in reactor.frames()]

    consumer = asyncio.create_task(consume())
    t.push_frame(0)
    await settle()
    await reactor.close()
    assert await asyncio.wait_for(consumer, 1) == [0]


async def test_reset_discards_frames_of_the_old_generation() -> None:
    reactor, t = await connected()
    for i in range(5):
        t.push_frame(i, generation=0)
    await settle()
    assert reactor.frames_buffered == 5
    assert (await reactor.reset()).generation == 1
    assert reactor.frames_buffered == 0, "the backlog is flushed when reset returns"
    t.push_frame(5, generation=0)  # stale: must never be yielded
    t.push_frame(0, generation=1)
    frames = reactor.frames()
    frame = await frames.__anext__()
    assert (frame.index, frame.generation) == (0, 1)
    await reactor.close()


async def test_wait_for_frame() -> None:
    reactor, t = await connected()
    waiter = asyncio.create_task(reactor.wait_for_frame(6, timeout=2))
    t.push_msg(Progress(3, 9))
    await settle()
    assert not waiter.done()
    t.push_msg(Progress(6, 21))
    assert await waiter == 6
    assert await reactor.wait_for_frame(3) == 6, "already reached"
    with pytest.raises(TimeoutError):
        await reactor.wait_for_frame(3000, timeout=0.01)
    late = asyncio.create_task(reactor.wait_for_frame(30))
    await settle()
    t.push_msg(state(current_start_frame=9, finished="max_frames"))
    with pytest.raises(InvalidStateError, match="ended"):
        await late
    with pytest.raises(InvalidStateError, match="ended"):
        await reactor.wait_for_frame(30)
    await reactor.close()


async def test_reconnect_resyncs_state_and_keeps_frames() -> None:
    transports = [FakeTransport(auto_ack), FakeTransport(auto_ack)]
    transports[0].greet()
    transports[1].greet(generation=0, current_start_frame=12)
    opened = iter(transports)

    async def open_next() -> FakeTransport:
        return next(opened)

    reactor = Reactor(transport_factory=open_next)
    await reactor.connect()
    transports[0].push_frame(0)
    await settle()
    transports[0].drop()
    await settle()
    assert reactor.status == "disconnected"
    await reactor.reconnect()
    assert reactor.status == "ready"
    assert reactor.state.current_start_frame == 12 and reactor.current_start_frame == 12
    transports[1].push_frame(45)
    frames = reactor.frames()
    assert [(await frames.__anext__()).index for _ in range(2)] == [0, 45]
    await reactor.get_state()
    assert transports[1].sent and not transports[0].sent
    await reactor.close()


async def test_record_writes_mp4(tmp_path: Any) -> None:
    from longlive.video import read_video

    reactor, t = await connected()
    async with reactor.record(tmp_path / "out.mp4", until=3) as rec:
        for i in range(9):
            t.push_frame(i, block_start=0, value=10 * i)
        t.push_frame(9, block_start=3)  # past `until`: left out
        await settle()
    assert rec.frames_written == 9
    video = read_video(tmp_path / "out.mp4")
    assert video.shape == (9, H, W, 3)
    await reactor.close()


def test_import_longlive_does_not_import_torch() -> None:
    code = (
        "import sys, longlive; from longlive import Reactor; "
        "bad = [m for m in ('torch', 'longlive_runner', 'imageio') if m in sys.modules]; "
        "assert not bad, bad; print('ok')"
    )
    assert fresh_python(code) == "ok"


def test_public_api() -> None:
    assert set(longlive.__all__) <= set(dir(longlive))
    assert issubclass(CommandTimeoutError, TimeoutError)
    assert longlive.latent_to_video_frame(6) == 21 and longlive.video_to_latent_frame(21) == 6


# ----------------------------------------------------------------------------------------------
# The websocket transport, against an in-process websockets server
# ----------------------------------------------------------------------------------------------
async def test_websocket_transport_round_trip() -> None:
    from websockets.asyncio.server import serve

    big = np.random.default_rng(0).integers(0, 255, (480, 832, 3), dtype=np.uint8)
    received: list[str] = []

    async def handler(ws: Any) -> None:
        await ws.send(encode_message(hello_for(height=480, width=832)))
        await ws.send(encode_message(state()))
        received.append(await ws.recv())
        ack = {"command": "start", "generation": 0, "seed": 0}
        await ws.send(json.dumps({"type": "ack", "data": ack, "id": "c1"}))
        await ws.send(encode_frame(FrameHeader(0, 0, 0, 9, 480, 832), big))
        await ws.close(1001, "bye")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with Reactor(f"ws://127.0.0.1:{port}") as reactor:
            assert reactor.hello.width == 832
            assert (await reactor.start()).seed == 0
            frames = reactor.frames()
            frame = await frames.__anext__()
            assert np.array_equal(frame.image, big)
            with pytest.raises(ConnectionClosedError) as info:
                await frames.__anext__()
            assert info.value.code == 1001
        assert json.loads(received[0])["type"] == "start"


async def test_websocket_connect_failure_is_typed() -> None:
    """A connection that never opened is a `ConnectError` (still a `ConnectionClosedError`), whose
    message says it could not connect, not that a connection closed."""
    reactor = Reactor("ws://127.0.0.1:9", connect_timeout=2)
    with pytest.raises(ConnectError, match="^cannot connect to ws://127.0.0.1:9: ") as info:
        await reactor.connect()
    assert isinstance(info.value, ConnectionClosedError) and info.value.status is None
    assert "closed" not in str(info.value)
    assert reactor.status == "disconnected"


async def test_commands_during_reconnect_wait_for_the_new_connection() -> None:
    first, second = FakeTransport(auto_ack), FakeTransport(auto_ack)
    first.greet()
    opened = iter([first, second])

    async def open_next() -> FakeTransport:
        return next(opened)

    reactor = Reactor(transport_factory=open_next, command_timeout=2)
    await reactor.connect()
    reconnecting = asyncio.create_task(reactor.reconnect())
    await settle()
    assert reactor.status == "connecting"
    command = asyncio.create_task(reactor.get_state())
    await settle()
    assert not command.done() and not second.sent
    second.greet()
    await reconnecting
    assert (await command).current_start_frame == 42
    assert second.commands("get_state") and not first.sent
    await reactor.close()


async def test_command_waiting_for_readiness_times_out() -> None:
    t = FakeTransport()
    reactor = Reactor(transport_factory=factory(t), connect_timeout=5)
    connect = asyncio.create_task(reactor.connect())
    await settle()
    with pytest.raises(CommandTimeoutError):
        await reactor.start(timeout=0.05)
    assert t.sent == []
    connect.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connect
    assert reactor.status == "disconnected"


async def test_messages_and_waiters_end_on_drop() -> None:
    reactor, t = await connected()
    stream = reactor.messages()
    waiter = asyncio.create_task(reactor.wait_for_frame(99))
    t.push_msg(Progress(3, 9))
    t.drop(1006, "lost")
    assert isinstance(await stream.__anext__(), Progress)
    with pytest.raises(ConnectionClosedError):
        await stream.__anext__()
    with pytest.raises(ConnectionClosedError):
        await waiter
    await reactor.close()


async def test_wait_for_frame_fails_when_the_session_is_reset() -> None:
    reactor, t = await connected()
    waiter = asyncio.create_task(reactor.wait_for_frame(30))
    await settle()
    t.push_msg(state(generation=1))  # another client reset the session
    with pytest.raises(InvalidStateError, match="reset"):
        await waiter
    await reactor.close()


async def test_async_error_handler() -> None:
    errors: list[BaseException] = []
    reactor, t = await connected()

    @reactor.on_error
    async def handle(exc: BaseException) -> None:
        errors.append(exc)

    reactor.on_progress(lambda p: [][1])
    t.push_msg(Progress(3, 9))
    await settle()
    assert len(errors) == 1 and isinstance(errors[0], CallbackError)
    assert isinstance(errors[0].error, IndexError)
    await reactor.close()
