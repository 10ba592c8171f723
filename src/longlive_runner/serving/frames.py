"""`OutFrame`: one decoded frame on its way to the hub's peers, checked once and encoded at most once."""

from __future__ import annotations

import numpy as np

from longlive.protocol import FrameHeader, check_frame, encode_frame, encode_frame_into

__all__ = ["OutFrame"]


class OutFrame:
    """One decoded frame on its way to the peers; shared by all of them, encoded at most once."""

    __slots__ = ("_encoded", "header", "rgb")

    def __init__(self, header: FrameHeader, rgb: np.ndarray) -> None:
        check_frame(header, rgb)  # once: every peer's encoding below skips the check
        self.header = header
        self.rgb = rgb
        self._encoded: bytes | None = None

    def encoded(self) -> bytes:
        """The binary frame message (docs/protocol.md, section 4)."""
        if self._encoded is None:
            self._encoded = encode_frame(self.header, self.rgb, check=False)
        return self._encoded

    def encode_into(self, buffer: bytearray) -> memoryview:
        """The binary frame message written into `buffer` (resized to fit): a view of `buffer`.

        For a sender that reuses one buffer per connection and hands the view to a writer that
        copies it at once (websockets' `send`). A new 1.2 MB `bytes` per frame costs page faults
        on fresh memory besides the copy: 3x the server's CPU per 480x832 frame on a 2-core
        machine (benchmarks/bench_transport.py, docs/performance.md). Same bytes as `encoded()`.
        """
        if self._encoded is not None:
            return memoryview(self._encoded)
        try:
            return encode_frame_into(self.header, self.rgb, buffer, check=False)
        except BufferError:  # a view of the buffer is still alive somewhere: do not touch it
            return memoryview(self.encoded())
