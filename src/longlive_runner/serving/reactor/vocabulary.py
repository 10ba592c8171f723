"""The hosted `longlive` model's vocabulary on top of the runner's own protocol (I/O-free).

The Reactor-hosted model takes `schedule_prompt {new_prompt, timestamp}`, `start`, `reset` and
(from its 2026-02 revision) `pause`, `resume`; it sends `progress {current_start_frame}` after each
block and, later, `state {current_frame, current_prompt, paused, scheduled_prompts}` and
`event {event, frame?, message?, new_prompt?, previous_prompt?}`. Our protocol (docs/protocol.md)
already uses those command names and fields, so a Reactor command becomes one of OUR commands
unchanged, plus ours: `remove_prompt {timestamp}`, `get_state`, and `start {seed}`. Each is handed
to the hub as our JSON command (built by `longlive.protocol.encode_envelope`, validated by the
session with our error codes), under an id of this translator's own, so the session's reply
comes back to this connection and can be matched to the client's request id.

Going out, `translate()` turns each of our messages (as the hub queued it) into what a Reactor
client expects:

| ours | to the Reactor client |
|---|---|
| `progress` | `progress {current_start_frame, video_frame, generation}` |
| `state` | `state {current_frame, current_prompt, paused, scheduled_prompts, running, ...}` |
| `prompt_switched` | `event {event: "prompt_switched", frame, new_prompt, previous_prompt}` |
| `generation_finished` | `event {event: "generation_finished", reason, frame}` |
| `error` | `event {event: "error", message, code, frame}` |
| `ack` of a command | a v1 RESPONSE: bare, or `state` for `get_state`, or `ack {command, ...}` when the result has fields |
| `command_error` | v1 `Error {code, message}`; v0 `command_error {command, reason, code}` |
| `hello`, `frames_dropped` | nothing (the video is the track; the descriptor says the rest) |
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from longlive.errors import ErrorCode, ProtocolError
from longlive.protocol import (
    Ack,
    CommandErrorMessage,
    ErrorMessage,
    FramesDropped,
    GenerationFinished,
    Hello,
    Message,
    Progress,
    PromptSwitched,
    Queued,
    State,
    UnknownMessage,
    encode_envelope,
    parse_message,
)

from .framing import Command

__all__ = [
    "COMMANDS",
    "Broadcast",
    "Refusal",
    "Reply",
    "Translator",
    "state_data",
]

#: The commands this front accepts (the hosted model's, then ours); the session validates them.
COMMANDS = ("schedule_prompt", "start", "reset", "pause", "resume", "remove_prompt", "get_state")

#: Commands awaiting their reply, per connection, before new ones are refused.
MAX_PENDING = 256


@dataclass(frozen=True)
class Broadcast:
    """A model message for the client (a v1 NOTIFICATION, a v0 application message)."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """The success reply to the client's command `request_id` (None: a v0 command, no reply)."""

    request_id: str | None
    command: str
    type: str | None = None  # None: a bare acknowledgement
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """The client's command `request_id` was refused with our error `code`."""

    request_id: str | None
    command: str | None
    code: str
    reason: str


Outbound = Broadcast | Reply | Refusal


def state_data(state: State) -> dict[str, Any]:
    """A `state` snapshot in the hosted model's shape (`current_frame`...) plus our fields."""
    ours = state.to_data()
    return {
        "current_frame": state.current_start_frame,
        "current_prompt": state.current_prompt,
        "paused": state.paused,
        "scheduled_prompts": ours["scheduled_prompts"],
        "running": state.running,
        "current_start_frame": state.current_start_frame,
        "video_frame": state.video_frame,
        "generation": state.generation,
        "finished": state.finished,
        "seed": state.seed,
        "in_force": state.in_force,
    }


class Translator:
    """One Reactor connection's side of the vocabulary: commands in, messages out."""

    def __init__(self, prefix: str = "rx") -> None:
        self._prefix = prefix
        self._count = 0
        # our id -> (client request id, command)
        self._pending: OrderedDict[str, tuple[str | None, str]] = OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def command_text(self, cmd: Command) -> str:
        """Our JSON command for `cmd`; raises `ProtocolError` when it cannot be sent on."""
        if cmd.command not in COMMANDS:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE,
                f"unknown command {cmd.command!r}; this model takes {', '.join(COMMANDS)}",
                command=cmd.command,
            )
        if len(self._pending) >= MAX_PENDING:
            raise ProtocolError(
                ErrorCode.INTERNAL,
                f"more than {MAX_PENDING} commands waiting for their replies",
                command=cmd.command,
            )
        self._count += 1
        our_id = f"{self._prefix}{self._count}"
        text = encode_envelope(cmd.command, cmd.data, our_id)
        self._pending[our_id] = (cmd.request_id, cmd.command)
        return text

    def translate(self, text: str) -> list[Outbound]:
        """What the Reactor client gets for one of our text messages (maybe nothing)."""
        try:
            msg = parse_message(text)
        except ProtocolError:  # pragma: no cover - the hub only queues valid messages
            return []
        return self.translate_message(msg)

    def translate_message(self, msg: Message) -> list[Outbound]:
        if isinstance(msg, (Ack, CommandErrorMessage)):
            origin = self._pending.pop(msg.id, None) if msg.id is not None else None
            if origin is None:  # not ours (a broadcast refusal): show it as a v0 would see it
                if isinstance(msg, CommandErrorMessage):
                    return [Refusal(None, msg.command, msg.code, msg.reason)]
                return []
            request_id, command = origin
            if isinstance(msg, CommandErrorMessage):
                return [Refusal(request_id, command, msg.code, msg.reason)]
            if command == "get_state" and msg.result:
                try:
                    snapshot = State.from_data(msg.result)
                except ProtocolError:  # pragma: no cover - the session's own state
                    return [Reply(request_id, command, "ack", {"command": command, **msg.result})]
                return [Reply(request_id, command, "state", state_data(snapshot))]
            if msg.result:
                return [Reply(request_id, command, "ack", {"command": command, **msg.result})]
            return [Reply(request_id, command)]
        if isinstance(msg, State):
            return [Broadcast("state", state_data(msg))]
        if isinstance(msg, Progress):
            return [Broadcast("progress", msg.to_data())]
        if isinstance(msg, PromptSwitched):
            return [
                Broadcast(
                    "event",
                    {
                        "event": "prompt_switched",
                        "frame": msg.frame,
                        "video_frame": msg.video_frame,
                        "new_prompt": msg.new_prompt,
                        "previous_prompt": msg.previous_prompt,
                        "generation": msg.generation,
                    },
                )
            ]
        if isinstance(msg, GenerationFinished):
            return [
                Broadcast(
                    "event",
                    {
                        "event": "generation_finished",
                        "reason": msg.reason,
                        "frame": msg.current_start_frame,
                        "video_frame": msg.video_frame,
                        "generation": msg.generation,
                    },
                )
            ]
        if isinstance(msg, ErrorMessage):
            return [
                Broadcast(
                    "event",
                    {
                        "event": "error",
                        "message": msg.message,
                        "code": msg.code,
                        "frame": msg.frame,
                        "generation": msg.generation,
                    },
                )
            ]
        if isinstance(msg, (Hello, FramesDropped, Queued)):
            return []
        if isinstance(msg, UnknownMessage):
            return [Broadcast(msg.type, msg.to_data())]
        return [Broadcast(msg.type, msg.to_data())]
