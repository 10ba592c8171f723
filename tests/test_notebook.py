"""`longlive.notebook.show()`: live frames under a notebook cell, with a fake `IPython.display`."""

from __future__ import annotations

import asyncio
import struct
import sys
import types
import zlib
from typing import Any

import numpy as np
import pytest

from _poll import eventually
from longlive import Reactor, latent_to_video_frame
from longlive.notebook import LiveView, encode_png, show


# ----------------------------------------------------------------------------------------------
# A PNG decoder (the encoder's inverse, written from the PNG spec) and a fake IPython.display
# ----------------------------------------------------------------------------------------------
def decode_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit, non-interlaced PNG whose rows all use filter 0 (what encode_png writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, f"bad CRC in {tag!r}"
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        elif tag == b"IEND":
            break
        pos += 12 + length
    assert header is not None
    w, h, depth, color_type, _, _, interlace = header
    assert depth == 8 and interlace == 0
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(h, w, channels)


class FakeHandle:
    def __init__(self, display_id: str, obj: Any) -> None:
        self.display_id = display_id
        self.history = [obj]

    def update(self, obj: Any) -> None:
        self.history.append(obj)

    @property
    def current(self) -> Any:
        return self.history[-1]


class FakeImage:
    def __init__(
        self, data: bytes | None = None, format: str | None = None, width: int | None = None
    ) -> None:
        assert isinstance(data, bytes) and format == "png"
        self.data, self.format, self.width = data, format, width


class FakeHTML:
    def __init__(self, data: str) -> None:
        self.data = data


class FakeDisplay(types.ModuleType):
    """Just what `IPython.display` offers and `show()` uses: display(obj, display_id=True)."""

    def __init__(self) -> None:
        super().__init__("IPython.display")
        self.handles: list[FakeHandle] = []
        self.Image = FakeImage
        self.HTML = FakeHTML

    def display(self, obj: Any, display_id: Any = None) -> FakeHandle | None:
        if display_id is None:
            return None
        handle = FakeHandle(f"id{len(self.handles)}", obj)
        self.handles.append(handle)
        return handle


@pytest.fixture
def fake_display(monkeypatch: pytest.MonkeyPatch) -> FakeDisplay:
    module = FakeDisplay()
    parent = types.ModuleType("IPython")
    parent.display = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", parent)
    monkeypatch.setitem(sys.modules, "IPython.display", module)
    return module


def _html(obj: Any) -> str:
    return obj._repr_html_() if hasattr(obj, "_repr_html_") else obj.data


# ----------------------------------------------------------------------------------------------
# The PNG encoder
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(64, 112, 3), (1, 1, 3), (5, 7), (9, 4, 4), (480, 832, 3)])
def test_encode_png_round_trips(shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    decoded = decode_png(encode_png(image))
    np.testing.assert_array_equal(decoded.reshape(image.shape), image)


def test_encode_png_is_readable_by_pillow() -> None:
    import io

    from PIL import Image as pil  # comes with imageio

    image = np.random.default_rng(1).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(pil.open(io.BytesIO(encode_png(image)))), image)


def test_encode_png_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((4, 4, 5), np.uint8))
    # a read-only, non-contiguous view (as frames are) is fine
    image = np.arange(8 * 6 * 3, dtype=np.uint8).reshape(8, 6, 3)[::2, ::-1]
    image.flags.writeable = False
    np.testing.assert_array_equal(decode_png(encode_png(image)), image)


def test_show_without_ipython_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    reactor = Reactor("ws://127.0.0.1:9")  # never connected: show() fails before using it
    with pytest.raises(ImportError, match="pip install ipython"):
        show(reactor)


# ----------------------------------------------------------------------------------------------
# Live, with the in-process runner
# ----------------------------------------------------------------------------------------------
async def test_show_updates_one_image_as_frames_arrive(fake_display: FakeDisplay) -> None:
    received: dict[int, np.ndarray] = {}
    async with Reactor.local(model="tiny", device="cpu") as reactor:
        reactor.on_frame(lambda f: received.__setitem__(f.index, f.image.copy()))
        view = show(reactor, max_fps=25)
        assert isinstance(view, LiveView)
        image_area, status_area = fake_display.handles  # two display areas, created once
        assert "waiting for frames" in image_area.current.data

        await reactor.schedule_prompt("a red fox in snow", timestamp=0)
        await reactor.start(seed=3)
        await reactor.wait_for_frame(9, timeout=60)  # 3 blocks: 33 video frames
        # The status area: position, phase and the prompt timeline, with the prompt in force.
        await eventually(
            lambda: "running" in _html(status_area.current) and "in force" in _html(status_area.current),
            "the status area shows the video running, with a prompt in force",
        )
        assert "a red fox in snow ← in force" in _html(status_area.current)  # the runner's state.in_force
        # Paused, the last frames arrive and no more: the throttled update then shows the newest one.
        stop_at = (await reactor.pause()).effective_frame
        await reactor.wait_for_frame(stop_at, timeout=60)
        await eventually(lambda: view.shown_index == max(received), "the newest frame is shown")

        assert len(fake_display.handles) == 2  # updated in place, never a new output
        images = [obj for obj in image_area.history if isinstance(obj, FakeImage)]
        assert len(images) >= 3 and view.images_shown == len(images)
        decoded = [decode_png(img.data) for img in images]
        assert all(d.shape == (64, 112, 3) for d in decoded)
        # The image really changes as the video goes on ...
        distinct = {d.tobytes() for d in decoded}
        assert len(distinct) >= 3
        # ... and what is on screen is the newest frame, exactly.
        np.testing.assert_array_equal(decoded[-1], received[view.shown_index])
        assert images[-1].width >= 112

        # Throttled: never more images than frames, and far fewer than frames at a low rate.
        assert view.frames_received == len(received) >= 33
        assert view.images_shown <= view.frames_received

        await reactor.schedule_prompt("the fox runs", timestamp=reactor.current_start_frame + 3)
        await eventually(lambda: "the fox runs" in _html(status_area.current), "the new prompt is listed")
        assert "frame" in repr(status_area.current)  # a one-line text form for terminals

        # A reset puts the placeholder back; close() stops every update.
        await reactor.reset()
        await eventually(
            lambda: (
                isinstance(image_area.current, FakeHTML) and "waiting for frames" in image_area.current.data
            ),
            "the placeholder is back after the reset",
        )
        view.close()
        count = len(image_area.history) + len(status_area.history)
        # A second view, opened after close(), is the witness: the closed view would have updated
        # before it (its callbacks come first and its last update is older), so once the witness
        # shows the newest frame of the new video, the closed view has had every chance to.
        witness = show(reactor, max_fps=25)
        await reactor.schedule_prompt("a blue boat", timestamp=0)
        await reactor.start()
        await reactor.wait_for_frame(3, timeout=60)
        newest = latent_to_video_frame(3) - 1  # the last frame of block 0
        await eventually(lambda: witness.shown_index >= newest, "the witness view shows the new video")
        assert len(image_area.history) + len(status_area.history) == count
        witness.close()


async def test_show_is_throttled(fake_display: FakeDisplay) -> None:
    async with Reactor.local(model="tiny", device="cpu") as reactor:
        view = show(reactor, max_fps=2)
        await reactor.schedule_prompt("a red fox in snow", timestamp=0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await reactor.start()
        await reactor.wait_for_frame(9, timeout=60)
        stop_at = (await reactor.pause()).effective_frame
        await reactor.wait_for_frame(stop_at, timeout=60)  # the block in flight: the last frames
        # No frame comes after these: the last pending update (at most 1/max_fps later) shows the newest.
        await eventually(
            lambda: view.shown_index == reactor.frames_received - 1, "the newest frame ends up shown"
        )
        elapsed = loop.time() - t0
        assert view.images_shown <= 2 * elapsed + 2
        assert view.images_shown < view.frames_received
        view.close()
