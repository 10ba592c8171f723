"""Frame and schedule arithmetic: latent frames <-> video frames <-> seconds, block boundaries,
the prompt in force and the decided past. The one statement of each rule, shared by the client,
the runner (session, CLI, pipeline, demo) and the tests.

The protocol counts in the model's latent frames (docs/protocol.md, section 2). The VAE decodes
the first latent frame to one video frame and every later one to `temporal_compression` (4)
video frames, so a block of 3 latent frames is 9 video frames at the start and 12 after.

Pure arithmetic on ints (standard library only), so that the model side may use it too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_FRAMES_PER_BLOCK",
    "DEFAULT_TEMPORAL_COMPRESSION",
    "block_start",
    "block_video_frames",
    "decided_frame",
    "frontier_frame",
    "latent_to_video_frame",
    "next_block_boundary",
    "prompt_in_force",
    "seconds_to_latent_frame",
    "seconds_to_video_frame",
    "timeline_end",
    "video_frame_to_seconds",
    "video_to_latent_frame",
]

DEFAULT_FPS = 16
DEFAULT_FRAMES_PER_BLOCK = 3
DEFAULT_TEMPORAL_COMPRESSION = 4


def _index(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _positive(value: int, name: str) -> int:
    if _index(value, name) == 0:
        raise ValueError(f"{name} must be > 0")
    return value


def latent_to_video_frame(latent_frame: int, temporal_compression: int = DEFAULT_TEMPORAL_COMPRESSION) -> int:
    """Index of the first video frame decoded from `latent_frame` (0 -> 0, 3 -> 9, 6 -> 21).

    Equivalently, the number of video frames decoded from latent frames `[0, latent_frame)`.
    """
    f = _index(latent_frame, "latent_frame")
    c = _positive(temporal_compression, "temporal_compression")
    return 0 if f == 0 else 1 + c * (f - 1)


def video_to_latent_frame(video_frame: int, temporal_compression: int = DEFAULT_TEMPORAL_COMPRESSION) -> int:
    """The latent frame that decodes to `video_frame` (0 -> 0, 1..4 -> 1, 9 -> 3)."""
    v = _index(video_frame, "video_frame")
    c = _positive(temporal_compression, "temporal_compression")
    return (v + c - 1) // c


def block_video_frames(
    start_frame: int,
    frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK,
    temporal_compression: int = DEFAULT_TEMPORAL_COMPRESSION,
) -> int:
    """Video frames decoded from the block starting at latent `start_frame` (9 at 0, else 12)."""
    n = _positive(frames_per_block, "frames_per_block")
    s = _index(start_frame, "start_frame")
    return latent_to_video_frame(s + n, temporal_compression) - latent_to_video_frame(s, temporal_compression)


def video_frame_to_seconds(video_frame: int, fps: float = DEFAULT_FPS) -> float:
    """Presentation time of `video_frame`, in seconds."""
    if fps <= 0:
        raise ValueError("fps must be > 0")
    return _index(video_frame, "video_frame") / fps


def seconds_to_video_frame(seconds: float, fps: float = DEFAULT_FPS) -> int:
    """The video frame on screen at `seconds` (floor; exact multiples of 1/fps map exactly)."""
    if fps <= 0:
        raise ValueError("fps must be > 0")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
    # The epsilon absorbs float error so that e.g. 0.3 s * 10 fps gives 3, not 2.
    return int(math.floor(seconds * fps + 1e-9))


def seconds_to_latent_frame(
    seconds: float, fps: float = DEFAULT_FPS, temporal_compression: int = DEFAULT_TEMPORAL_COMPRESSION
) -> int:
    """The latent frame that decodes to the video frame on screen at `seconds`."""
    return video_to_latent_frame(seconds_to_video_frame(seconds, fps), temporal_compression)


def block_start(frame: int, frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK) -> int:
    """Start of the block containing latent `frame` (floor to a block boundary: 4 -> 3)."""
    n = _positive(frames_per_block, "frames_per_block")
    return _index(frame, "frame") // n * n


def next_block_boundary(frame: int, frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK) -> int:
    """First block boundary at or after latent `frame` (ceil: 0 -> 0, 1 -> 3, 6 -> 6).

    This is where a prompt scheduled at `frame` takes effect.
    """
    n = _positive(frames_per_block, "frames_per_block")
    return -(-_index(frame, "frame") // n) * n


# ----------------------------------------------------------------------------------------------
# The prompt schedule (docs/protocol.md, section 6.2)
# ----------------------------------------------------------------------------------------------
def prompt_in_force(
    schedule: Iterable[int], frame: int, frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK
) -> int | None:
    """The timestamp of the prompt in force at latent `frame`; None when no prompt is.

    The rule of the whole protocol: a block is generated under the prompt scheduled at the
    largest timestamp `<=` the block's start, so a prompt at a timestamp inside a block takes
    effect at the next block. `frame` may be any latent frame (>= 0): the block holding it
    counts. `schedule` gives the timestamps (a mapping of timestamps to prompts, such as
    `State.scheduled_prompts`, is read by its keys). A runner decides each block's prompt with
    it and sends the result in `State.in_force`.
    """
    start = block_start(frame, frames_per_block)
    return max((t for t in schedule if t <= start), default=None)


def frontier_frame(
    current_start_frame: int, block_in_progress: bool, frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK
) -> int:
    """`P`: the start of the first block whose prompt is not decided yet.

    A block's prompt is decided when the runner begins it: `P` is the next block's start
    (`current_start_frame`) plus one block while a block is in progress.
    """
    n = _positive(frames_per_block, "frames_per_block")
    return _index(current_start_frame, "current_start_frame") + (n if block_in_progress else 0)


def decided_frame(frontier: int, started: bool, frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK) -> int:
    """`D`: the last decided latent frame; prompts at timestamps `<= D` are fixed.

    `max(P - frames_per_block, 0)` once the video started (the prompt at 0 is in force from
    `start` on), -1 before (nothing is decided while idle).
    """
    n = _positive(frames_per_block, "frames_per_block")
    p = _index(frontier, "frontier")
    return max(p - n, 0) if started else -1


def timeline_end(
    current_start_frame: int,
    last_timestamp: int,
    frames_per_block: int = DEFAULT_FRAMES_PER_BLOCK,
    max_frames: int | None = None,
) -> int:
    """The latent frame where a timeline view ends: 16 blocks at least, 8 blocks past the next
    block and 4 past the last scheduled prompt, rounded up to a block, at most `max_frames`.

    The notebook view uses it; the live page (static/app.js, `timelineEnd`) follows the same rule.
    """
    n = _positive(frames_per_block, "frames_per_block")
    end = max(16 * n, _index(current_start_frame, "current_start_frame") + 8 * n, last_timestamp + 4 * n)
    end = next_block_boundary(end, n)
    return end if max_frames is None else min(end, max_frames)
