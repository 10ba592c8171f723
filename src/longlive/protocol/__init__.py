"""The LongLive wire protocol, I/O-free: message types, JSON encoding, validation, binary frames.

Shared by the client SDK and the runner; it never touches a socket (the websockets/h11 pattern:
bytes and strings in, typed objects out). docs/protocol.md is the specification; this package is
its reference implementation, one concern a module:

- `limits`: `PROTOCOL_VERSION`, `Limits`, `DEFAULT_LIMITS`, `MAX_SEED`, ...;
- `codecs`: the per-field codecs every message and result declares its wire fields with;
- `messages`: the commands and the runner's messages (`SchedulePrompt`, `State`, `Ack`, ...);
- `results`: the typed result each command's `ack` carries (`ScheduledPrompt`, `StartResult`,
  ...: `from_ack(ack)` reads one, `to_ack(id)` writes one; `get_state`'s is a `State`);
- `envelope`: any message to and from JSON text (`encode_message`, `parse_message`; unknown
  types come back as `UnknownMessage` instead of failing);
- `frames`: the binary frame message (`encode_frame`, `decode_frame`, `FrameHeader`);
- `runner`: what only a runner needs: `parse_command(text, limits=...)` (every bad input raises
  a `ProtocolError` with a precise code, carrying the command's `id` whenever it could be read),
  `validate_command`, `hello_for`. Not part of the client's surface: import them from
  `longlive.protocol.runner`.

The schedule rule, `prompt_in_force(schedule, frame)` (which scheduled prompt generates the block
holding a latent frame), is `longlive.units`'s, exported here too; clients read the runner's
answer in `State.in_force`.
"""

from __future__ import annotations

from ..units import prompt_in_force
from .envelope import encode_envelope, encode_message, parse_message
from .frames import (
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    PIXEL_FORMAT_RGB24,
    FrameHeader,
    block_frame_headers,
    check_frame,
    decode_frame,
    encode_block_frames,
    encode_frame,
    encode_frame_into,
)
from .limits import DEFAULT_LIMITS, MAX_ID_CHARS, MAX_SEED, MODEL_NAME, PROTOCOL_VERSION, Limits
from .messages import (
    COMMAND_TYPES,
    MESSAGE_TYPES,
    Ack,
    Command,
    CommandErrorMessage,
    ErrorMessage,
    FramesDropped,
    GenerationFinished,
    GetState,
    Hello,
    Message,
    Pause,
    Progress,
    PromptSwitched,
    Queued,
    RemovePrompt,
    Reset,
    Resume,
    SchedulePrompt,
    Start,
    State,
    UnknownMessage,
    is_reply,
)
from .results import (
    COMMAND_RESULTS,
    CommandResult,
    PauseResult,
    PromptWarning,
    RemovePromptResult,
    ResetResult,
    ResumeResult,
    ScheduledPrompt,
    StartResult,
)

# The runner's helpers, importable from here for code written before `longlive.protocol.runner`
# (not part of `__all__`, the client's surface).
from .runner import hello_for, parse_command, validate_command  # noqa: F401

__all__ = [
    "COMMAND_RESULTS",
    "COMMAND_TYPES",
    "DEFAULT_LIMITS",
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "MAX_ID_CHARS",
    "MAX_SEED",
    "MESSAGE_TYPES",
    "MODEL_NAME",
    "PIXEL_FORMAT_RGB24",
    "PROTOCOL_VERSION",
    "Ack",
    "Command",
    "CommandErrorMessage",
    "CommandResult",
    "ErrorMessage",
    "FrameHeader",
    "FramesDropped",
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
    "check_frame",
    "decode_frame",
    "encode_block_frames",
    "encode_envelope",
    "encode_frame",
    "encode_frame_into",
    "encode_message",
    "is_reply",
    "parse_message",
    "prompt_in_force",
]
