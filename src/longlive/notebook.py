"""Live display of a `Reactor` in Jupyter: frames appear under the cell as they arrive.

```python
from longlive import Reactor
from longlive.notebook import show

reactor = Reactor.local(model="tiny")         # or Reactor("ws://127.0.0.1:8765")
await reactor.connect()
view = show(reactor)                           # the video, its progress and the prompt timeline
await reactor.schedule_prompt("a red circle moving right on a black background", timestamp=0)
await reactor.start()
```

`show()` registers callbacks on the reactor (`on_frame`, `on_progress`, `on_state`, ...): it
works with every transport, and keeps updating after the cell has finished (Jupyter's event loop
keeps running). The newest frame is encoded to PNG (a small numpy + zlib encoder: no Pillow) and
shown in one display area updated in place (a `display_id`), at most `max_fps` times a second;
frames in between are skipped for display only (the reactor still receives all of them). Below
it, one more display area shows the position, the speed and the prompt timeline.

IPython is imported only when `show()` is called (it comes with Jupyter: `pip install ipython`).
"""

from __future__ import annotations

import asyncio
import html
import importlib
import math
import struct
import time
import zlib
from collections import deque
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InvalidStateError
from .units import latent_to_video_frame, next_block_boundary, timeline_end

if TYPE_CHECKING:
    from ._client import Reactor
    from ._types import Frame

__all__ = ["LiveView", "encode_png", "show"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)


def encode_png(image: np.ndarray, *, compress_level: int = 1) -> bytes:
    """A PNG file of `image`: uint8 [H, W, 3] (RGB), [H, W, 4] (RGBA) or [H, W] (grey).

    Pure numpy + zlib: 8-bit samples, no interlace, filter 0 on every row. Level 1 compresses a
    480x832 frame in a few milliseconds.
    """
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"encode_png() needs uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in _COLOR_TYPES or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"encode_png() needs an [H, W], [H, W, 3] or [H, W, 4] image, got shape {a.shape}")
    h, w, c = a.shape
    rows = np.empty((h, 1 + w * c), dtype=np.uint8)
    rows[:, 0] = 0  # filter type 0 (None) for every scanline
    rows[:, 1:] = a.reshape(h, w * c)
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOR_TYPES[c], 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _ipython_display() -> ModuleType:
    try:
        return importlib.import_module("IPython.display")
    except ImportError as exc:
        raise ImportError(
            "longlive.notebook.show() displays frames with IPython, which is not installed: "
            "run it in Jupyter, or `pip install ipython`"
        ) from exc


def _get(reactor: Reactor, name: str) -> Any:
    """`reactor.state` / `reactor.hello`, or None before the runner sent them."""
    try:
        return getattr(reactor, name)
    except InvalidStateError:
        return None


class _NoHandle:
    def update(self, obj: Any) -> None:
        pass


class _Status:
    """The status area: HTML in notebooks, one line of text in a terminal."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html = html_text
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


class LiveView:
    """What `show()` returns: the display areas of one reactor, updated by its callbacks.

    `close()` (or leaving `with view:`) stops updating, after one last update.
    """

    def __init__(
        self,
        reactor: Reactor,
        *,
        max_fps: float = 10.0,
        width: int | None = None,
        compress_level: int = 1,
        display_module: ModuleType | None = None,
    ) -> None:
        if not max_fps > 0:
            raise ValueError("max_fps must be > 0")
        self.reactor = reactor
        self.max_fps = float(max_fps)
        self.width = width
        self.compress_level = compress_level
        self._ipd = display_module if display_module is not None else _ipython_display()
        self._latest: Frame | None = None
        self._frame_dirty = False
        self._last_flush = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._arrivals: deque[float] = deque()
        self._generation: int | None = None
        self._finished: str | None = None
        #: Frames the reactor delivered while this view was open.
        self.frames_received = 0
        #: Images put on screen (at most `max_fps` a second).
        self.images_shown = 0
        #: The video frame index of the image on screen (-1: none yet).
        self.shown_index = -1
        # Outside an IPython shell display() prints once and returns no handle: updates are dropped.
        self._image_handle = self._ipd.display(self._placeholder(), display_id=True) or _NoHandle()
        self._status_handle = self._ipd.display(self._status(), display_id=True) or _NoHandle()
        reactor.on_frame(self._on_frame)
        reactor.on_progress(self._on_update)
        reactor.on_state(self._on_state)
        reactor.on_status(self._on_update)
        reactor.on_generation_finished(self._on_finished)

    # --- callbacks (on the reactor's event loop) ----------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        if self._closed:
            return
        if self._generation is not None and frame.generation < self._generation:
            return
        self._latest = frame
        self._frame_dirty = True
        self.frames_received += 1
        now = time.monotonic()
        self._arrivals.append(now)
        while self._arrivals and self._arrivals[0] < now - 3.0:
            self._arrivals.popleft()
        self._schedule()

    def _on_state(self, state: Any) -> None:
        if self._generation is not None and state.generation > self._generation:  # a reset
            self._latest = None
            self._frame_dirty = False
            self._arrivals.clear()
            self.shown_index = -1
            self._image_handle.update(self._placeholder())
        if self._generation is None or state.generation >= self._generation:
            self._generation = state.generation
            self._finished = state.finished
        self._on_update(state)

    def _on_finished(self, msg: Any) -> None:
        self._finished = getattr(msg, "reason", None)
        self._on_update(msg)

    def _on_update(self, _: Any = None) -> None:
        if not self._closed:
            self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a direct call): update now
            self._flush()
            return
        delay = max(0.0, self._last_flush + 1.0 / self.max_fps - loop.time())
        self._timer = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        try:
            self._last_flush = asyncio.get_running_loop().time()
        except RuntimeError:
            self._last_flush = -math.inf
        frame = self._latest
        if self._frame_dirty and frame is not None:
            self._frame_dirty = False
            self._image_handle.update(self._image(frame))
            self.images_shown += 1
            self.shown_index = frame.index
        self._status_handle.update(self._status())

    # --- rendering ------------------------------------------------------------------------------
    def _image(self, frame: Frame) -> Any:
        png = encode_png(frame.image, compress_level=self.compress_level)
        w = frame.width
        shown = self.width or (w if w >= 320 else w * math.ceil(320 / w))  # small videos: enlarged
        return self._ipd.Image(data=png, format="png", width=shown)

    def _placeholder(self) -> Any:
        return self._ipd.HTML(
            '<div style="padding:1em;color:#888;font-family:sans-serif">waiting for frames…</div>'
        )

    def _fps(self) -> float:
        now = time.monotonic()
        while self._arrivals and self._arrivals[0] < now - 3.0:
            self._arrivals.popleft()
        if not self._arrivals:
            return 0.0
        return len(self._arrivals) / min(3.0, max(now - self._arrivals[0], 0.25))

    def _status(self) -> _Status:
        r = self.reactor
        state = _get(r, "state")
        hello = _get(r, "hello")
        csf = r.current_start_frame
        fps = hello.fps if hello is not None else 16
        fpb = hello.frames_per_block if hello is not None else 3
        tc = hello.temporal_compression if hello is not None else 4
        max_frames = hello.max_frames if hello is not None else 1024
        phase: str
        if state is None:
            phase = r.status
        elif state.finished is not None:
            phase = f"finished ({state.finished})"
        elif state.running:
            phase = "paused" if state.paused else "running"
        else:
            phase = "idle"
        video = latent_to_video_frame(csf, tc)
        rate = self._fps()
        prompt = state.current_prompt if state is not None else None
        text = f"frame {csf} (video {video}, {video / fps:.2f} s) · {phase} · {rate:.1f} fps" + (
            f" · {prompt}" if prompt else ""
        )
        prompts = sorted((state.scheduled_prompts if state is not None else {}).items())
        in_force = state.in_force if state is not None else None  # the runner says which (protocol 7.2)
        end = timeline_end(csf, prompts[-1][0] if prompts else 0, fpb, max_frames)

        def pct(f: float) -> str:
            return f"{100 * f / end:.3f}%"

        esc = html.escape
        markers = []
        for ts, p in prompts:
            color = "#e0a800" if ts == in_force else "#888"
            markers.append(
                f'<div title="{esc(f"{ts}: {p}")}" style="position:absolute;left:{pct(ts)};top:2px;'
                f'bottom:2px;width:3px;background:{color}"><span style="position:absolute;left:5px;top:0;'
                f"white-space:nowrap;font-size:11px;max-width:240px;overflow:hidden;text-overflow:ellipsis;"
                f'color:{color}">{esc(p)}</span></div>'
            )
        bold = ' style="font-weight:bold"'
        rows = "".join(
            f"<li{bold if ts == in_force else ''}><code>{ts}</code> "
            f"({latent_to_video_frame(next_block_boundary(ts, fpb), tc) / fps:.2f} s): {esc(p)}"
            f"{' ← in force' if ts == in_force else ''}</li>"
            for ts, p in prompts
        )
        blocks = max(1, math.ceil(end / fpb))
        html_text = (
            '<div style="font-family:sans-serif;font-size:13px;max-width:900px">'
            f"<div><b>frame {csf}</b> (video frame {video}, {video / fps:.2f} s) · {esc(phase)} · "
            f"{rate:.1f} fps received · {self.images_shown} images shown"
            + (f" · <span style='color:#e0a800'>{esc(prompt)}</span>" if prompt else "")
            + "</div>"
            '<div style="position:relative;height:34px;margin:6px 0;border:1px solid #999;'
            "background-image:repeating-linear-gradient(to right,#bbb 0 1px,transparent 1px "
            f'calc(100% / {blocks}))">'
            f'<div style="position:absolute;left:0;top:0;bottom:0;width:{pct(min(csf, end))};'
            'background:rgba(79,163,255,.25)"></div>'
            + "".join(markers)
            + f'<span style="position:absolute;right:3px;bottom:0;font-size:10px;color:#888">{end}</span>'
            "</div>" + (f'<ol style="margin:0;padding-left:1.5em">{rows}</ol>' if rows else "") + "</div>"
        )
        return _Status(html_text, text)

    # --- lifecycle ------------------------------------------------------------------------------
    def update(self) -> None:
        """Redraw now (the newest frame and the status), whatever the rate limit: the frame is
        sent again even if it is on screen (a headless run saves only the updates sent while a
        cell runs: `nbclient`, `jupyter nbconvert --execute`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._frame_dirty = self._latest is not None
        self._flush()

    def close(self) -> None:
        """Stop following the reactor (one last update first)."""
        if self._closed:
            return
        self.update()
        self._closed = True
        for fn in (self._on_frame, self._on_update, self._on_state, self._on_finished):
            self.reactor.off(fn)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<LiveView frames_received={self.frames_received} images_shown={self.images_shown} "
            f"closed={self._closed}>"
        )


def show(
    reactor: Reactor,
    *,
    max_fps: float = 10.0,
    width: int | None = None,
    compress_level: int = 1,
) -> LiveView:
    """Show `reactor`'s video under the current cell, live, with its progress and prompt timeline.

    - `max_fps`: the most image updates a second (frames in between are not displayed);
    - `width`: display width in pixels (default: the frame's, enlarged for tiny frames);
    - `compress_level`: zlib level of the PNG images (1 is fast; 6 makes smaller images).

    Call it with the reactor connected or not; updates run on the reactor's event loop. Returns
    a `LiveView`; `view.close()` stops it. Raises ImportError when IPython is not installed.
    """
    return LiveView(reactor, max_fps=max_fps, width=width, compress_level=compress_level)
