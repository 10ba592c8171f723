"""The LongLive wire protocol, I/O-free: message types, JSON encoding, validation, binary frames.

Shared by the client SDK and the runner; it never touches a socket (the websockets/h11 pattern:
bytes and strings in, typed objects out). docs/protocol.md is the specification; this module is
its reference implementation.

- `encode_message(msg)` / `parse_message(text)`: any message to and from JSON text. Unknown
  message types come back as `UnknownMessage` instead of failing.
- `parse_command(text, limits=...)`: what a runner uses on client text. Every bad input raises a
  `ProtocolError` with a precise code, carrying the command's `id` whenever it could be read.
- `encode_frame(header, rgb)` / `decode_frame(data)`: the binary frame message.
- `prompt_in_force(schedule, frame)`: which scheduled prompt generates the block holding a latent
  frame (the runner decides with it; clients read its answer in `State.in_force`).
- `ScheduledPrompt`, `RemovePromptResult`, `StartResult`, `PauseResult`, `ResumeResult`,
  `ResetResult`: the typed result each command's `ack` carries (`get_state`'s is a `State`):
  `from_ack(ack)` reads one, `to_ack(id)` writes one.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias, TypeVar

import numpy as np

from .errors import CommandError, ErrorCode, ProtocolError
from .units import (
    DEFAULT_FPS,
    DEFAULT_FRAMES_PER_BLOCK,
    DEFAULT_TEMPORAL_COMPRESSION,
    block_video_frames,
    prompt_in_force,
)

__all__ = [
    "COMMAND_RESULTS",
    "DEFAULT_LIMITS",
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "MAX_ID_CHARS",
    "MAX_SEED",
    "MODEL_NAME",
    "PIXEL_FORMAT_RGB24",
    "PROTOCOL_VERSION",
    "Ack",
    "Command",
    "CommandErrorMessage",
    "CommandResult",
    "ErrorMessage",
    "FrameHeader",
    "GenerationFinished",
    "GetState",
    "Hello",
    "Limits",
    "Message",
    "Pause",
    "PauseResult",
    "Progress",
    "PromptSwitched",
    "PromptWarning",
    "Queued",
    "RemovePrompt",
    "RemovePromptResult",
    "Reset",
    "ResetResult",
    "Resume",
    "ResumeResult",
    "SchedulePrompt",
    "ScheduledPrompt",
    "Start",
    "StartResult",
    "State",
    "UnknownMessage",
    "block_frame_headers",
    "decode_frame",
    "encode_block_frames",
    "encode_envelope",
    "encode_frame",
    "encode_frame_into",
    "encode_message",
    "hello_for",
    "is_reply",
    "parse_command",
    "parse_message",
    "prompt_in_force",
    "validate_command",
]

PROTOCOL_VERSION = 1
MODEL_NAME = "longlive"
MAX_ID_CHARS = 128
MAX_SEED = 2**63 - 1

FRAME_MAGIC = b"LLVF"
PIXEL_FORMAT_RGB24 = 1
_FRAME_STRUCT = struct.Struct("<4sBBHIIIHHHH")
FRAME_HEADER_SIZE = _FRAME_STRUCT.size  # 28
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF


@dataclass(frozen=True)
class Limits:
    """Validation limits (docs/protocol.md, section 3.1); a runner announces them in `hello`."""

    max_message_bytes: int = 65536
    max_prompt_chars: int = 2000
    max_scheduled_prompts: int = 256
    max_frames: int = 2**31 - 1  # the video's end (a runner's user limit); by default no practical end
    #: Characters of every prompt stored in the schedule together (applied ones included): it
    #: bounds the size of each `state` message (docs/protocol.md, section 3.1).
    max_schedule_chars: int = 131072


DEFAULT_LIMITS = Limits()


# ----------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------
M = TypeVar("M", bound="Message")
A = TypeVar("A", bound="Ack")


def _read_fields(
    cls: builtins.type, data: Mapping[str, Any], where: str, command: str, id: str | None
) -> dict[str, Any]:
    """The dataclass fields of `cls` read from a wire `data` object (absent optional ones left
    out); raises `ProtocolError` (missing_field / bad_field) naming `where`."""
    kwargs: dict[str, Any] = {}
    for name, kind, required in _wire_fields(cls):
        if name not in data:
            if required:
                raise ProtocolError(
                    ErrorCode.MISSING_FIELD, f"{where}: missing field data.{name}", command=command, id=id
                )
            continue
        kwargs[name] = _read_field(data[name], kind, name, command, id)
    return kwargs


class Message:
    """Base of every text message. `type` is the wire type; `to_data()` the wire `data` object."""

    type: ClassVar[str]
    _omit_none: ClassVar[bool] = False  # commands leave optional fields out instead of sending null

    def to_data(self) -> dict[str, Any]:
        """The `data` object of this message, JSON-ready."""
        out: dict[str, Any] = {}
        for name, kind, _ in _wire_fields(builtins.type(self)):
            value = getattr(self, name)
            if value is None and self._omit_none:
                continue
            if kind == "dict[int, str]":
                value = {str(k): value[k] for k in sorted(value)}
            out[name] = value
        return out

    @classmethod
    def from_data(cls: builtins.type[M], data: Mapping[str, Any], id: str | None = None) -> M:
        """Build from a wire `data` object; raises `ProtocolError` (missing_field / bad_field)."""
        kwargs = _read_fields(cls, data, cls.type, cls.type, id)
        if _has_id(cls):
            kwargs["id"] = id
        return cls(**kwargs)


# --- commands (client -> runner) --------------------------------------------------------------
@dataclass(frozen=True)
class SchedulePrompt(Message):
    """Use `new_prompt` from latent frame `timestamp` on (same timestamp again = overwrite)."""

    type: ClassVar[str] = "schedule_prompt"
    _omit_none: ClassVar[bool] = True
    new_prompt: str
    timestamp: int
    id: str | None = None


@dataclass(frozen=True)
class RemovePrompt(Message):
    """Remove the prompt stored at `timestamp`, if it has not taken effect."""

    type: ClassVar[str] = "remove_prompt"
    _omit_none: ClassVar[bool] = True
    timestamp: int
    id: str | None = None


@dataclass(frozen=True)
class Start(Message):
    """Start generating (needs a prompt at timestamp 0); `seed` None = the runner's default."""

    type: ClassVar[str] = "start"
    _omit_none: ClassVar[bool] = True
    seed: int | None = None
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
    protocol_version: int
    fps: int
    height: int
    width: int
    model: str = MODEL_NAME
    pixel_format: str = "rgb24"
    frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK
    temporal_compression: int = DEFAULT_TEMPORAL_COMPRESSION
    video_frames_first_block: int = 9
    video_frames_per_block: int = 12
    max_frames: int = DEFAULT_LIMITS.max_frames
    max_message_bytes: int = DEFAULT_LIMITS.max_message_bytes
    max_prompt_chars: int = DEFAULT_LIMITS.max_prompt_chars
    max_scheduled_prompts: int = DEFAULT_LIMITS.max_scheduled_prompts
    preset: str | None = None  # the loaded model preset ("demo", "tiny", "longlive-1.3b", ...)
    max_schedule_chars: int = DEFAULT_LIMITS.max_schedule_chars
    #: The session this connection belongs to, when the runner serves several (a cluster gateway,
    #: docs/cluster.md): another client joins it with `?session=<id>`. None for `serve`.
    session_id: str | None = None

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
    generation: int
    running: bool
    paused: bool
    current_start_frame: int
    video_frame: int
    finished: str | None = None
    current_prompt: str | None = None
    scheduled_prompts: dict[int, str] = field(default_factory=dict)
    seed: int | None = None
    #: The timestamp (a key of `scheduled_prompts`) of the prompt in force at the last generated
    #: frame, `prompt_in_force(scheduled_prompts, current_start_frame - 1)`; from `start` until
    #: the first block is done, the one at 0. None when idle, and from a runner older than this field.
    in_force: int | None = None
    #: `P`, the first block whose prompt is not decided yet (docs/protocol.md, section 6.2), counting
    #: the block a running video is about to begin: `current_start_frame + frames_per_block` while
    #: running or while a paused video finishes its block, else `current_start_frame`. A prompt
    #: scheduled before `decided` is re-keyed here. None from a runner older than this field.
    frontier: int | None = None
    #: `D`, the last decided latent frame: prompts at timestamps `<= decided` are or were in force
    #: and cannot be removed; -1 while idle. None from a runner older than this field.
    decided: int | None = None

    @property
    def idle(self) -> bool:
        return not self.running and self.finished is None


@dataclass(frozen=True)
class Progress(Message):
    """`current_start_frame`: latent index of the next block to generate (0, then +3 per block)."""

    type: ClassVar[str] = "progress"
    current_start_frame: int
    video_frame: int
    generation: int = 0


@dataclass(frozen=True)
class PromptSwitched(Message):
    """The block starting at latent `frame` is the first one generated under `new_prompt`."""

    type: ClassVar[str] = "prompt_switched"
    frame: int
    video_frame: int
    new_prompt: str
    previous_prompt: str | None
    generation: int = 0


@dataclass(frozen=True)
class GenerationFinished(Message):
    """The video ended: `reason` is "max_frames", "error" or "reset"."""

    type: ClassVar[str] = "generation_finished"
    reason: str
    current_start_frame: int
    video_frame: int
    generation: int = 0


@dataclass(frozen=True)
class ErrorMessage(Message):
    """The runner failed (`code` "generation_failed" or "internal")."""

    type: ClassVar[str] = "error"
    message: str
    code: str = ErrorCode.INTERNAL
    frame: int | None = None
    generation: int = 0


@dataclass(frozen=True)
class FramesDropped(Message):
    """Sent to one client: `count` frames were dropped from its queue just before this message."""

    type: ClassVar[str] = "frames_dropped"
    count: int  # frames dropped since the previous `frames_dropped`
    total: int  # frames dropped for this client since it connected


@dataclass(frozen=True)
class Queued(Message):
    """Sent by a cluster gateway to a client waiting for a free worker (docs/protocol.md, 5.1):
    `position` 1 is next; sent again whenever `position` or `queue_length` changes. `hello`
    follows once the client has its session."""

    type: ClassVar[str] = "queued"
    position: int
    queue_length: int


@dataclass(frozen=True)
class Ack(Message):
    """Success reply to the command with the same `id`; wire data is `{command, **result}`."""

    type: ClassVar[str] = "ack"
    command: str
    result: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def to_data(self) -> dict[str, Any]:
        return {"command": self.command, **{k: v for k, v in self.result.items() if k != "command"}}

    @classmethod
    def from_data(cls: builtins.type[A], data: Mapping[str, Any], id: str | None = None) -> A:
        if "command" not in data:
            raise ProtocolError(
                ErrorCode.MISSING_FIELD, "ack: missing field data.command", command="ack", id=id
            )
        command = _read_field(data["command"], "str", "command", "ack", id)
        return cls(command=command, result={k: v for k, v in data.items() if k != "command"}, id=id)


@dataclass(frozen=True)
class CommandErrorMessage(Message):
    """Refusal of a command: the reply to its `id`, or a broadcast when it had none."""

    type: ClassVar[str] = "command_error"
    command: str | None
    code: str
    reason: str
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


# ----------------------------------------------------------------------------------------------
# Command results: the typed data of each command's `ack` (docs/protocol.md, section 6.1)
# ----------------------------------------------------------------------------------------------
R = TypeVar("R", bound="CommandResult")


class CommandResult:
    """Base of the result of a command: its `ack`'s data without `command`.

    `to_data()` gives the wire fields in the documented order; `from_data(data)` reads them,
    ignoring fields it does not know (a newer runner may add some) and raising `ProtocolError`
    (`missing_field` / `bad_field`) for a missing or wrongly typed one. `to_ack(id)` and
    `from_ack(ack)` go to and from the whole `Ack`.
    """

    command: ClassVar[str]

    def to_data(self) -> dict[str, Any]:
        """The ack's result fields, JSON-ready."""
        return {name: getattr(self, name) for name, _, _ in _wire_fields(builtins.type(self))}

    @classmethod
    def from_data(cls: builtins.type[R], data: Mapping[str, Any], id: str | None = None) -> R:
        """Read the result from an ack's data (with or without its `command`)."""
        return cls(**_read_fields(cls, data, f"ack of {cls.command}", cls.command, id))

    @classmethod
    def from_ack(cls: builtins.type[R], ack: Ack) -> R:
        """The result carried by `ack`, which must answer this result's command."""
        if ack.command != cls.command:
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"an ack of {ack.command!r} does not carry the result of {cls.command!r}",
                command=ack.command,
                id=ack.id,
            )
        return cls.from_data(ack.result, ack.id)

    def to_ack(self, id: str | None = None) -> Ack:
        """The `ack` carrying this result, answering the command with `id`."""
        return Ack(self.command, self.to_data(), id)


@dataclass(frozen=True)
class PromptWarning:
    """A warning attached to a scheduled prompt (docs/protocol.md, section 6.1)."""

    code: str
    """`rekeyed`, `superseded`, `beyond_max_frames`, `prompt_truncated`, `unknown_words` (or a
    newer code)."""
    message: str


@dataclass(frozen=True)
class ScheduledPrompt(CommandResult):
    """What the runner did with a `schedule_prompt`: where it is stored and when it takes effect."""

    command: ClassVar[str] = "schedule_prompt"
    timestamp: int
    """Latent frame where the prompt is stored (use it for `remove_prompt`)."""
    requested_timestamp: int
    """The timestamp that was sent."""
    effective_frame: int
    """First latent frame generated under this prompt (a block boundary)."""
    effective_video_frame: int
    """The same position in video frames."""
    replaced_prompt: str | None = None
    """The prompt this one overwrote at `timestamp`, if any."""
    warnings: tuple[PromptWarning, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The whole `ack` result as received, including fields a newer runner may add (empty for a
    result built in code)."""

    @property
    def rekeyed(self) -> bool:
        """The timestamp was in the decided past, so the prompt was stored at the next block."""
        return any(w.code == "rekeyed" for w in self.warnings)

    _SCALARS: ClassVar[tuple[tuple[str, str, bool], ...]] = (
        ("timestamp", "int", True),
        ("requested_timestamp", "int", True),
        ("effective_frame", "int", True),
        ("effective_video_frame", "int", True),
        ("replaced_prompt", "str | None", False),
    )

    def to_data(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name, _, _ in self._SCALARS}
        out["warnings"] = [{"code": w.code, "message": w.message} for w in self.warnings]
        return out

    @classmethod
    def from_data(cls, data: Mapping[str, Any], id: str | None = None) -> ScheduledPrompt:
        kwargs: dict[str, Any] = {}
        for name, kind, required in cls._SCALARS:
            if name in data:
                kwargs[name] = _read_field(data[name], kind, name, cls.command, id)
            elif required:
                raise ProtocolError(
                    ErrorCode.MISSING_FIELD,
                    f"ack of {cls.command}: missing field data.{name}",
                    command=cls.command,
                    id=id,
                )
        warnings = data.get("warnings")
        if warnings is None:
            warnings = []
        if not isinstance(warnings, list) or not all(
            isinstance(w, dict) and isinstance(w.get("code"), str) and isinstance(w.get("message"), str)
            for w in warnings
        ):
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"{cls.command}: data.warnings must be a list of {{code, message}} strings",
                command=cls.command,
                id=id,
            )
        kwargs["warnings"] = tuple(PromptWarning(w["code"], w["message"]) for w in warnings)
        kwargs["raw"] = {k: v for k, v in data.items() if k != "command"}
        return cls(**kwargs)

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> ScheduledPrompt:
        """The same as `from_data` (kept for earlier callers)."""
        return cls.from_data(result)


@dataclass(frozen=True)
class RemovePromptResult(CommandResult):
    """What `remove_prompt` removed."""

    command: ClassVar[str] = "remove_prompt"
    timestamp: int
    """The latent frame the prompt was stored at."""
    removed_prompt: str
    """The text of the removed prompt."""


@dataclass(frozen=True)
class StartResult(CommandResult):
    """The video `start` began."""

    command: ClassVar[str] = "start"
    generation: int
    """The session generation of the video (its frames carry it)."""
    seed: int
    """The seed in use (the runner's default when none was sent)."""


@dataclass(frozen=True)
class PauseResult(CommandResult):
    """Where `pause` stops the video."""

    command: ClassVar[str] = "pause"
    effective_frame: int
    """The first latent frame that will not start until `resume`: the block being generated
    when `pause` arrived still completes."""


@dataclass(frozen=True)
class ResumeResult(CommandResult):
    """Where `resume` continues the video."""

    command: ClassVar[str] = "resume"
    current_start_frame: int
    """The latent frame of the next block to generate."""


@dataclass(frozen=True)
class ResetResult(CommandResult):
    """The fresh session `reset` made."""

    command: ClassVar[str] = "reset"
    generation: int
    """The new session generation (frames of older generations are stale)."""


#: The result type of each command's `ack` (`get_state`'s is a `State`).
COMMAND_RESULTS: dict[str, type[CommandResult]] = {
    c.command: c
    for c in (ScheduledPrompt, RemovePromptResult, StartResult, PauseResult, ResumeResult, ResetResult)
}


# ----------------------------------------------------------------------------------------------
# Field decoding
# ----------------------------------------------------------------------------------------------
_WIRE_FIELDS: dict[type, tuple[tuple[str, str, bool], ...]] = {}


def _wire_fields(cls: type) -> tuple[tuple[str, str, bool], ...]:
    """(name, annotation, required) of each wire field of a message dataclass (`id` excluded)."""
    fields = _WIRE_FIELDS.get(cls)
    if fields is None:
        fields = tuple(
            (
                f.name,
                str(f.type),
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
            if f.name != "id"
        )
        _WIRE_FIELDS[cls] = fields
    return fields


def _has_id(cls: type) -> bool:
    return any(f.name == "id" for f in dataclasses.fields(cls))


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from "\ud800" escapes cannot be sent back out
        return False
    return True


def _read_field(value: Any, kind: str, name: str, command: str | None, id: str | None) -> Any:
    def bad(expected: str) -> ProtocolError:
        got = "null" if value is None else type(value).__name__
        return ProtocolError(
            ErrorCode.BAD_FIELD,
            f"{command}: data.{name} must be {expected}, got {got}",
            command=command,
            id=id,
        )

    base, nullable = (kind[: -len(" | None")], True) if kind.endswith(" | None") else (kind, False)
    if value is None:
        if nullable:
            return None
        raise bad(base if base != "int" else "an integer")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if base == "str":
        if not isinstance(value, str):
            raise bad("a string")
        if not _valid_text(value):
            raise bad("valid Unicode text (no lone surrogates)")
        return value
    if base == "bool":
        if not isinstance(value, bool):
            raise bad("a boolean")
        return value
    if base == "dict[int, str]":
        if not isinstance(value, dict):
            raise bad("an object")
        out: dict[int, str] = {}
        for k, v in value.items():
            if not (isinstance(k, str) and k.isdigit() and k.isascii()) or not isinstance(v, str):
                raise bad("an object of decimal frame -> string")
            out[int(k)] = v
        return out
    if base == "dict[str, Any]":
        if not isinstance(value, dict):
            raise bad("an object")
        return dict(value)
    raise AssertionError(f"unsupported field kind {kind!r}")  # pragma: no cover


# ----------------------------------------------------------------------------------------------
# Text encoding / decoding
# ----------------------------------------------------------------------------------------------
def encode_envelope(type: str, data: Mapping[str, Any], id: str | None = None) -> str:
    """The JSON text of one message or command: `{"type", "data", "id"?}` (docs/protocol.md, 2)."""
    obj: dict[str, Any] = {"type": type, "data": dict(data)}
    if id is not None:
        obj["id"] = id
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_message(msg: Message) -> str:
    """The JSON text of `msg`: `{"type", "data", "id"?}`."""
    return encode_envelope(msg.type, msg.to_data(), getattr(msg, "id", None))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_object(text: str | bytes) -> dict[str, Any]:
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.BAD_JSON, f"message is not UTF-8: {exc}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.NOT_AN_OBJECT, f"message must be a JSON object, got {_json_kind(obj)}")
    return obj


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _read_id(obj: Mapping[str, Any]) -> str | None:
    if "id" not in obj or obj["id"] is None:
        return None
    value = obj["id"]
    if not isinstance(value, str) or not (1 <= len(value) <= MAX_ID_CHARS) or not _valid_text(value):
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"id must be a string of 1 to {MAX_ID_CHARS} characters, got {_json_kind(value)}",
            command=_peek_type(obj),
        )
    return value


def _peek_type(obj: Mapping[str, Any]) -> str | None:
    t = obj.get("type")
    return t[:64] if isinstance(t, str) and _valid_text(t) else None


def _read_type_and_data(obj: Mapping[str, Any], id: str | None) -> tuple[str, Mapping[str, Any]]:
    if "type" not in obj:
        raise ProtocolError(ErrorCode.MISSING_FIELD, "message has no type", id=id)
    msg_type = obj["type"]
    if not isinstance(msg_type, str) or not _valid_text(msg_type):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"type must be a string, got {_json_kind(msg_type)}", id=id)
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"data must be an object, got {_json_kind(data)}",
            command=msg_type[:64],
            id=id,
        )
    return msg_type, data


def parse_message(text: str | bytes) -> Message:
    """Decode any text message (either direction); unknown types give an `UnknownMessage`.

    Raises `ProtocolError` for text that is not a JSON object with a string `type`, or a known
    type with missing or wrongly typed fields. Values are not range-checked (see `parse_command`).
    """
    obj = _load_object(text)
    raw_id = obj.get("id")
    msg_id = raw_id if isinstance(raw_id, str) else None
    msg_type, data = _read_type_and_data(obj, msg_id)
    cls = MESSAGE_TYPES.get(msg_type)
    if cls is None:
        return UnknownMessage(type=msg_type, data=dict(data), id=msg_id)
    return cls.from_data(data, id=msg_id)


def _message_size(text: str | bytes) -> int:
    if isinstance(text, str):
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text)


def parse_command(text: str | bytes, *, limits: Limits = DEFAULT_LIMITS) -> Command:
    """Decode and validate a command sent by a client.

    Raises `ProtocolError` with the precise code (docs/protocol.md, section 8); its `id` and
    `command` are set whenever they could be read, so the refusal can be addressed to the request.
    """
    # Characters <= UTF-8 bytes <= 4 * characters: measure bytes only when it can matter.
    if len(text) > limits.max_message_bytes or (
        4 * len(text) > limits.max_message_bytes and _message_size(text) > limits.max_message_bytes
    ):
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"message is {_message_size(text)} bytes; the limit is {limits.max_message_bytes}",
        )
    obj = _load_object(text)
    msg_id = _read_id(obj)
    msg_type, data = _read_type_and_data(obj, msg_id)
    cls = COMMAND_TYPES.get(msg_type)
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown command {msg_type[:64]!r}; commands are {', '.join(sorted(COMMAND_TYPES))}",
            command=msg_type[:64],
            id=msg_id,
        )
    command: Command = cls.from_data(data, id=msg_id)  # type: ignore[assignment]
    validate_command(command, limits)
    return command


def validate_command(cmd: Command, limits: Limits = DEFAULT_LIMITS) -> None:
    """Range checks of a command's values; raises `ProtocolError` (used by `parse_command`)."""

    def fail(code: str, reason: str) -> ProtocolError:
        return ProtocolError(code, f"{cmd.type}: {reason}", command=cmd.type, id=cmd.id)

    if cmd.id is not None:
        _read_id({"id": cmd.id, "type": cmd.type})
    for name, kind, _ in _wire_fields(type(cmd)):  # types, for commands built in code
        _read_field(getattr(cmd, name), kind, name, cmd.type, cmd.id)
    if isinstance(cmd, (SchedulePrompt, RemovePrompt)) and not 0 <= cmd.timestamp <= limits.max_frames:
        raise fail(
            ErrorCode.BAD_TIMESTAMP, f"timestamp must be in 0..{limits.max_frames}, got {cmd.timestamp}"
        )
    if isinstance(cmd, SchedulePrompt):
        if not cmd.new_prompt.strip():
            raise fail(ErrorCode.EMPTY_PROMPT, "new_prompt is empty")
        if len(cmd.new_prompt) > limits.max_prompt_chars:
            raise fail(
                ErrorCode.PROMPT_TOO_LONG,
                f"new_prompt has {len(cmd.new_prompt)} characters; the limit is {limits.max_prompt_chars}",
            )
    if isinstance(cmd, Start) and cmd.seed is not None and not 0 <= cmd.seed <= MAX_SEED:
        raise fail(ErrorCode.BAD_FIELD, f"seed must be in 0..{MAX_SEED}, got {cmd.seed}")


# ----------------------------------------------------------------------------------------------
# Binary frames
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameHeader:
    """The fixed header of a binary frame message (docs/protocol.md, section 4)."""

    video_frame: int
    block_start_frame: int
    index_in_block: int
    frames_in_block: int
    height: int
    width: int
    generation: int = 0
    pixel_format: int = PIXEL_FORMAT_RGB24

    @property
    def payload_size(self) -> int:
        return self.height * self.width * 3


def _check_range(value: int, limit: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= limit:
        raise ValueError(f"frame header field {name} must be an integer in 0..{limit}, got {value!r}")


def _check_frame(header: FrameHeader, rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"rgb must be a uint8 array [H, W, 3], got {getattr(rgb, 'dtype', type(rgb))} {np.shape(rgb)}"
        )
    if rgb.shape[:2] != (header.height, header.width):
        raise ValueError(
            f"rgb is {rgb.shape[0]}x{rgb.shape[1]}, the header says {header.height}x{header.width}"
        )
    if header.pixel_format != PIXEL_FORMAT_RGB24:
        raise ValueError(f"unsupported pixel format {header.pixel_format}")
    for name, limit in (
        ("generation", _U32),
        ("video_frame", _U32),
        ("block_start_frame", _U32),
        ("index_in_block", _U16),
        ("frames_in_block", _U16),
        ("height", _U16),
        ("width", _U16),
    ):
        _check_range(getattr(header, name), limit, name)
    if header.index_in_block >= header.frames_in_block:
        raise ValueError("index_in_block must be < frames_in_block")


def _header_fields(header: FrameHeader) -> tuple[Any, ...]:
    return (
        FRAME_MAGIC,
        PROTOCOL_VERSION,
        header.pixel_format,
        FRAME_HEADER_SIZE,
        header.generation,
        header.video_frame,
        header.block_start_frame,
        header.index_in_block,
        header.frames_in_block,
        header.height,
        header.width,
    )


def encode_frame(header: FrameHeader, rgb: np.ndarray) -> bytes:
    """One binary frame message: the 28-byte header then `rgb` (uint8 [height, width, 3])."""
    _check_frame(header, rgb)
    head = _FRAME_STRUCT.pack(*_header_fields(header))
    return b"".join((head, np.ascontiguousarray(rgb).data))


def encode_frame_into(header: FrameHeader, rgb: np.ndarray, buffer: bytearray) -> memoryview:
    """The same bytes as `encode_frame`, written into `buffer` (resized to fit): a view of it.

    For a sender that reuses one buffer per connection and hands the view to a writer that copies
    it at once. Raises BufferError if `buffer` must be resized while a view of it is alive.
    """
    _check_frame(header, rgb)
    size = FRAME_HEADER_SIZE + header.payload_size
    if len(buffer) != size:
        buffer[:] = bytes(size)
    _FRAME_STRUCT.pack_into(buffer, 0, *_header_fields(header))
    payload = np.frombuffer(buffer, np.uint8, header.payload_size, FRAME_HEADER_SIZE)
    np.copyto(payload.reshape(rgb.shape), rgb)
    return memoryview(buffer)


def block_frame_headers(
    frames: np.ndarray, *, block_start_frame: int, first_video_frame: int, generation: int = 0
) -> list[FrameHeader]:
    """The header of every frame of a block (`frames`: uint8 [n, H, W, 3]), in order."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        raise ValueError(f"frames must be an array [n, H, W, 3], got shape {np.shape(frames)}")
    n, h, w = frames.shape[:3]
    return [FrameHeader(first_video_frame + i, block_start_frame, i, n, h, w, generation) for i in range(n)]


def encode_block_frames(
    frames: np.ndarray, *, block_start_frame: int, first_video_frame: int, generation: int = 0
) -> Iterator[bytes]:
    """Binary messages for every frame of a block (`frames`: uint8 [n, H, W, 3]), in order."""
    headers = block_frame_headers(
        frames, block_start_frame=block_start_frame, first_video_frame=first_video_frame, generation=generation
    )
    for header, rgb in zip(headers, frames, strict=True):
        yield encode_frame(header, rgb)


def decode_frame(
    data: bytes | bytearray | memoryview, *, copy: bool = False
) -> tuple[FrameHeader, np.ndarray]:
    """Parse a binary frame message into its header and a uint8 [H, W, 3] array.

    The array is a view of `data` (read-only for `bytes`) unless `copy` is true. Raises
    `ProtocolError` with code `bad_frame` on a wrong magic, version, pixel format or size.
    """

    def bad(reason: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_FRAME, f"bad frame: {reason}")

    size = memoryview(data).nbytes
    if size < FRAME_HEADER_SIZE:
        raise bad(f"{size} bytes is shorter than the {FRAME_HEADER_SIZE}-byte header")
    magic, version, pixel_format, header_size, gen, vf, bsf, idx, nblock, h, w = _FRAME_STRUCT.unpack_from(
        data, 0
    )
    if magic != FRAME_MAGIC:
        raise bad(f"magic is {magic!r}, expected {FRAME_MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise bad(f"unsupported frame version {version}")
    if pixel_format != PIXEL_FORMAT_RGB24:
        raise bad(f"unsupported pixel format {pixel_format}")
    if header_size < FRAME_HEADER_SIZE:
        raise bad(f"header_size {header_size} < {FRAME_HEADER_SIZE}")
    if h == 0 or w == 0:
        raise bad(f"empty image {h}x{w}")
    if idx >= nblock:
        raise bad(f"index_in_block {idx} >= frames_in_block {nblock}")
    expected = header_size + h * w * 3
    if size != expected:
        raise bad(f"{size} bytes, expected {expected} for {h}x{w} RGB24")
    pixels = np.frombuffer(data, dtype=np.uint8, count=h * w * 3, offset=header_size).reshape(h, w, 3)
    if copy:
        pixels = pixels.copy()
    return FrameHeader(vf, bsf, idx, nblock, h, w, gen, pixel_format), pixels


def hello_for(
    *,
    fps: int = DEFAULT_FPS,
    height: int,
    width: int,
    frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK,
    temporal_compression: int = DEFAULT_TEMPORAL_COMPRESSION,
    limits: Limits = DEFAULT_LIMITS,
    preset: str | None = None,
) -> Hello:
    """A `Hello` with the block sizes derived from `frames_per_block` and `temporal_compression`."""
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        fps=fps,
        height=height,
        width=width,
        frames_per_block=frames_per_block,
        temporal_compression=temporal_compression,
        video_frames_first_block=block_video_frames(0, frames_per_block, temporal_compression),
        video_frames_per_block=block_video_frames(frames_per_block, frames_per_block, temporal_compression),
        max_frames=limits.max_frames,
        max_message_bytes=limits.max_message_bytes,
        max_prompt_chars=limits.max_prompt_chars,
        max_scheduled_prompts=limits.max_scheduled_prompts,
        preset=preset,
        max_schedule_chars=limits.max_schedule_chars,
    )
