"""`Recording`: frames written to a video file by a writer thread (`Reactor.record`)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._types import Frame

__all__ = ["Recording"]


class Recording:
    """Frames being written to a video file, from a writer thread (see `Reactor.record`).

    Frames are queued without limit, so a slow disk or encoder costs memory, never frames.
    """

    def __init__(
        self, path: str | Path, *, fps: float, until: int | None, on_stop: Callable[[Recording], None]
    ) -> None:
        self.path = Path(path)
        self.until = until
        self.fps = fps
        self._on_stop = on_stop
        self._queue: queue.SimpleQueue[np.ndarray | None] = queue.SimpleQueue()
        self._accepted = 0
        self._written = 0
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, name=f"longlive-record-{self.path.name}", daemon=True
        )
        self._thread.start()

    @property
    def frames_written(self) -> int:
        """Frames written so far (all accepted frames once `stop()` returned)."""
        return self._written

    @property
    def frames_accepted(self) -> int:
        """Frames handed to the writer thread so far."""
        return self._accepted

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _feed(self, frame: Frame) -> None:
        if self._stopped or (self.until is not None and frame.start_frame >= self.until):
            return
        self._accepted += 1
        self._queue.put(frame.image)

    def _run(self) -> None:
        from .video import VideoWriter

        writer: VideoWriter | None = None
        try:
            while True:
                image = self._queue.get()
                if image is None:
                    break
                if self._error is not None:
                    continue
                try:
                    if writer is None:
                        writer = VideoWriter(self.path, fps=self.fps)
                    writer.write(image)
                    self._written += 1
                except BaseException as exc:  # kept for stop() to raise
                    self._error = exc
        finally:
            if writer is not None:
                try:
                    writer.close()
                except BaseException as exc:
                    self._error = self._error or exc

    async def stop(self) -> Recording:
        """Stop recording and finish the file; raises what the writer failed with, if anything.

        With no frame received, no file is written (`frames_written` is 0).
        """
        if not self._stopped:
            self._stopped = True
            self._on_stop(self)
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        if self._error is not None:
            raise self._error
        return self

    async def __aenter__(self) -> Recording:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"Recording({str(self.path)!r}, frames_written={self._written}, stopped={self._stopped})"
