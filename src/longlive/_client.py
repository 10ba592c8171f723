"""`Reactor`: the async client of a LongLive runner (websocket or in-process), and the
bookkeeping of its connections.

One reader task per connection feeds everything, in the order the runner sent it:

- replies (`ack` / `command_error` with an id) resolve the command waiting for them;
- every text message goes to the `on(...)` callbacks of its type and to `messages()` streams;
- frames go to `on_frame` callbacks, to active recordings and to the frame buffer read by
  `frames()`.

The bookkeeping (replies, the state mirror, waiters) is `_core.ClientCore`, without I/O; this
module is the asyncio layer over it: connections and their reader tasks, futures, timeouts.
The other concerns live beside this module: `_buffers` (the frame buffer and `MessageStream`),
`_callbacks` (how callbacks run and where their errors go), `_recording` (the mp4 writer thread),
`_urls` (the session query parameter),
`_local` (the in-process connector, the only client module that names `longlive_runner`) and
`_transport` (the websocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload

import numpy as np

from ._buffers import BufferEnded, FrameBuffer, MessageStream
from ._callbacks import Callbacks, ErrorHandler
from ._core import ClientCore, ConnectionCore, Waiter
from ._local import LocalConnector
from ._recording import Recording
from ._transport import DEFAULT_MAX_MESSAGE_SIZE, Transport, WebSocketTransport, safe_url
from ._types import USE_CLIENT_DEFAULT, Frame, FramePolicy, Status, UseClientDefault
from ._urls import with_session
from .errors import (
    CallbackError,
    CommandTimeoutError,
    ConnectionClosedError,
    ErrorCode,
    InvalidStateError,
    LongliveError,
    ProtocolError,
    QueueTimeoutError,
)
from .protocol import (
    PROTOCOL_VERSION,
    Command,
    FrameHeader,
    GetState,
    Hello,
    Message,
    Pause,
    PauseResult,
    Queued,
    RemovePrompt,
    RemovePromptResult,
    Reset,
    ResetResult,
    Resume,
    ResumeResult,
    ScheduledPrompt,
    SchedulePrompt,
    Start,
    StartResult,
    State,
    decode_frame,
    encode_envelope,
    encode_message,
)
from .units import DEFAULT_FPS

__all__ = ["Reactor"]

logger = logging.getLogger("longlive")

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
TransportFactory = Callable[[], Awaitable[Transport]]


# ----------------------------------------------------------------------------------------------
# The client
# ----------------------------------------------------------------------------------------------
class _Connection:
    """One transport and what belongs to it: its reader task, its I/O-free bookkeeping (`core`:
    the greeting so far, the requests awaiting replies) and the futures the caller awaits."""

    def __init__(self, transport: Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.core = ConnectionCore()
        self.reader: asyncio.Task[None] | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_consume_exception)
        self.closing = False
        # Waiting in a cluster gateway's queue (`queued` messages, docs/protocol.md 5.1).
        self.queued_at: float | None = None
        self.queue_changed = asyncio.Event()


def _future_of(waiter: Waiter[T], loop: asyncio.AbstractEventLoop) -> asyncio.Future[T]:
    """An asyncio future resolved with `waiter` (the bridge from the I/O-free core)."""
    fut: asyncio.Future[T] = loop.create_future()

    def done(w: Waiter[T]) -> None:
        if fut.done():
            return
        if w.error is not None:
            fut.set_exception(w.error)
        else:
            fut.set_result(w.result())

    waiter.add_done_callback(done)
    return fut


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _closed_copy(error: ConnectionClosedError) -> ConnectionClosedError:
    return ConnectionClosedError(error.code, error.reason)


class Reactor:
    """Async client of a LongLive runner.

    ```python
    async with Reactor("ws://127.0.0.1:8765") as reactor:   # or Reactor.local()
        await reactor.schedule_prompt("a red circle moving right on a black background", timestamp=0)
        await reactor.start()
        async for frame in reactor.frames():
            ...
    ```

    Commands (`schedule_prompt`, `start`, ...) carry a request id and return the runner's reply,
    raising `CommandError` (with `code`) when refused and `CommandTimeoutError` (also a
    `TimeoutError`) when no reply comes within `command_timeout` seconds. A command issued while
    the connection is being opened waits for it to be ready; one issued with no connection raises
    `InvalidStateError` (or `ConnectionClosedError` after the connection dropped).

    Frames are kept in a buffer of `max_buffered_frames` read by `frames()`. With the default
    policy "drop_oldest" the reader never waits for the consumer: when the buffer is full, the
    oldest frame is discarded and counted in `frames_dropped` (at 480x832 a frame is 1.2 MB, so
    the default of 96 frames, 6 s of video, holds up to 115 MB). With "block" the reader waits for
    the consumer, and messages wait with it, except while a call waits for the runner (a
    command's reply, `wait_for`, `wait_for_frame`): then frames are kept past the buffer's size,
    so a command issued inside a `frames()` loop completes. `max_buffered_frames=0` keeps no
    frames (use `on_frame` or `record` instead). Callbacks and recordings see every frame either
    way.

    Frame numbers are latent frames, as in the protocol (`timestamp`, `current_start_frame`);
    `Frame.index` is a video frame. See `latent_to_video_frame` and friends for conversions.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        command_timeout: float | None = 10.0,
        connect_timeout: float | None = 10.0,
        max_buffered_frames: int = 96,
        frame_policy: FramePolicy = "drop_oldest",
        on_error: ErrorHandler | None = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        transport_factory: TransportFactory | None = None,
        session: str | None = None,
        queue_timeout: float | None = None,
    ) -> None:
        """Create a client (not connected yet: use `async with` or `await connect()`).

        - `url`: the runner's websocket URL, e.g. "ws://127.0.0.1:8765".
        - `command_timeout`: seconds to wait for a command's reply (None: forever).
        - `connect_timeout`: seconds to wait for the runner's `hello` and first `state`.
        - `max_buffered_frames`, `frame_policy`: the frame buffer read by `frames()` (see above).
        - `on_error`: a handler of errors raised by callbacks and of connection drops.
        - `token`: the runner's access token, sent as `Authorization: Bearer <token>` with the
          websocket handshake (docs/protocol.md, section 1.3); default: `$LONGLIVE_TOKEN`, if set.
        - `headers`, `max_message_size`: websocket options (the default fits large frames).
        - `transport_factory`: an async callable returning a `Transport`, instead of `url`.
        - `session`: join this session of a cluster (`longlive-runner cluster`, docs/cluster.md)
          instead of getting a new one: a key another client shares (sent as `?session=KEY`):
          its `session_id` joins as a co-director, its `hello.viewer_session_id` as a viewer
          (frames and state; commands but `get_state` are refused with `read_only`).
        - `queue_timeout`: seconds `connect()` waits in a cluster's queue for a free worker
          (None: as long as it takes; `connect_timeout` applies again once a worker is found).
        """
        if (url is None) == (transport_factory is None):
            raise ValueError("pass exactly one of url and transport_factory")
        if max_buffered_frames < 0:
            raise ValueError("max_buffered_frames must be >= 0")
        if frame_policy not in ("drop_oldest", "block"):
            raise ValueError(f"frame_policy must be 'drop_oldest' or 'block', got {frame_policy!r}")
        self.url = url
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self._max_buffered_frames = max_buffered_frames
        self._frame_policy: FramePolicy = frame_policy
        self._headers = dict(headers) if headers else None
        self._token = token  # never shown: not in repr, not in errors
        self._max_message_size = max_message_size
        self._factory: TransportFactory = transport_factory or self._open_websocket
        self._join = session
        self._opening_session = session  # the session the next websocket asks for
        self.queue_timeout = queue_timeout
        self._local: LocalConnector | None = None

        self._status: Status = "disconnected"
        self._conn: _Connection | None = None
        self._ready_fut: asyncio.Future[None] | None = None
        self._lifecycle: asyncio.Lock | None = None
        self._ever_connected = False
        self._last_drop: ConnectionClosedError | None = None
        self._closed_for_streams = False

        self._core = ClientCore(purge=self._purge_frames)
        self._frames: FrameBuffer[Frame] | None = None
        self._streams: weakref.WeakSet[MessageStream] = weakref.WeakSet()
        self._recordings: list[Recording] = []

        self._callbacks = Callbacks(on_error)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def local(
        cls,
        model: str | Path | None = None,
        *,
        pipeline: Any = None,
        runner: Any = None,
        device: str | None = None,
        dtype: Any = None,
        wan_dir: str | Path | None = None,
        longlive_dir: str | Path | None = None,
        runner_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Reactor:
        """A client of a runner in this process (needs the `runner` extra: torch).

        Nothing is loaded until `connect()`: then the pipeline is loaded in a worker thread
        (`model`: a preset, a packaged model or a converted folder, default the runner's default
        model, the embedded `demo`, or
        `longlive-1.3b` when `wan_dir` is given; `device`, `dtype`, `wan_dir`, `longlive_dir` as for
        `longlive_runner.load_pipeline`; device defaults to cuda when available), a
        `longlive_runner.serving.hub.Runner` is started on the current event loop and this client talks
        to it in-process (frames are handed over as arrays, not encoded). `close()` stops that
        runner. Pass `pipeline=` to reuse a loaded pipeline, or `runner=` (e.g. `other.runner`) to
        attach to a running runner, which `close()` then leaves running. Other keyword arguments
        are `Reactor` options.
        """
        load_options: dict[str, Any] = {"device": device}
        if dtype is not None:
            load_options["dtype"] = dtype
        if wan_dir is not None:
            load_options["wan_dir"] = wan_dir
        if longlive_dir is not None:
            load_options["longlive_dir"] = longlive_dir
        connector = LocalConnector(
            model,
            pipeline=pipeline,
            runner=runner,
            load_options=load_options,
            runner_options=dict(runner_options or {}),
        )
        reactor = cls(transport_factory=connector.open, **options)
        reactor._local = connector
        return reactor

    async def _open_websocket(self) -> Transport:
        assert self.url is not None
        return await WebSocketTransport.connect(
            with_session(self.url, self._opening_session),
            token=self._token,
            headers=self._headers,
            open_timeout=self.connect_timeout,
            max_size=self._max_message_size,
        )

    # --- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> Reactor:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _lock(self) -> asyncio.Lock:
        if self._lifecycle is None:
            self._lifecycle = asyncio.Lock()
        return self._lifecycle

    async def connect(
        self, *, queue_timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT
    ) -> Reactor:
        """Connect and wait until the runner's `hello` and first `state` arrived.

        Does nothing when already connected. Raises `ConnectionClosedError` if the runner cannot
        be reached, `CommandTimeoutError` if it does not greet in `connect_timeout` seconds and
        `ProtocolError` if it speaks another protocol version.

        A cluster (docs/cluster.md) may put the client in its queue until a worker is free:
        `connect()` then waits, with `queue_position` and the `on_queue` callbacks showing where
        it stands, for at most `queue_timeout` seconds (default: the constructor's; None: as long
        as it takes), after which it leaves the queue and raises `QueueTimeoutError`. A full
        queue, or a `session` that does not exist, raises `ConnectionClosedError` (close code
        1013, or 4404) after an `error` message with code `queue_full` or `no_such_session`.
        """
        limit = self.queue_timeout if isinstance(queue_timeout, UseClientDefault) else queue_timeout
        async with self._lock():
            if self._conn is not None and self._status == "ready":
                return self
            self._opening_session = self._join
            await self._open(queue_timeout=limit)
        return self

    async def reconnect(self) -> None:
        """Close the current connection (if any) and open a new one.

        State is re-synchronised from the runner's `state` message; buffered frames of the
        current generation stay readable and a running `frames()` loop continues. Commands
        waiting for a reply on the old connection raise `ConnectionClosedError`; commands issued
        meanwhile wait for the new connection.
        """
        async with self._lock():
            # On a cluster, back to the same session (within its grace period).
            self._opening_session = self._core.session_id or self._join
            await self._open(replacing=self._conn, queue_timeout=self.queue_timeout)

    async def close(self) -> None:
        """Close the connection: `frames()` and `messages()` end after what is buffered,
        recordings are finished, pending commands raise `ConnectionClosedError`, and a runner
        started by `Reactor.local()` is stopped. Idempotent."""
        async with self._lock():
            closed = ConnectionClosedError(None, "closed by the client")
            if self._conn is not None:
                await self._shutdown(self._conn, closed)
            self._fail_waiters(closed)
            self._end_streams(None)
            for rec in list(self._recordings):
                try:
                    await rec.stop()
                except Exception as exc:
                    self._callbacks.report(exc)
            await self._callbacks.stop()
            if self._local is not None:
                await self._local.shutdown()
            self._set_status("disconnected")

    async def _open(self, replacing: _Connection | None = None, queue_timeout: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._ready_fut = loop.create_future()
        self._ready_fut.add_done_callback(_consume_exception)
        self._set_status("connecting")  # from now on, new commands wait for the new connection
        if replacing is not None:
            await self._shutdown(replacing, ConnectionClosedError(None, "reconnecting"))
        if self._frames is None:
            self._frames = FrameBuffer(self._max_buffered_frames, self._frame_policy, self._awaiting_reader)
        try:
            transport = await self._factory()
        except BaseException as exc:
            self._fail_connect(exc)
            raise
        conn = _Connection(transport, loop)
        self._conn = conn
        self._closed_for_streams = False
        self._frames.reopen()
        for stream in list(self._streams):
            stream._buffer.reopen()
        conn.reader = asyncio.create_task(self._read_loop(conn), name="longlive-reader")
        try:
            await self._wait_ready(conn, queue_timeout)
            hello = self._core.hello
            assert hello is not None
            if hello.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError(
                    ErrorCode.BAD_FIELD,
                    f"the runner speaks protocol version {hello.protocol_version}; "
                    f"this client speaks {PROTOCOL_VERSION}",
                )
        except BaseException as exc:
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) and not isinstance(exc, LongliveError):
                exc = CommandTimeoutError("connect", self.connect_timeout or 0.0)
            await self._shutdown(conn, ConnectionClosedError(None, f"connect failed: {exc}"))
            self._fail_connect(exc)
            if isinstance(exc, CommandTimeoutError):
                raise exc from None
            raise
        self._ever_connected = True
        self._last_drop = None
        self._set_status("ready")
        if not self._ready_fut.done():
            self._ready_fut.set_result(None)

    async def _wait_ready(self, conn: _Connection, queue_timeout: float | None) -> None:
        """Wait for `conn.ready`: `connect_timeout` for the runner to greet, but while a cluster
        keeps the client in its queue, `queue_timeout` from the first `queued` message."""
        loop = asyncio.get_running_loop()
        connect_deadline = None if self.connect_timeout is None else loop.time() + self.connect_timeout
        was_queued = False
        while True:
            if conn.queued_at is not None and not conn.core.got_hello:
                deadline = None if queue_timeout is None else conn.queued_at + queue_timeout
                was_queued = True
            else:
                if was_queued and self.connect_timeout is not None:  # out of the queue: greet anew
                    connect_deadline = loop.time() + self.connect_timeout
                was_queued = False
                deadline = connect_deadline
            conn.queue_changed.clear()
            changed = asyncio.ensure_future(conn.queue_changed.wait())
            try:
                remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
                waiters: set[asyncio.Future[Any]] = {conn.ready, changed}
                done, _ = await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if conn.ready.done():
                conn.ready.result()  # raises what the connection failed with
                return
            if not done:
                if conn.queued_at is not None and not conn.core.got_hello:
                    raise QueueTimeoutError(queue_timeout or 0.0, self._core.queue_position)
                raise CommandTimeoutError("connect", self.connect_timeout or 0.0)

    def _fail_connect(self, exc: BaseException) -> None:
        if self._ready_fut is not None and not self._ready_fut.done():
            error = exc if isinstance(exc, Exception) else ConnectionClosedError(None, "connect cancelled")
            self._ready_fut.set_exception(error)
        self._set_status("disconnected")

    async def _shutdown(self, conn: _Connection, error: ConnectionClosedError) -> None:
        """Close `conn` on the client's initiative; its pending commands raise `error`."""
        conn.closing = True
        try:
            await asyncio.wait_for(conn.transport.close(), 5.0)
        except Exception as exc:  # the connection is going away anyway
            logger.debug("closing the transport failed: %r", exc)
        if conn.reader is not None and not conn.reader.done() and conn.reader is not asyncio.current_task():
            conn.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.reader
        self._detach(conn, error)

    def _detach(self, conn: _Connection, error: ConnectionClosedError) -> None:
        self._core.connection_closed(conn.core, error)
        if not conn.ready.done():
            conn.ready.set_exception(_closed_copy(error))
        if self._conn is conn:
            self._conn = None

    def _connection_lost(self, conn: _Connection, error: ConnectionClosedError) -> None:
        """The reader saw the connection end without the client asking."""
        if conn.closing or conn is not self._conn:
            return
        was_ready = self._status == "ready"
        self._detach(conn, error)
        if not was_ready:  # still connecting: _open reports the failure
            return
        self._last_drop = error
        self._fail_waiters(error)
        self._end_streams(error)
        self._set_status("disconnected")
        self._callbacks.report(error, level=logging.WARNING)

    def _end_streams(self, error: ConnectionClosedError | None) -> None:
        self._closed_for_streams = True
        if self._frames is not None:
            self._frames.end(error)
        for stream in list(self._streams):
            stream._buffer.end(error)

    def _fail_waiters(self, error: ConnectionClosedError) -> None:
        self._core.fail_waits(error)

    def _awaiting_reader(self) -> bool:
        """True while a call waits for what only the reader can deliver (a command's reply, a
        message, a position in the video): a full "block" frame buffer then takes frames past its
        size instead of holding the reader, so a command issued inside a `frames()` loop gets its
        reply."""
        return self._core.waiting(self._conn.core if self._conn is not None else None)

    def _wake_reader(self) -> None:
        if self._frames is not None:
            self._frames.wake()

    def _set_status(self, status: Status) -> None:
        if status == self._status:
            return
        self._status = status
        for fn in tuple(self._callbacks.status):
            self._callbacks.call(fn, status, "status")

    # --- the reader -----------------------------------------------------------------------------
    async def _read_loop(self, conn: _Connection) -> None:
        try:
            while True:
                try:
                    item = await conn.transport.recv()
                except ProtocolError as exc:  # a corrupt frame: report it, keep reading
                    self._callbacks.report(exc)
                    continue
                if isinstance(item, str):
                    self._handle_text(conn, item)
                elif isinstance(item, tuple):
                    await self._handle_frame(*item)
                elif isinstance(item, (bytes, bytearray, memoryview)):
                    try:
                        header, pixels = decode_frame(item)
                    except ProtocolError as exc:
                        self._callbacks.report(exc)
                        continue
                    await self._handle_frame(header, pixels)
                else:
                    self._callbacks.report(
                        ProtocolError(ErrorCode.BAD_FRAME, f"transport returned {type(item).__name__}")
                    )
        except ConnectionClosedError as exc:
            self._connection_lost(conn, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: do not leave commands hanging
            logger.exception("longlive reader failed")
            self._connection_lost(conn, ConnectionClosedError(None, f"reader failed: {exc!r}"))
            with contextlib.suppress(Exception):
                await conn.transport.close()

    def _handle_text(self, conn: _Connection, text: str) -> None:
        try:
            msg = self._core.receive_text(conn.core, text)
        except ProtocolError as exc:
            self._callbacks.report(exc)
            return
        if conn.core.queue_changed:
            conn.core.queue_changed = False
            if isinstance(msg, Queued) and conn.queued_at is None:
                conn.queued_at = asyncio.get_running_loop().time()
            conn.queue_changed.set()
        if not conn.ready.done() and conn.core.ready:
            conn.ready.set_result(None)
        self._emit(msg)

    def _purge_frames(self, drop: Callable[[Frame], bool]) -> int:
        """Drop the buffered frames for which `drop` is true (the core's hook); how many."""
        return self._frames.purge(drop) if self._frames is not None else 0

    async def _handle_frame(self, header: FrameHeader, pixels: np.ndarray) -> None:
        frame = self._core.receive_frame(header, pixels)
        if frame is None:
            return  # stale: from before a reset
        for rec in tuple(self._recordings):
            rec._feed(frame)
        for fn in tuple(self._callbacks.frames):
            self._callbacks.call(fn, frame, "frame")
        if self._frames is not None and self._max_buffered_frames:
            await self._frames.put(frame)

    def _emit(self, msg: Message) -> None:
        self._callbacks.emit(msg)
        for stream in list(self._streams):
            stream._feed(msg)

    # --- registering callbacks ----------------------------------------------------------------
    @overload
    def on(self, type: str) -> Callable[[F], F]: ...
    @overload
    def on(self, type: str, fn: F) -> F: ...
    def on(self, type: str, fn: F | None = None) -> F | Callable[[F], F]:
        """Call `fn(message)` for every message of `type` ("*": every message).

        `type` is any message type, known (`progress`, `state`, `prompt_switched`,
        `generation_finished`, `error`, `command_error`, `ack`, `hello`) or not: unknown types
        arrive as `UnknownMessage`. `fn` may be sync or async. Returns `fn`; without `fn`, returns
        a decorator: `@reactor.on("prompt_switched")`.
        """
        if fn is None:
            return lambda f: self.on(type, f)
        self._callbacks.messages.setdefault(type, []).append(fn)
        return fn

    @overload
    def off(self, type_or_fn: str, fn: Callable[..., Any] | None = None) -> None: ...
    @overload
    def off(self, type_or_fn: Callable[..., Any]) -> None: ...
    def off(self, type_or_fn: str | Callable[..., Any], fn: Callable[..., Any] | None = None) -> None:
        """Remove callbacks: `off(type, fn)` one, `off(type)` all of a type, `off(fn)` `fn`
        wherever it is registered (message types, `on_frame`, `on_status`, `on_error`)."""
        if isinstance(type_or_fn, str):
            if fn is None:
                self._callbacks.messages.pop(type_or_fn, None)
            else:
                handlers = self._callbacks.messages.get(type_or_fn, [])
                if fn in handlers:
                    handlers.remove(fn)
            return
        self._callbacks.remove(type_or_fn)

    def on_progress(self, fn: F) -> F:
        """Call `fn(Progress)` after each block (and at start); usable as a decorator."""
        return self.on("progress", fn)

    def on_state(self, fn: F) -> F:
        """Call `fn(State)` for every state snapshot; usable as a decorator."""
        return self.on("state", fn)

    def on_prompt_switched(self, fn: F) -> F:
        """Call `fn(PromptSwitched)` when a block is the first under a new prompt."""
        return self.on("prompt_switched", fn)

    def on_generation_finished(self, fn: F) -> F:
        """Call `fn(GenerationFinished)` when the video ends (max_frames, error, reset)."""
        return self.on("generation_finished", fn)

    def on_frame(self, fn: F) -> F:
        """Call `fn(Frame)` for every frame, in the reader (keep it short, or make it async)."""
        self._callbacks.frames.append(fn)
        return fn

    def on_queue(self, fn: F) -> F:
        """Call `fn(Queued)` while a cluster keeps this client waiting for a worker: on entering
        the queue and whenever its `position` (1: next) or `queue_length` changes."""
        return self.on("queued", fn)

    def on_status(self, fn: F) -> F:
        """Call `fn(status)` when the connection status changes ("connecting", "ready", ...)."""
        self._callbacks.status.append(fn)
        return fn

    def on_error(self, fn: F) -> F:
        """Call `fn(exception)` for errors no API call can raise: a callback that raised
        (`CallbackError`), a dropped connection (`ConnectionClosedError`), a malformed message
        (`ProtocolError`). Without handlers they are logged (logger "longlive") and the first
        callback error is kept in `callback_error`; no other call raises them. (The runner's
        `error` messages go to `on("error")`.)"""
        self._callbacks.errors.append(fn)
        return fn

    # --- state ----------------------------------------------------------------------------------
    @property
    def status(self) -> Status:
        """The connection status: "disconnected", "connecting" or "ready"."""
        return self._status

    @property
    def connected(self) -> bool:
        """True when ready for commands."""
        return self._status == "ready"

    @property
    def hello(self) -> Hello:
        """The runner's `hello`: model, fps, frame size, block sizes and limits."""
        if self._core.hello is None:
            raise InvalidStateError("not connected yet: no hello received")
        return self._core.hello

    @property
    def state(self) -> State:
        """The last `state` snapshot (updated before each state-changing command returns)."""
        if self._core.state is None:
            raise InvalidStateError("not connected yet: no state received")
        return self._core.state

    @property
    def current_start_frame(self) -> int:
        """Latent index of the next block to generate (from the last `progress` or `state`)."""
        return self._core.current_start_frame

    @property
    def generation(self) -> int:
        """The session generation (incremented by every `reset`)."""
        return self._core.generation

    @property
    def session_id(self) -> str | None:
        """The key of the session this client is in, on a cluster (from `hello`; pass it as
        `Reactor(url, session=...)` for another client to join with this client's rights: a
        director's key co-directs, a viewer's only watches; `hello.viewer_session_id` is the
        viewer key, given to directors); None for `serve`, which has one shared session, and
        before connecting."""
        return self._core.session_id

    @property
    def queue_position(self) -> int | None:
        """Position in a cluster's queue while `connect()` waits for a worker (1: next); None
        when not waiting."""
        return self._core.queue_position

    @property
    def queue_length(self) -> int | None:
        """Clients waiting in the cluster's queue, as last told (None when not waiting)."""
        return self._core.queue_length

    @property
    def callback_error(self) -> CallbackError | None:
        """The first error raised by one of your callbacks while no `on_error` handler was
        registered (it was logged, with its traceback); None if there was none. Such errors are
        never raised by another call: check this, or register `on_error`, to act on them."""
        return self._callbacks.first_unhandled

    @property
    def frames_received(self) -> int:
        """Frames received from the runner (current generations only)."""
        return self._core.frames_received

    @property
    def frames_dropped(self) -> int:
        """Frames discarded because `frames()` was slower than the buffer ("drop_oldest")."""
        return self._frames.dropped if self._frames is not None else 0

    @property
    def frames_dropped_by_runner(self) -> int:
        """Frames the runner dropped for this client because it fell behind (its own queue;
        announced by `frames_dropped` messages)."""
        return self._core.frames_dropped_by_runner

    @property
    def frames_buffered(self) -> int:
        """Frames waiting to be read by `frames()`."""
        return len(self._frames) if self._frames is not None else 0

    @property
    def runner(self) -> Any:
        """The in-process `longlive_runner.serving.hub.Runner` of a `Reactor.local()` client (once
        connected); pass it to `Reactor.local(runner=...)` to connect another client."""
        if self._local is None:
            raise InvalidStateError("only a Reactor.local() client has an in-process runner")
        if self._local.runner is None:
            raise InvalidStateError("the runner starts on connect()")
        return self._local.runner

    def __repr__(self) -> str:
        where = (
            safe_url(self.url) if self.url is not None else ("local" if self._local is not None else "custom")
        )
        return f"<Reactor {where} {self._status} frame={self._core.current_start_frame}>"

    # --- commands -------------------------------------------------------------------------------
    async def _ready_connection(self, command: str, timeout: float | None) -> _Connection:
        while True:
            conn = self._conn
            if self._status == "ready" and conn is not None:
                return conn
            if self._status == "connecting" and self._ready_fut is not None:
                try:
                    if timeout is None:
                        await asyncio.shield(self._ready_fut)
                    else:
                        await asyncio.wait_for(asyncio.shield(self._ready_fut), timeout)
                except (asyncio.TimeoutError, TimeoutError):
                    if self._ready_fut.done() and self._ready_fut.exception() is not None:
                        raise
                    raise CommandTimeoutError(command, timeout or 0.0) from None
                continue
            if self._last_drop is not None:
                raise _closed_copy(self._last_drop)
            raise InvalidStateError(
                "not connected: use `async with Reactor(...)` or `await reactor.connect()` first"
            )

    async def send_message(
        self,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT,
    ) -> dict[str, Any]:
        """Send a command and return its `ack` result (the ack's data without `command`), as
        a dict: for commands of a newer runner; the typed methods (`start`, ...) return typed
        results.

        Raises `CommandError` (with `code`, `reason`, `id`) if the runner refuses it,
        `CommandTimeoutError` if no reply comes within `timeout` (default `command_timeout`;
        None waits forever), `ConnectionClosedError` if the connection drops first. A command
        sent while connecting waits for the connection to be ready (within the same timeout).
        """
        return await self._request(type, lambda id: encode_envelope(type, data or {}, id), timeout)

    async def _command(self, command: Command, timeout: float | None | UseClientDefault) -> dict[str, Any]:
        """Send a typed command (encoded by `longlive.protocol`); returns its `ack` result."""
        return await self._request(
            command.type, lambda id: encode_message(dataclasses.replace(command, id=id)), timeout
        )

    async def _request(
        self, type: str, encode: Callable[[str], str], timeout: float | None | UseClientDefault
    ) -> dict[str, Any]:
        limit = self.command_timeout if isinstance(timeout, UseClientDefault) else timeout
        loop = asyncio.get_running_loop()
        deadline = None if limit is None else loop.time() + limit
        conn = await self._ready_connection(type, limit)
        reply = self._core.start_request(conn.core, type)
        text = encode(reply.id)
        future = _future_of(reply, loop)
        self._wake_reader()
        try:
            await conn.transport.send_text(text)
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                return await asyncio.wait_for(future, remaining)
            except (asyncio.TimeoutError, TimeoutError):
                if reply.ack is not None:  # acked, but the state that follows is late
                    return reply.ack
                raise CommandTimeoutError(type, limit or 0.0, reply.id) from None
        finally:
            self._core.end_request(conn.core, reply)
            if not reply.done():
                reply.cancel()

    async def schedule_prompt(
        self, prompt: str, timestamp: int, *, timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT
    ) -> ScheduledPrompt:
        """Use `prompt` from latent frame `timestamp` on (same timestamp again = overwrite).

        It takes effect at the next block boundary: the result's `effective_frame` (and
        `effective_video_frame`). A timestamp in the past or in a block already decided is moved
        to the next free block: `rekeyed` is then true, `timestamp` and `effective_frame` say
        where it went, and the `longlive` logger warns (printed with no logging set up). To
        switch at the next block while generating, schedule at `current_start_frame + 3`.
        """
        result = await self._command(SchedulePrompt(prompt, timestamp), timeout)
        scheduled = ScheduledPrompt.from_data(result)
        for warning in scheduled.warnings:
            # What the video will not show where asked is a warning (printed by Python's default
            # logging): a rekeyed prompt, an unknown word; `superseded` is the caller's own doing.
            level = logging.INFO if warning.code == "superseded" else logging.WARNING
            if warning.code == "rekeyed":
                logger.warning(
                    "schedule_prompt at %d was moved: it takes effect at latent frame %d (video frame %d), "
                    "not %d [rekeyed] %s",
                    timestamp,
                    scheduled.effective_frame,
                    scheduled.effective_video_frame,
                    timestamp,
                    warning.message,
                )
                continue
            logger.log(level, "schedule_prompt at %d: [%s] %s", timestamp, warning.code, warning.message)
        return scheduled

    async def remove_prompt(
        self, timestamp: int, *, timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT
    ) -> RemovePromptResult:
        """Remove the prompt stored at latent frame `timestamp`; returns it (`removed_prompt`).

        Refused with `no_such_prompt`, or `already_applied` once it is or was in force.
        """
        return RemovePromptResult.from_data(await self._command(RemovePrompt(timestamp), timeout))

    async def start(
        self, seed: int | None = None, *, timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT
    ) -> StartResult:
        """Start generating; returns the video's `generation` and the `seed` in use. Needs a
        prompt at timestamp 0 (`no_initial_prompt`); refused with `already_running` while running
        or paused (the runner holds one shared video: `resume()` continues a paused one, `reset()`
        starts over)."""
        return StartResult.from_data(await self._command(Start(seed), timeout))

    async def pause(self, *, timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT) -> PauseResult:
        """Pause after the block being generated; returns its `effective_frame`: the first
        latent frame that will not start until `resume`."""
        return PauseResult.from_data(await self._command(Pause(), timeout))

    async def resume(self, *, timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT) -> ResumeResult:
        """Resume after `pause`; returns the `current_start_frame` it continues from."""
        return ResumeResult.from_data(await self._command(Resume(), timeout))

    async def reset(self, *, timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT) -> ResetResult:
        """Stop, clear every prompt and the frame counter; returns the new `generation`.

        When it returns, no frame of the previous generation is buffered or will be yielded.
        """
        return ResetResult.from_data(await self._command(Reset(), timeout))

    async def get_state(self, *, timeout: float | None | UseClientDefault = USE_CLIENT_DEFAULT) -> State:
        """Ask the runner for its state (also updates `state`)."""
        result = await self._command(GetState(), timeout)
        state = State.from_data(result)
        if state.generation >= self._core.generation:
            self._core.apply_state(state)
        return state

    # --- streams --------------------------------------------------------------------------------
    async def frames(self) -> AsyncIterator[Frame]:
        """Yield frames as they arrive (from the shared buffer, see the class docs).

        Ends after `close()` once the buffer is drained; raises `ConnectionClosedError` when the
        connection drops (after the frames received before it). Frames of a generation older
        than the last `reset` are never yielded. Concurrent iterators share the frames.
        """
        if self._max_buffered_frames == 0:
            raise InvalidStateError("frames() needs max_buffered_frames > 0; use on_frame() instead")
        if self._frames is None or not (self._ever_connected or self._status == "connecting"):
            raise InvalidStateError(
                "not connected: use `async with Reactor(...)` or `await reactor.connect()` first"
            )
        buffer = self._frames
        while True:
            try:
                frame = await buffer.get()
            except BufferEnded:
                return
            yield frame

    def messages(self, *types: str, max_buffered: int = 1024) -> MessageStream:
        """An async iterator over the runner's text messages of `types` (all when none given),
        from now on. Ends like `frames()`; keeps at most `max_buffered` (drop-oldest)."""
        stream = MessageStream(types, max_buffered, self._streams.discard)
        if self._closed_for_streams:
            stream._buffer.end(self._last_drop)
        self._streams.add(stream)
        return stream

    async def wait_for(
        self,
        type: str,
        predicate: Callable[[Any], bool] | None = None,
        *,
        timeout: float | None = None,
    ) -> Message:
        """Wait for the next message of `type` (for which `predicate` is true) and return it.

        `timeout` defaults to None (as long as the video takes: see the client guide, API
        decisions), but the wait never outlives the connection: it raises `ConnectionClosedError`
        when the connection drops or closes, and at once when there is none (`InvalidStateError`).
        """
        if self._status != "ready" and self._status != "connecting":
            await self._ready_connection("wait_for", 0)
        waiter = self._core.wait_for_message(type, predicate)
        self._wake_reader()
        try:
            return await asyncio.wait_for(_future_of(waiter, asyncio.get_running_loop()), timeout)
        finally:
            self._core.stop_waiting(waiter)

    async def wait_for_frame(self, frame: int, *, timeout: float | None = None) -> int:
        """Wait until latent frame `frame` is reached (`current_start_frame >= frame`): every
        block before it was generated and its frames received. Returns `current_start_frame`.

        Raises `InvalidStateError` if the video ends, or the session is reset, first. Like
        `wait_for`, `timeout` defaults to None, and the wait ends with the connection.
        """
        if self._core.current_start_frame >= frame and self._core.state is not None:
            return self._core.current_start_frame
        if self._core.state is not None and self._core.state.finished is not None:
            raise InvalidStateError(
                f"the video ended ({self._core.state.finished}) at latent frame {self._core.current_start_frame}"
            )
        if self._status != "ready" and self._status != "connecting":
            await self._ready_connection("wait_for_frame", 0)
        waiter = self._core.wait_for_frame(frame)
        self._wake_reader()
        try:
            return await asyncio.wait_for(_future_of(waiter, asyncio.get_running_loop()), timeout)
        finally:
            self._core.stop_waiting(waiter)

    # --- recording ------------------------------------------------------------------------------
    def record(self, path: str | Path, *, until: int | None = None) -> Recording:
        """Write every frame arriving from now on to an mp4 file (needs the `video` extra).

        Frames of blocks starting at or after latent frame `until` are left out. Stop with
        `await recording.stop()`, or use `async with reactor.record(path):`; `close()` stops it
        too. Recording sees every frame, whatever the frame buffer drops.
        """
        if importlib.util.find_spec("imageio") is None:
            raise ImportError("recording video needs the `video` extra: pip install 'longlive[video]'")
        fps = self._core.hello.fps if self._core.hello is not None else DEFAULT_FPS
        rec = Recording(path, fps=fps, until=until, on_stop=self._forget_recording)
        self._recordings.append(rec)
        return rec

    def _forget_recording(self, rec: Recording) -> None:
        if rec in self._recordings:
            self._recordings.remove(rec)

    async def save_mp4(self, path: str | Path, until: int, *, timeout: float | None = None) -> Recording:
        """Record the frames arriving until latent frame `until` is reached, then finish the file.

        The file holds exactly the frames of the blocks before `until` that arrive from now on
        (from a fresh start: `latent_to_video_frame(until)` frames). Returns the stopped
        `Recording`.
        """
        rec = self.record(path, until=until)
        try:
            await self.wait_for_frame(until, timeout=timeout)
        finally:
            await rec.stop()
        return rec
