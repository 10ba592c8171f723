"""The protocol's constants and the validation limits a runner announces in `hello`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "MAX_ID_CHARS", "MAX_SEED", "MODEL_NAME", "PROTOCOL_VERSION", "Limits"]

PROTOCOL_VERSION = 1
MODEL_NAME = "longlive"
MAX_ID_CHARS = 128
MAX_SEED = 2**63 - 1


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
