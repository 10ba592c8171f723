"""Frame arithmetic: latent frames <-> video frames <-> seconds, and block boundaries.

The protocol counts in the model's latent frames (docs/protocol.md, section 2). The VAE decodes
the first latent frame to one video frame and every later one to `temporal_compression` (4)
video frames, so a block of 3 latent frames is 9 video frames at the start and 12 after.
"""

from __future__ import annotations

import math

__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_FRAMES_PER_BLOCK",
    "DEFAULT_TEMPORAL_COMPRESSION",
    "block_start",
    "block_video_frames",
    "latent_to_video_frame",
    "next_block_boundary",
    "seconds_to_latent_frame",
    "seconds_to_video_frame",
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
