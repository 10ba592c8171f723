"""The binary frame message: a 28-byte header, then the RGB pixels (docs/protocol.md, section 4)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ErrorCode, ProtocolError
from .limits import PROTOCOL_VERSION

__all__ = [
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
    "PIXEL_FORMAT_RGB24",
    "FrameHeader",
    "block_frame_headers",
    "check_frame",
    "decode_frame",
    "encode_block_frames",
    "encode_frame",
    "encode_frame_into",
]

FRAME_MAGIC = b"LLVF"
PIXEL_FORMAT_RGB24 = 1
_FRAME_STRUCT = struct.Struct("<4sBBHIIIHHHH")
FRAME_HEADER_SIZE = _FRAME_STRUCT.size  # 28
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF


@dataclass(frozen=True)
class FrameHeader:
    """The fixed header of a binary frame message (docs/protocol.md, section 4)."""

    video_frame: int
    block_start_frame: int
    index_in_block: int
    frames_in_block: int
    height: int
    width: int
    generation: int = 0
    pixel_format: int = PIXEL_FORMAT_RGB24

    @property
    def payload_size(self) -> int:
        return self.height * self.width * 3


def _check_range(value: int, limit: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= limit:
        raise ValueError(f"frame header field {name} must be an integer in 0..{limit}, got {value!r}")


def check_frame(header: FrameHeader, rgb: np.ndarray) -> None:
    """Raises ValueError unless `rgb` (uint8 [H, W, 3]) and `header` make a valid frame message.

    The encoders run it unless told `check=False`: a sender that encodes the same frame for
    several peers checks it once, when it builds the header.
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(
            f"rgb must be a uint8 array [H, W, 3], got {getattr(rgb, 'dtype', type(rgb))} {np.shape(rgb)}"
        )
    if rgb.shape[:2] != (header.height, header.width):
        raise ValueError(
            f"rgb is {rgb.shape[0]}x{rgb.shape[1]}, the header says {header.height}x{header.width}"
        )
    if header.pixel_format != PIXEL_FORMAT_RGB24:
        raise ValueError(f"unsupported pixel format {header.pixel_format}")
    for name, limit in (
        ("generation", _U32),
        ("video_frame", _U32),
        ("block_start_frame", _U32),
        ("index_in_block", _U16),
        ("frames_in_block", _U16),
        ("height", _U16),
        ("width", _U16),
    ):
        _check_range(getattr(header, name), limit, name)
    if header.index_in_block >= header.frames_in_block:
        raise ValueError("index_in_block must be < frames_in_block")


def _header_fields(header: FrameHeader) -> tuple[Any, ...]:
    return (
        FRAME_MAGIC,
        PROTOCOL_VERSION,
        header.pixel_format,
        FRAME_HEADER_SIZE,
        header.generation,
        header.video_frame,
        header.block_start_frame,
        header.index_in_block,
        header.frames_in_block,
        header.height,
        header.width,
    )


def encode_frame(header: FrameHeader, rgb: np.ndarray, *, check: bool = True) -> bytes:
    """One binary frame message: the 28-byte header then `rgb` (uint8 [height, width, 3]).

    `check=False` skips `check_frame` for a frame already checked."""
    if check:
        check_frame(header, rgb)
    head = _FRAME_STRUCT.pack(*_header_fields(header))
    return b"".join((head, np.ascontiguousarray(rgb).data))


def encode_frame_into(
    header: FrameHeader, rgb: np.ndarray, buffer: bytearray, *, check: bool = True
) -> memoryview:
    """The same bytes as `encode_frame`, written into `buffer` (resized to fit): a view of it.

    For a sender that reuses one buffer per connection and hands the view to a writer that copies
    it at once. Raises BufferError if `buffer` must be resized while a view of it is alive.
    `check=False` skips `check_frame` for a frame already checked.
    """
    if check:
        check_frame(header, rgb)
    size = FRAME_HEADER_SIZE + header.payload_size
    if len(buffer) != size:
        buffer[:] = bytes(size)
    _FRAME_STRUCT.pack_into(buffer, 0, *_header_fields(header))
    payload = np.frombuffer(buffer, np.uint8, header.payload_size, FRAME_HEADER_SIZE)
    np.copyto(payload.reshape(rgb.shape), rgb)
    return memoryview(buffer)


def block_frame_headers(
    frames: np.ndarray, *, block_start_frame: int, first_video_frame: int, generation: int = 0
) -> list[FrameHeader]:
    """The header of every frame of a block (`frames`: uint8 [n, H, W, 3]), in order."""
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        raise ValueError(f"frames must be an array [n, H, W, 3], got shape {np.shape(frames)}")
    n, h, w = frames.shape[:3]
    return [FrameHeader(first_video_frame + i, block_start_frame, i, n, h, w, generation) for i in range(n)]


def encode_block_frames(
    frames: np.ndarray, *, block_start_frame: int, first_video_frame: int, generation: int = 0
) -> Iterator[bytes]:
    """Binary messages for every frame of a block (`frames`: uint8 [n, H, W, 3]), in order."""
    headers = block_frame_headers(
        frames,
        block_start_frame=block_start_frame,
        first_video_frame=first_video_frame,
        generation=generation,
    )
    for header, rgb in zip(headers, frames, strict=True):
        yield encode_frame(header, rgb)


def decode_frame(
    data: bytes | bytearray | memoryview, *, copy: bool = False
) -> tuple[FrameHeader, np.ndarray]:
    """Parse a binary frame message into its header and a uint8 [H, W, 3] array.

    The array is a view of `data` (read-only for `bytes`) unless `copy` is true. Raises
    `ProtocolError` with code `bad_frame` on a wrong magic, version, pixel format or size.
    """

    def bad(reason: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_FRAME, f"bad frame: {reason}")

    size = memoryview(data).nbytes
    if size < FRAME_HEADER_SIZE:
        raise bad(f"{size} bytes is shorter than the {FRAME_HEADER_SIZE}-byte header")
    magic, version, pixel_format, header_size, gen, vf, bsf, idx, nblock, h, w = _FRAME_STRUCT.unpack_from(
        data, 0
    )
    if magic != FRAME_MAGIC:
        raise bad(f"magic is {magic!r}, expected {FRAME_MAGIC!r}")
    if version != PROTOCOL_VERSION:
        raise bad(f"unsupported frame version {version}")
    if pixel_format != PIXEL_FORMAT_RGB24:
        raise bad(f"unsupported pixel format {pixel_format}")
    if header_size < FRAME_HEADER_SIZE:
        raise bad(f"header_size {header_size} < {FRAME_HEADER_SIZE}")
    if h == 0 or w == 0:
        raise bad(f"empty image {h}x{w}")
    if idx >= nblock:
        raise bad(f"index_in_block {idx} >= frames_in_block {nblock}")
    expected = header_size + h * w * 3
    if size != expected:
        raise bad(f"{size} bytes, expected {expected} for {h}x{w} RGB24")
    pixels = np.frombuffer(data, dtype=np.uint8, count=h * w * 3, offset=header_size).reshape(h, w, 3)
    if copy:
        pixels = pixels.copy()
    return FrameHeader(vf, bsf, idx, nblock, h, w, gen, pixel_format), pixels
