"""The client's bookkeeping without I/O (the websockets way): replies, the state mirror, waiters.

`ClientCore` is fed what a connection receives (`receive_text`, `receive_frame`) and what the
caller starts (`start_request`, `wait_for_message`, `wait_for_frame`); it answers with plain
values and `Waiter`s, which it resolves as messages arrive. It never touches a socket, a clock or
an event loop, so it is tested with plain calls (tests/test_client_core.py); `Reactor` is the
asyncio layer over it (one reader task per connection, futures bridged to `Waiter`s, timeouts).

What it decides:

- a reply (`ack` / `command_error` with an id) resolves the request with that id; the `ack` of a
  command that changes the state resolves it only with the `state` broadcast that follows, so a
  caller sees the command's effect in `state` when its call returns;
- `state` and `progress` update the mirror (`hello`, `state`, `current_start_frame`,
  `generation`); a newer generation (a reset) makes older frames stale and fails the waits for
  a position in the old video; the first `state` of a connection wins whatever came before;
- message waiters get the first message of their type matching their predicate; frame waiters
  get `current_start_frame` once it reaches their frame, or an error when the video ends first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from ._types import Frame
from .errors import ConnectionClosedError, InvalidStateError
from .protocol import (
    Ack,
    CommandErrorMessage,
    FrameHeader,
    FramesDropped,
    Hello,
    Message,
    Progress,
    Queued,
    ResetResult,
    State,
    parse_message,
)
from .units import DEFAULT_FPS

__all__ = ["ALL_TYPES", "ClientCore", "ConnectionCore", "Reply", "Waiter"]

T = TypeVar("T")

#: The message type a waiter or callback uses to mean "every type".
ALL_TYPES = "*"

#: Commands after whose `ack` the runner broadcasts a `state`: a request waits for that state.
STATE_CHANGING = frozenset({"schedule_prompt", "remove_prompt", "start", "pause", "resume", "reset"})


class Waiter(Generic[T]):
    """A value that will be known later: resolved once with a result or an error (or cancelled).

    The I/O-free counterpart of a future: `add_done_callback` is how an event loop bridges it.
    """

    __slots__ = ("_callbacks", "_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = False
        self._result: T | None = None
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Waiter[T]], None]] = []

    def done(self) -> bool:
        return self._done

    def result(self) -> T:
        """The result; raises the error it was resolved with, or InvalidStateError if pending."""
        if not self._done:
            raise InvalidStateError("the waiter is not resolved yet")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    @property
    def error(self) -> BaseException | None:
        return self._error

    def set_result(self, value: T) -> None:
        if not self._done:
            self._done, self._result = True, value
            self._run_callbacks()

    def set_error(self, error: BaseException) -> None:
        if not self._done:
            self._done, self._error = True, error
            self._run_callbacks()

    def cancel(self) -> None:
        """Give up waiting: resolved with no result, its callbacks are not called."""
        self._done = True
        self._callbacks.clear()

    def add_done_callback(self, fn: Callable[[Waiter[T]], None]) -> None:
        if self._done:
            fn(self)
        else:
            self._callbacks.append(fn)

    def _run_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)


class Reply(Waiter[dict[str, Any]]):
    """The reply to one request: its `ack` result (a dict), or the `CommandError` refusing it.

    `ack` is set as soon as the `ack` came, even while the request still waits for the `state`
    that follows it."""

    __slots__ = ("ack", "command", "id")

    def __init__(self, command: str, id: str) -> None:
        super().__init__()
        self.command = command
        self.id = id
        self.ack: dict[str, Any] | None = None


class ConnectionCore:
    """What belongs to one connection: its greeting so far and the requests awaiting replies."""

    def __init__(self) -> None:
        self.got_hello = False
        self.got_state = False
        #: True once a cluster gateway queued this connection (a `queued` before `hello`).
        self.queued = False
        #: Set when the queue position changed or the connection left the queue (`hello`):
        #: the asyncio layer clears it when it looks.
        self.queue_changed = False
        self.pending: dict[str, Reply] = {}
        self.awaiting_state: list[Reply] = []

    @property
    def ready(self) -> bool:
        """The runner's `hello` and first `state` arrived: commands may be sent."""
        return self.got_hello and self.got_state


class ClientCore:
    """The client's state and waits, fed by its connections (see the module docstring).

    `purge(drop)` is called to drop the buffered frames for which `drop(frame)` is true (the
    caller owns the frame buffer); it returns how many it dropped.
    """

    def __init__(self, purge: Callable[[Callable[[Frame], bool]], int] | None = None) -> None:
        self._purge = purge or (lambda drop: 0)
        self.hello: Hello | None = None
        self.state: State | None = None
        self.current_start_frame = 0
        self.generation = 0
        self.session_id: str | None = None
        self.queue_position: int | None = None
        self.queue_length: int | None = None
        self.frames_received = 0
        self.frames_stale = 0
        self.frames_dropped_by_runner = 0
        self._next_id = 0
        self.message_waiters: list[tuple[str, Callable[[Any], bool] | None, Waiter[Message]]] = []
        self.frame_waiters: list[tuple[int, Waiter[int]]] = []

    # --- requests -------------------------------------------------------------------------------
    def start_request(self, conn: ConnectionCore, command: str) -> Reply:
        """Register a request on `conn`: a new id (`c1`, `c2`, ...) and the `Reply` it will get."""
        self._next_id += 1
        reply = Reply(command, f"c{self._next_id}")
        conn.pending[reply.id] = reply
        return reply

    def end_request(self, conn: ConnectionCore, reply: Reply) -> None:
        """The caller stopped waiting (answered, timed out or cancelled): forget the request."""
        conn.pending.pop(reply.id, None)
        if reply in conn.awaiting_state:
            conn.awaiting_state.remove(reply)

    def _resolve(self, conn: ConnectionCore, msg: Ack | CommandErrorMessage) -> None:
        assert msg.id is not None
        reply = conn.pending.get(msg.id)
        if reply is None or reply.done():
            return  # a reply to an unknown or expired id
        if isinstance(msg, CommandErrorMessage):
            reply.set_error(msg.to_exception())
            return
        result = dict(msg.result)
        if isinstance(msg, Ack) and msg.command == ResetResult.command:
            try:
                self._see_generation(ResetResult.from_ack(msg).generation)
            except Exception:  # a malformed result: reset() raises it when it reads the result
                pass
        reply.ack = result
        if msg.command in STATE_CHANGING:
            conn.awaiting_state.append(reply)  # resolved by the state broadcast that follows
        else:
            reply.set_result(result)

    def connection_closed(self, conn: ConnectionCore, error: ConnectionClosedError) -> None:
        """`conn` is gone: its requests fail with a copy of `error`, except those already acked
        (applied: only the `state` after them was missed), which return their ack."""
        for reply in conn.pending.values():
            if reply.ack is not None:
                reply.set_result(reply.ack)
            else:
                reply.set_error(ConnectionClosedError(error.code, error.reason))
        conn.pending.clear()
        conn.awaiting_state.clear()

    # --- what arrives -----------------------------------------------------------------------------
    def receive_text(self, conn: ConnectionCore, text: str) -> Message:
        """Apply one text message from the runner; returns it (raises `ProtocolError` if bad)."""
        msg = parse_message(text)
        if isinstance(msg, Hello):
            self.hello = msg
            self.session_id = msg.session_id
            self.queue_position = self.queue_length = None
            conn.got_hello = True
            conn.queue_changed = True  # out of the queue, if it was in one
        elif isinstance(msg, State):
            self.apply_state(msg, first=not conn.got_state)
            conn.got_state = True
            for reply in conn.awaiting_state:
                if reply.ack is not None:
                    reply.set_result(reply.ack)
            conn.awaiting_state.clear()
        elif isinstance(msg, Progress):
            self._apply_progress(msg)
        elif isinstance(msg, (Ack, CommandErrorMessage)) and msg.id is not None:
            self._resolve(conn, msg)
        elif isinstance(msg, Queued) and not conn.got_hello:
            self.queue_position, self.queue_length = msg.position, msg.queue_length
            conn.queued = conn.queue_changed = True
        elif isinstance(msg, FramesDropped):
            self.frames_dropped_by_runner += max(msg.count, 0)
        self._match_message(msg)
        return msg

    def receive_frame(self, header: FrameHeader, pixels: np.ndarray) -> Frame | None:
        """A frame from the runner as a `Frame`, or None when it is stale (an older generation)."""
        if header.generation < self.generation:
            self.frames_stale += 1
            return None
        self._see_generation(header.generation)
        fps = self.hello.fps if self.hello is not None else DEFAULT_FPS
        self.frames_received += 1
        return Frame.from_header(header, pixels, fps)

    def apply_state(self, state: State, *, first: bool = False) -> None:
        """Take `state` as the runner's (`first`: the first of a connection, which wins)."""
        if first:  # a (re)connection: the runner's view wins, whatever came before
            if state.generation != self.generation:
                self.frames_stale += self._purge(lambda f: f.generation != state.generation)
            self.generation = state.generation
        elif state.generation < self.generation:
            return
        self._see_generation(state.generation)
        self.state = state
        self.current_start_frame = state.current_start_frame
        self._check_frame_waiters(state.finished)

    def _apply_progress(self, progress: Progress) -> None:
        if progress.generation < self.generation:
            return
        self._see_generation(progress.generation)
        self.current_start_frame = progress.current_start_frame
        self._check_frame_waiters(None)

    def _see_generation(self, generation: int) -> None:
        if generation <= self.generation:
            return
        self.generation = generation
        self.frames_stale += self._purge(lambda f: f.generation < generation)
        waiters, self.frame_waiters = self.frame_waiters, []
        for _, waiter in waiters:
            waiter.set_error(
                InvalidStateError(f"the session was reset (generation {generation}) while waiting")
            )

    # --- waits ------------------------------------------------------------------------------------
    def wait_for_message(self, type: str, predicate: Callable[[Any], bool] | None = None) -> Waiter[Message]:
        """The next message of `type` (`ALL_TYPES`: any) for which `predicate` is true."""
        waiter: Waiter[Message] = Waiter()
        self.message_waiters.append((type, predicate, waiter))
        return waiter

    def wait_for_frame(self, frame: int) -> Waiter[int]:
        """`current_start_frame` once it reaches latent `frame`; InvalidStateError if the video
        ends or the session is reset first."""
        waiter: Waiter[int] = Waiter()
        self.frame_waiters.append((frame, waiter))
        return waiter

    def stop_waiting(self, waiter: Waiter[Any]) -> None:
        """The caller gave up (or got its answer): cancel `waiter` and forget it."""
        waiter.cancel()
        self.message_waiters = [e for e in self.message_waiters if e[2] is not waiter]
        self.frame_waiters = [e for e in self.frame_waiters if e[1] is not waiter]

    def waiting(self, conn: ConnectionCore | None) -> bool:
        """True while a call waits for what only the reader can deliver (a reply, a message, a
        position in the video)."""
        return bool((conn is not None and conn.pending) or self.message_waiters or self.frame_waiters)

    def fail_waits(self, error: ConnectionClosedError) -> None:
        """The connection ended: every message and frame wait fails with a copy of `error`."""
        frames, self.frame_waiters = self.frame_waiters, []
        for _, waiter in frames:
            waiter.set_error(ConnectionClosedError(error.code, error.reason))
        messages, self.message_waiters = self.message_waiters, []
        for _, _, mwaiter in messages:
            mwaiter.set_error(ConnectionClosedError(error.code, error.reason))

    def _check_frame_waiters(self, finished: str | None) -> None:
        if not self.frame_waiters:
            return
        csf, waiting = self.current_start_frame, []
        for target, waiter in self.frame_waiters:
            if waiter.done():
                continue
            if csf >= target:
                waiter.set_result(csf)
            elif finished is not None:
                waiter.set_error(
                    InvalidStateError(
                        f"the video ended ({finished}) at latent frame {csf}, before frame {target}"
                    )
                )
            else:
                waiting.append((target, waiter))
        self.frame_waiters = waiting

    def _match_message(self, msg: Message) -> None:
        if not self.message_waiters:
            return
        waiting = []
        for entry in self.message_waiters:
            msg_type, predicate, waiter = entry
            if waiter.done():
                continue
            if msg_type not in (msg.type, ALL_TYPES):
                waiting.append(entry)
                continue
            try:
                matched = predicate is None or predicate(msg)
            except Exception as exc:
                waiter.set_error(exc)
                continue
            if matched:
                waiter.set_result(msg)
            else:
                waiting.append(entry)
        self.message_waiters = waiting
