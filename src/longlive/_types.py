"""Typed values the client hands out: frames, command results, connection status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .protocol import FrameHeader

__all__ = ["FramePolicy", "Frame", "PromptWarning", "ScheduledPrompt", "Status"]

#: The connection status: "disconnected" (never connected, closed or dropped), "connecting"
#: (opening, or waiting for the runner's `hello` and first `state`), "ready".
Status = Literal["disconnected", "connecting", "ready"]

#: What the frame buffer does when it is full (see `Reactor`): "drop_oldest" discards the oldest
#: buffered frame and counts it in `Reactor.frames_dropped`; "block" makes the reader wait for the
#: consumer (back-pressure: replies and events wait too).
FramePolicy = Literal["drop_oldest", "block"]


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded video frame.

    `image` is a read-only uint8 array [height, width, 3] (RGB); call `image.copy()` to modify it.
    """

    index: int
    """Index of this frame in the video (video frames, from 0)."""
    image: np.ndarray
    """The pixels, uint8 [height, width, 3], RGB, read-only."""
    start_frame: int
    """Latent frame where this frame's block starts (0, 3, 6, ...)."""
    index_in_block: int
    """Index of this frame within its block."""
    frames_in_block: int
    """Video frames in this frame's block (9 for the first block, 12 after)."""
    generation: int
    """The session generation this frame belongs to (incremented by every `reset`)."""
    seconds: float
    """Presentation time of the frame, `index / fps`."""

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @classmethod
    def from_header(cls, header: FrameHeader, pixels: np.ndarray, fps: float) -> Frame:
        """A frame from a decoded binary message (the pixels are exposed as a read-only view)."""
        image = pixels.view()
        image.flags.writeable = False
        return cls(
            index=header.video_frame,
            image=image,
            start_frame=header.block_start_frame,
            index_in_block=header.index_in_block,
            frames_in_block=header.frames_in_block,
            generation=header.generation,
            seconds=header.video_frame / fps,
        )

    def __repr__(self) -> str:
        return (
            f"Frame(index={self.index}, start_frame={self.start_frame}, "
            f"size={self.width}x{self.height}, generation={self.generation})"
        )


@dataclass(frozen=True)
class PromptWarning:
    """A warning attached to a scheduled prompt (docs/protocol.md, section 6.1)."""

    code: str
    """`rekeyed`, `superseded`, `beyond_max_frames`, `prompt_truncated` (or a newer code)."""
    message: str


@dataclass(frozen=True)
class ScheduledPrompt:
    """What the runner did with a `schedule_prompt`: where it is stored and when it takes effect."""

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
    """The whole `ack` result, including fields a newer runner may add."""

    @property
    def rekeyed(self) -> bool:
        """The timestamp was in the decided past, so the prompt was stored at the next block."""
        return any(w.code == "rekeyed" for w in self.warnings)

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> ScheduledPrompt:
        warnings = tuple(
            PromptWarning(str(w.get("code", "")), str(w.get("message", "")))
            for w in result.get("warnings") or ()
            if isinstance(w, Mapping)
        )
        return cls(
            timestamp=int(result["timestamp"]),
            requested_timestamp=int(result.get("requested_timestamp", result["timestamp"])),
            effective_frame=int(result["effective_frame"]),
            effective_video_frame=int(result.get("effective_video_frame", 0)),
            replaced_prompt=result.get("replaced_prompt"),
            warnings=warnings,
            raw=dict(result),
        )
