"""Typed values the client hands out: frames, connection status. (The command results are in
`longlive.protocol`: `ScheduledPrompt`, `StartResult`, ...)"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from .protocol import FrameHeader

__all__ = [
    "USE_CLIENT_DEFAULT",
    "FramePolicy",
    "Frame",
    "Status",
    "UseClientDefault",
]

#: The connection status: "disconnected" (never connected, closed or dropped), "connecting"
#: (opening, or waiting for the runner's `hello` and first `state`), "ready".
Status = Literal["disconnected", "connecting", "ready"]

#: What the frame buffer does when it is full (see `Reactor`): "drop_oldest" discards the oldest
#: buffered frame and counts it in `Reactor.frames_dropped`; "block" makes the reader wait for the
#: consumer (back-pressure: messages wait too), except while a call waits for the runner (a
#: command's reply, `wait_for`, `wait_for_frame`): frames are then kept past the buffer's size.
FramePolicy = Literal["drop_oldest", "block"]


class UseClientDefault(enum.Enum):
    """The type of `USE_CLIENT_DEFAULT`, the default of a per-call option (a command's `timeout`,
    `connect()`'s `queue_timeout`) that means "the value given to the `Reactor`". It is a type of
    its own because None already means something else there: no limit."""

    USE_CLIENT_DEFAULT = "USE_CLIENT_DEFAULT"

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"


#: "Use the client's setting": e.g. `reactor.start(timeout=USE_CLIENT_DEFAULT)`, the default,
#: waits `reactor.command_timeout` seconds; `timeout=None` waits forever.
USE_CLIENT_DEFAULT: Final = UseClientDefault.USE_CLIENT_DEFAULT


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
