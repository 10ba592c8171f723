"""Exceptions raised by the longlive SDK and the protocol core, and the protocol's error codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "CommandError",
    "CommandTimeoutError",
    "ConnectError",
    "ConnectionClosedError",
    "ErrorCode",
    "InvalidStateError",
    "LongliveError",
    "ProtocolError",
    "QueueTimeoutError",
]


class ErrorCode:
    """The stable error-code strings of protocol version 1 (docs/protocol.md, section 8)."""

    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    MESSAGE_TOO_LARGE = "message_too_large"
    UNEXPECTED_BINARY = "unexpected_binary"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    UNKNOWN_TYPE = "unknown_type"
    BAD_TIMESTAMP = "bad_timestamp"
    EMPTY_PROMPT = "empty_prompt"
    PROMPT_TOO_LONG = "prompt_too_long"
    TOO_MANY_PROMPTS = "too_many_prompts"
    SCHEDULE_TOO_LARGE = "schedule_too_large"
    NO_INITIAL_PROMPT = "no_initial_prompt"
    ALREADY_RUNNING = "already_running"
    NOT_RUNNING = "not_running"
    ALREADY_PAUSED = "already_paused"
    NOT_PAUSED = "not_paused"
    ALREADY_APPLIED = "already_applied"
    NO_SUCH_PROMPT = "no_such_prompt"
    FINISHED = "finished"
    INTERNAL = "internal"
    GENERATION_FAILED = "generation_failed"  # an `error` message: generating a block failed
    # A cluster gateway (docs/cluster.md): a command sent while waiting in the queue; the queue
    # is full; `?session=` names no live session; the worker running the session died; a command
    # from a read-only viewer; a session nobody drove for the idle limit while others waited.
    QUEUED = "queued"
    QUEUE_FULL = "queue_full"
    NO_SUCH_SESSION = "no_such_session"
    WORKER_LOST = "worker_lost"
    READ_ONLY = "read_only"
    SESSION_IDLE = "session_idle"
    # Client side only: a binary frame that fails validation.
    BAD_FRAME = "bad_frame"

    @classmethod
    def all(cls) -> frozenset[str]:
        """Every code."""
        return frozenset(v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str))


class LongliveError(Exception):
    """Base class of every exception the longlive SDK raises on purpose."""


class ProtocolError(LongliveError):
    """A message that breaks the protocol: bad JSON, a wrong field, a corrupt frame, ...

    `command` and `id` are those of the offending command when they could be read, so that a
    runner can address its refusal to the request.
    """

    def __init__(self, code: str, reason: str, *, command: str | None = None, id: str | None = None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.command = command
        self.id = id

    def __str__(self) -> str:
        return f"[{self.code}] {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r}, command={self.command!r}, id={self.id!r})"


class CommandError(LongliveError):
    """The runner refused a command (a `command_error` reply)."""

    def __init__(self, command: str | None, code: str, reason: str, id: str | None = None) -> None:
        super().__init__(command, code, reason, id)
        self.command = command
        self.code = code
        self.reason = reason
        self.id = id

    def __str__(self) -> str:
        return f"{self.command or 'command'} refused [{self.code}]: {self.reason}"


class ConnectionClosedError(LongliveError):
    """The connection to the runner is closed (`code` is the WebSocket close code, if any)."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        text = "connection closed"
        if self.code is not None:
            text += f" (code {self.code})"
        return f"{text}: {self.reason}" if self.reason else text


class ConnectError(ConnectionClosedError):
    """The connection to the runner could not be opened: refused, unreachable, timed out, or the
    handshake answered with an HTTP error (`status`: 401/403 for a missing or wrong token, 429
    after too many wrong ones). A `ConnectionClosedError` too, so code catching that catches it."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(None, reason)
        self.status = status

    def __str__(self) -> str:
        return self.reason


class CommandTimeoutError(LongliveError, TimeoutError):
    """No reply to a command arrived in time."""

    def __init__(self, command: str, timeout: float, id: str | None = None) -> None:
        super().__init__(command, timeout, id)
        self.command = command
        self.timeout = timeout
        self.id = id

    def __str__(self) -> str:
        return f"no reply to {self.command} (id {self.id!r}) within {self.timeout:g} s"


class QueueTimeoutError(LongliveError, TimeoutError):
    """`connect()` waited in a cluster's queue for a free worker longer than `queue_timeout`
    (docs/cluster.md); the client left the queue. `position`: its last known place in it."""

    def __init__(self, timeout: float, position: int | None = None) -> None:
        super().__init__(timeout, position)
        self.timeout = timeout
        self.position = position

    def __str__(self) -> str:
        where = f" (still at position {self.position})" if self.position is not None else ""
        return f"no free worker within {self.timeout:g} s in the cluster's queue{where}"


class InvalidStateError(LongliveError):
    """An operation is not allowed in the client's current state (e.g. a command before connect)."""


class CallbackError(LongliveError):
    """A callback raised. The original exception is `error` (and `__cause__`)."""

    def __init__(self, event: str, callback: Callable[..., Any], error: BaseException) -> None:
        super().__init__(event, callback, error)
        self.event = event
        self.callback = callback
        self.error = error
        self.__cause__ = error

    def __str__(self) -> str:
        name = getattr(self.callback, "__qualname__", repr(self.callback))
        return f"callback {name} for {self.event!r} raised {type(self.error).__name__}: {self.error}"
