"""Writing frames to a video file (imageio + imageio-ffmpeg, the `video` extra)."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np


class VideoWriter:
    """Append uint8 RGB frames [H, W, 3] (or batches [N, H, W, 3]) to an mp4 file."""

    def __init__(self, path: str | Path, fps: float = 16, quality: float = 8) -> None:
        try:
            import imageio.v2 as imageio
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError("writing video needs the `video` extra: pip install 'longlive[video]'") from exc
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frames_written = 0
        # macro_block_size=1 keeps odd sizes exact instead of resizing them.
        self._writer: Any = imageio.get_writer(
            str(self.path),
            fps=fps,
            codec="libx264",
            quality=quality,
            macro_block_size=1,
            pixelformat="yuv420p",
        )

    def write(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames [N, H, W, 3], got {frames.dtype} {frames.shape}")
        for frame in frames:
            self._writer.append_data(frame)
            self.frames_written += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_video(path: str | Path) -> np.ndarray:
    """All frames of a video file as uint8 [N, H, W, 3]."""
    import imageio.v2 as imageio

    return np.stack(list(imageio.mimread(str(path), memtest=False)))
