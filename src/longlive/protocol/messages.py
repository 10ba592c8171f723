"""The text messages: commands (client -> runner) and what a runner sends (docs/protocol.md, 6-7)."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar

from ..errors import CommandError, ErrorCode, ProtocolError
from ..units import DEFAULT_FRAMES_PER_BLOCK, DEFAULT_TEMPORAL_COMPRESSION
from .codecs import BOOL, FRAME_MAP, INT, TEXT, optional, read_fields, wire, wire_fields
from .limits import DEFAULT_LIMITS, MODEL_NAME, Limits

__all__ = [
    "COMMAND_TYPES",
    "MESSAGE_TYPES",
    "Ack",
    "Command",
    "CommandErrorMessage",
    "ErrorMessage",
    "FramesDropped",
    "GenerationFinished",
    "GetState",
    "Hello",
    "Message",
    "Pause",
    "Progress",
    "PromptSwitched",
    "Queued",
    "RemovePrompt",
    "Reset",
    "Resume",
    "SchedulePrompt",
    "Start",
    "State",
    "UnknownMessage",
    "is_reply",
]

M = TypeVar("M", bound="Message")
A = TypeVar("A", bound="Ack")

_OPT_INT = optional(INT)
_OPT_TEXT = optional(TEXT)


class Message:
    """Base of every text message. `type` is the wire type; `to_data()` the wire `data` object.

    Each subclass is a frozen dataclass whose wire fields are declared with `wire(codec)`
    (`longlive.protocol.codecs`); a message that answers or carries a command has an `id`.
    """

    type: ClassVar[str]
    _omit_none: ClassVar[bool] = False  # commands leave optional fields out instead of sending null

    def to_data(self) -> dict[str, Any]:
        """The `data` object of this message, JSON-ready."""
        out: dict[str, Any] = {}
        for f in wire_fields(builtins.type(self)):
            value = getattr(self, f.name)
            if value is None and self._omit_none:
                continue
            out[f.name] = f.codec.encode(value)
        return out

    @classmethod
    def from_data(cls: builtins.type[M], data: Mapping[str, Any], id: str | None = None) -> M:
        """Build from a wire `data` object; raises `ProtocolError` (missing_field / bad_field)."""
        kwargs = read_fields(cls, data, cls.type, cls.type, id)
        if "id" in getattr(cls, "__dataclass_fields__", {}):
            kwargs["id"] = id
        return cls(**kwargs)


# --- commands (client -> runner) --------------------------------------------------------------
@dataclass(frozen=True)
class SchedulePrompt(Message):
    """Use `new_prompt` from latent frame `timestamp` on (same timestamp again = overwrite)."""

    type: ClassVar[str] = "schedule_prompt"
    _omit_none: ClassVar[bool] = True
    new_prompt: str = wire(TEXT)
    timestamp: int = wire(INT)
    id: str | None = None


@dataclass(frozen=True)
class RemovePrompt(Message):
    """Remove the prompt stored at `timestamp`, if it has not taken effect."""

    type: ClassVar[str] = "remove_prompt"
    _omit_none: ClassVar[bool] = True
    timestamp: int = wire(INT)
    id: str | None = None


@dataclass(frozen=True)
class Start(Message):
    """Start generating (needs a prompt at timestamp 0); `seed` None = the runner's default."""

    type: ClassVar[str] = "start"
    _omit_none: ClassVar[bool] = True
    seed: int | None = wire(_OPT_INT, default=None)
    id: str | None = None


@dataclass(frozen=True)
class Pause(Message):
    """Stop after the block being generated."""

    type: ClassVar[str] = "pause"
    _omit_none: ClassVar[bool] = True
    id: str | None = None


@dataclass(frozen=True)
class Resume(Message):
    """Continue after `pause`."""

    type: ClassVar[str] = "resume"
    _omit_none: ClassVar[bool] = True
    id: str | None = None


@dataclass(frozen=True)
class Reset(Message):
    """Stop, clear every prompt and the frame counter, back to idle."""

    type: ClassVar[str] = "reset"
    _omit_none: ClassVar[bool] = True
    id: str | None = None


@dataclass(frozen=True)
class GetState(Message):
    """Ask for the state (the ack carries it)."""

    type: ClassVar[str] = "get_state"
    _omit_none: ClassVar[bool] = True
    id: str | None = None


Command: TypeAlias = SchedulePrompt | RemovePrompt | Start | Pause | Resume | Reset | GetState


# --- runner -> client ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello(Message):
    """First message on every connection: what the runner generates and its limits."""

    type: ClassVar[str] = "hello"
    protocol_version: int = wire(INT)
    fps: int = wire(INT)
    height: int = wire(INT)
    width: int = wire(INT)
    model: str = wire(TEXT, default=MODEL_NAME)
    pixel_format: str = wire(TEXT, default="rgb24")
    frames_per_block: int = wire(INT, default=DEFAULT_FRAMES_PER_BLOCK)
    temporal_compression: int = wire(INT, default=DEFAULT_TEMPORAL_COMPRESSION)
    video_frames_first_block: int = wire(INT, default=9)
    video_frames_per_block: int = wire(INT, default=12)
    max_frames: int = wire(INT, default=DEFAULT_LIMITS.max_frames)
    max_message_bytes: int = wire(INT, default=DEFAULT_LIMITS.max_message_bytes)
    max_prompt_chars: int = wire(INT, default=DEFAULT_LIMITS.max_prompt_chars)
    max_scheduled_prompts: int = wire(INT, default=DEFAULT_LIMITS.max_scheduled_prompts)
    #: The loaded model preset ("demo", "tiny", "longlive-1.3b", ...).
    preset: str | None = wire(_OPT_TEXT, default=None)
    max_schedule_chars: int = wire(INT, default=DEFAULT_LIMITS.max_schedule_chars)
    #: The session this connection belongs to, when the runner serves several (a cluster gateway,
    #: docs/cluster.md): the secret key this client joined with (or got, as its owner); another
    #: client joins the session with `?session=<key>`, with the same rights. None for `serve`.
    session_id: str | None = wire(_OPT_TEXT, default=None)
    #: On a cluster, to a director (the owner and who joined with its key): the key that joins
    #: the session as a read-only viewer (frames and state, no command). None otherwise.
    viewer_session_id: str | None = wire(_OPT_TEXT, default=None)
    #: On a cluster: "director" (may send every command) or "viewer" (only `get_state`; every
    #: other command is refused with `read_only`). None for `serve` (every client directs).
    role: str | None = wire(_OPT_TEXT, default=None)

    @property
    def limits(self) -> Limits:
        return Limits(
            self.max_message_bytes,
            self.max_prompt_chars,
            self.max_scheduled_prompts,
            self.max_frames,
            self.max_schedule_chars,
        )


@dataclass(frozen=True)
class State(Message):
    """A snapshot of the session (docs/protocol.md, section 7.2)."""

    type: ClassVar[str] = "state"
    generation: int = wire(INT)
    running: bool = wire(BOOL)
    paused: bool = wire(BOOL)
    current_start_frame: int = wire(INT)
    video_frame: int = wire(INT)
    finished: str | None = wire(_OPT_TEXT, default=None)
    current_prompt: str | None = wire(_OPT_TEXT, default=None)
    scheduled_prompts: dict[int, str] = wire(FRAME_MAP, default_factory=dict)
    seed: int | None = wire(_OPT_INT, default=None)
    #: The timestamp (a key of `scheduled_prompts`) of the prompt in force at the last generated
    #: frame, `prompt_in_force(scheduled_prompts, current_start_frame - 1)`; from `start` until
    #: the first block is done, the one at 0. None when idle, and from a runner older than this field.
    in_force: int | None = wire(_OPT_INT, default=None)
    #: `P`, the first block whose prompt is not decided yet (docs/protocol.md, section 6.2), counting
    #: the block a running video is about to begin: `current_start_frame + frames_per_block` while
    #: running or while a paused video finishes its block, else `current_start_frame`. A prompt
    #: scheduled before `decided` is re-keyed here. None from a runner older than this field.
    frontier: int | None = wire(_OPT_INT, default=None)
    #: `D`, the last decided latent frame: prompts at timestamps `<= decided` are or were in force
    #: and cannot be removed; -1 while idle. None from a runner older than this field.
    decided: int | None = wire(_OPT_INT, default=None)

    @property
    def idle(self) -> bool:
        return not self.running and self.finished is None


@dataclass(frozen=True)
class Progress(Message):
    """`current_start_frame`: latent index of the next block to generate (0, then +3 per block)."""

    type: ClassVar[str] = "progress"
    current_start_frame: int = wire(INT)
    video_frame: int = wire(INT)
    generation: int = wire(INT, default=0)


@dataclass(frozen=True)
class PromptSwitched(Message):
    """The block starting at latent `frame` is the first one generated under `new_prompt`."""

    type: ClassVar[str] = "prompt_switched"
    frame: int = wire(INT)
    video_frame: int = wire(INT)
    new_prompt: str = wire(TEXT)
    previous_prompt: str | None = wire(_OPT_TEXT)
    generation: int = wire(INT, default=0)


@dataclass(frozen=True)
class GenerationFinished(Message):
    """The video ended: `reason` is "max_frames", "error" or "reset"."""

    type: ClassVar[str] = "generation_finished"
    reason: str = wire(TEXT)
    current_start_frame: int = wire(INT)
    video_frame: int = wire(INT)
    generation: int = wire(INT, default=0)


@dataclass(frozen=True)
class ErrorMessage(Message):
    """The runner failed (`code` "generation_failed" or "internal")."""

    type: ClassVar[str] = "error"
    message: str = wire(TEXT)
    code: str = wire(TEXT, default=ErrorCode.INTERNAL)
    frame: int | None = wire(_OPT_INT, default=None)
    generation: int = wire(INT, default=0)


@dataclass(frozen=True)
class FramesDropped(Message):
    """Sent to one client: `count` frames were dropped from its queue just before this message."""

    type: ClassVar[str] = "frames_dropped"
    count: int = wire(INT)  # frames dropped since the previous `frames_dropped`
    total: int = wire(INT)  # frames dropped for this client since it connected


@dataclass(frozen=True)
class Queued(Message):
    """Sent by a cluster gateway to a client waiting for a free worker (docs/protocol.md, 5.1):
    `position` 1 is next; sent again whenever `position` or `queue_length` changes. `hello`
    follows once the client has its session."""

    type: ClassVar[str] = "queued"
    position: int = wire(INT)
    queue_length: int = wire(INT)


@dataclass(frozen=True)
class Ack(Message):
    """Success reply to the command with the same `id`; wire data is `{command, **result}`."""

    type: ClassVar[str] = "ack"
    command: str = wire(TEXT)
    result: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"command": self.command, **{k: v for k, v in self.result.items() if k != "command"}}

    @classmethod
    def from_data(cls: builtins.type[A], data: Mapping[str, Any], id: str | None = None) -> A:
        kwargs = read_fields(cls, data, "ack", "ack", id)
        return cls(command=kwargs["command"], result={k: v for k, v in data.items() if k != "command"}, id=id)


@dataclass(frozen=True)
class CommandErrorMessage(Message):
    """Refusal of a command: the reply to its `id`, or a broadcast when it had none."""

    type: ClassVar[str] = "command_error"
    command: str | None = wire(_OPT_TEXT)
    code: str = wire(TEXT)
    reason: str = wire(TEXT)
    id: str | None = None

    def to_exception(self) -> CommandError:
        return CommandError(self.command, self.code, self.reason, self.id)

    @classmethod
    def from_exception(cls, error: ProtocolError) -> CommandErrorMessage:
        return cls(command=error.command, code=error.code, reason=error.reason, id=error.id)


@dataclass(frozen=True)
class UnknownMessage(Message):
    """A message of a type this version does not know, passed through untouched."""

    type: str  # type: ignore[misc]
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def to_data(self) -> dict[str, Any]:
        return dict(self.data)


COMMAND_TYPES: dict[str, type[Message]] = {
    c.type: c for c in (SchedulePrompt, RemovePrompt, Start, Pause, Resume, Reset, GetState)
}
MESSAGE_TYPES: dict[str, type[Message]] = {
    **COMMAND_TYPES,
    **{
        c.type: c
        for c in (
            Hello,
            State,
            Progress,
            PromptSwitched,
            GenerationFinished,
            ErrorMessage,
            FramesDropped,
            Queued,
            Ack,
            CommandErrorMessage,
        )
    },
}


def is_reply(msg: Message) -> bool:
    """True for a reply addressed to one client (an `ack` or `command_error` with an id)."""
    return isinstance(msg, (Ack, CommandErrorMessage)) and msg.id is not None
