"""The runner's side of the protocol: reading and checking a client's commands, the `hello`.

A client never needs these (it sends commands and reads messages: `longlive.protocol`); a runner,
a gateway and the tests import them from here.
"""

from __future__ import annotations

from ..errors import ErrorCode, ProtocolError
from ..units import DEFAULT_FPS, DEFAULT_FRAMES_PER_BLOCK, DEFAULT_TEMPORAL_COMPRESSION, block_video_frames
from .codecs import decode_field, wire_fields
from .envelope import load_object, message_size, read_id, read_type_and_data
from .limits import DEFAULT_LIMITS, MAX_SEED, PROTOCOL_VERSION, Limits
from .messages import COMMAND_TYPES, Command, Hello, RemovePrompt, SchedulePrompt, Start

__all__ = ["check_values", "hello_for", "parse_command", "validate_command"]


def parse_command(text: str | bytes, *, limits: Limits = DEFAULT_LIMITS) -> Command:
    """Decode and validate a command sent by a client (each check once).

    Raises `ProtocolError` with the precise code (docs/protocol.md, section 8); its `id` and
    `command` are set whenever they could be read, so the refusal can be addressed to the request.
    """
    # Characters <= UTF-8 bytes <= 4 * characters: measure bytes only when it can matter.
    if len(text) > limits.max_message_bytes or (
        4 * len(text) > limits.max_message_bytes and message_size(text) > limits.max_message_bytes
    ):
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"message is {message_size(text)} bytes; the limit is {limits.max_message_bytes}",
        )
    obj = load_object(text)
    msg_id = read_id(obj)
    msg_type, data = read_type_and_data(obj, msg_id)
    cls = COMMAND_TYPES.get(msg_type)
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_TYPE,
            f"unknown command {msg_type[:64]!r}; commands are {', '.join(sorted(COMMAND_TYPES))}",
            command=msg_type[:64],
            id=msg_id,
        )
    command: Command = cls.from_data(data, id=msg_id)  # type: ignore[assignment]  # types checked
    check_values(command, limits)
    return command


def validate_command(cmd: Command, limits: Limits = DEFAULT_LIMITS) -> None:
    """The checks of `parse_command` for a command built in code: its `id`, the types of its
    fields, then its values (`check_values`); raises `ProtocolError`."""
    if cmd.id is not None:
        read_id({"id": cmd.id, "type": cmd.type})
    for f in wire_fields(type(cmd)):
        decode_field(f, getattr(cmd, f.name), cmd.type, cmd.id)
    check_values(cmd, limits)


def check_values(cmd: Command, limits: Limits = DEFAULT_LIMITS) -> None:
    """Range checks of a command whose fields have the right types; raises `ProtocolError`."""

    def fail(code: str, reason: str) -> ProtocolError:
        return ProtocolError(code, f"{cmd.type}: {reason}", command=cmd.type, id=cmd.id)

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
