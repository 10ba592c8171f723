"""Analytic scoring of demo videos: background colour, object colour and motion, from pixels.

Per frame:
  * background: every pixel of a 2-pixel border ring votes for its nearest background colour;
    the majority wins (the object covers only part of the ring even when it wraps over an edge);
  * object: the pixels farther than `threshold` (RGB distance) from the measured background; its
    colour is the median of the "core" pixels (at least half the largest distance, which drops
    anti-aliased edges) classified to the nearest palette colour;
  * centroid: the circular mean of the object pixels on the torus (the scenes wrap around), so an
    object split over an edge still has one centre.
  * shape: the object's soft coverage (each pixel's position between the background and the
    object colour) against each shape's template drawn at the measured centroid and the scenes'
    size; the best intersection-over-union names the shape (a blob is a circle: it never passes
    for a square or a triangle, whose corners and straight edges the templates need).
Per frame pair (glide): the wrapped centroid step must be the scene's velocity (its speed in the
frame's direction) within +-50% of the speed, on every pair, not once per latent frame.
Per block: the motion is the sum of the wrapped frame-to-frame centroid steps inside the block;
its dominant axis and sign give the direction (None below `min_motion` pixels).
Per switch (clean): on the first frame under the new prompt the object keeps its place (the step
into it passes the glide test: no jump), shows the new colour and background (no blend: its colour
within `BLEND_TOLERANCE` of the new palette colour), and through the new latent frame's 4 video
frames nothing but the object differs from the background (no ghost of the old object).

`score(frames, schedule)` compares the measurements with the schedule's prompts frame by frame and
block by block, and measures how fast each scheduled switch shows up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .scenes import (
    BACKGROUNDS,
    COLORS,
    DIRECTIONS,
    SHAPES,
    TEMPORAL,
    Scene,
    Style,
    block_video_range,
    latent_of_video_frame,
    scene_at,
    shape_coverage,
    torus_offsets,
)

_BG_NAMES = list(BACKGROUNDS)
_BG = np.asarray([BACKGROUNDS[n] for n in _BG_NAMES], dtype=np.float32)
_FG_NAMES = list(COLORS)
_FG = np.asarray([COLORS[n] for n in _FG_NAMES], dtype=np.float32)


@dataclass
class FrameMeasure:
    background: str
    color: str | None  # None: no object found
    centroid: tuple[float, float] | None  # (x, y) pixels
    pixels: int  # object pixels
    rgb: tuple[float, float, float] | None = None  # the object's measured colour (median of its core)
    shape: str | None = None  # set by `measure_frame(..., style=...)`
    stray: int = 0  # with a style: pixels off the background outside the object's dilated template


def _nearest(colors: np.ndarray, palette: np.ndarray) -> np.ndarray:
    d = ((colors[..., None, :] - palette) ** 2).sum(-1)
    nearest: np.ndarray = d.argmin(-1)
    return nearest


def _border(frame: np.ndarray, width: int = 2) -> np.ndarray:
    return np.concatenate(
        [
            frame[:width].reshape(-1, 3),
            frame[-width:].reshape(-1, 3),
            frame[width:-width, :width].reshape(-1, 3),
            frame[width:-width, -width:].reshape(-1, 3),
        ]
    )


def _circular_mean(coords: np.ndarray, weights: np.ndarray, period: int) -> float:
    ang = (coords + 0.5) * (2.0 * np.pi / period)
    a = np.arctan2((weights * np.sin(ang)).sum(), (weights * np.cos(ang)).sum())
    return float((a * period / (2.0 * np.pi) - 0.5) % period)


BLEND_TOLERANCE = 60.0  # RGB distance: a frame's object colour this far from its palette colour is a blend
STRAY_THRESHOLD = 32.0  # RGB distance from the background that counts as a stray (ghost) pixel
MAX_STRAY = 4  # stray pixels a frame may have (edge noise) before it counts as a ghost


def classify_shape(
    f: np.ndarray, background: np.ndarray, color: np.ndarray, dx: np.ndarray, dy: np.ndarray, radius: float
) -> str:
    """The shape whose template (the scenes' `radius`, centred where the pixel offsets `dx`, `dy`
    are zero) best matches the soft coverage of the object in float frame `f` [H, W, 3]
    (intersection over union)."""
    span = (color - background).astype(np.float32)
    cov = np.clip(((f - background) * span).sum(-1) / max(float((span**2).sum()), 1e-6), 0.0, 1.0)
    best, best_iou = SHAPES[0], -1.0
    for shape in SHAPES:
        tpl = shape_coverage(shape, dx, dy, radius)
        iou = float(np.minimum(cov, tpl).sum() / max(float(np.maximum(cov, tpl).sum()), 1e-6))
        if iou > best_iou:
            best, best_iou = shape, iou
    return best


def measure_frame(
    frame: np.ndarray, threshold: float = 64.0, min_pixels: int = 6, style: Style | None = None
) -> FrameMeasure:
    """Measure one uint8 [H, W, 3] frame (with `style`, the scenes' geometry: its shape and stray
    pixels too)."""
    f = frame.astype(np.float32)
    border = _border(f)
    votes = np.bincount(_nearest(border, _BG), minlength=len(_BG_NAMES))
    bg_idx = int(votes.argmax())
    ring = border[_nearest(border, _BG) == bg_idx]
    bg = np.median(ring, axis=0)
    dist = np.sqrt(((f - bg) ** 2).sum(-1))  # [H, W]
    mask = dist > threshold
    n = int(mask.sum())
    if n < min_pixels:
        return FrameMeasure(_BG_NAMES[bg_idx], None, None, n)
    core = mask & (dist >= 0.5 * dist.max())
    color = np.median(f[core], axis=0)
    color_idx = int(_nearest(color[None], _FG)[0])
    ys, xs = np.nonzero(mask)
    w = dist[ys, xs]
    h, wd = frame.shape[:2]
    centroid = (_circular_mean(xs, w, wd), _circular_mean(ys, w, h))
    rgb = (float(color[0]), float(color[1]), float(color[2]))
    out = FrameMeasure(_BG_NAMES[bg_idx], _FG_NAMES[color_idx], centroid, n, rgb)
    if style is not None:
        dx, dy = torus_offsets(h, wd, centroid[0], centroid[1])
        out.shape = classify_shape(f, bg, color, dx, dy, style.radius)
        grown = shape_coverage(out.shape, dx, dy, style.radius + 2.0) > 0
        out.stray = int(((dist > STRAY_THRESHOLD) & ~grown).sum())
    return out


def measure_frames(frames: np.ndarray, **kw: Any) -> list[FrameMeasure]:
    return [measure_frame(f, **kw) for f in frames]


def motion(measures: list[FrameMeasure], height: int, width: int) -> tuple[float, float]:
    """Summed wrapped centroid steps (dx, dy) over consecutive frames that both show the object."""
    dx = dy = 0.0
    for a, b in zip(measures[:-1], measures[1:]):
        if a.centroid is not None and b.centroid is not None:
            sx, sy = _step(a.centroid, b.centroid, height, width)
            dx += sx
            dy += sy
    return dx, dy


def _step(a: tuple[float, float], b: tuple[float, float], height: int, width: int) -> tuple[float, float]:
    """The shortest (wrapped) step from centroid `a` to centroid `b` on the torus."""
    return (
        (b[0] - a[0] + width / 2.0) % width - width / 2.0,
        (b[1] - a[1] + height / 2.0) % height - height / 2.0,
    )


def glides(a: FrameMeasure, b: FrameMeasure, scene: Scene, speed: float, height: int, width: int) -> bool:
    """The centroid step from frame `a` to the next frame `b` is `scene`'s velocity within +-50% of
    its speed (both frames must show the object)."""
    if a.centroid is None or b.centroid is None:
        return False
    dx, dy = _step(a.centroid, b.centroid, height, width)
    vx, vy = DIRECTIONS[scene.direction]
    return bool(np.hypot(dx - vx * speed, dy - vy * speed) <= 0.5 * speed)


def direction_of(dx: float, dy: float, min_motion: float) -> str | None:
    if max(abs(dx), abs(dy)) < min_motion:
        return None
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


# --- scoring against a schedule ---------------------------------------------------------------
@dataclass
class BlockScore:
    start_frame: int  # latent frame
    expected: Scene
    color: str | None  # majority over the block's frames
    background: str
    direction: str | None
    motion: tuple[float, float]


@dataclass
class SwitchScore:
    start_frame: int  # latent frame of the first block under the new prompt
    changed: list[str]  # attributes that changed: color / shape / direction / background
    latency: dict[str, int | None]  # per measurable attribute: blocks until it shows (0 = at once)
    holds: dict[str, bool]  # the new value is right on every frame / block until the next switch
    no_jump: bool = True  # the step into the first new frame is the scene's velocity (+-50%)
    no_blend: bool = True  # the first new frame shows the new colour and background
    no_ghost: bool = True  # the first new latent frame's video frames show nothing but the object

    @property
    def clean(self) -> bool:
        return self.no_jump and self.no_blend and self.no_ghost


@dataclass
class Score:
    frames: int
    color_acc: float
    background_acc: float
    direction_acc: float
    shape_acc: float = 0.0  # frames showing an object whose silhouette is the prompt's shape
    glide_acc: float = 0.0  # frame pairs whose centroid step is the scene's velocity (+-50%)
    blocks: list[BlockScore] = field(default_factory=list)
    switches: list[SwitchScore] = field(default_factory=list)
    frame_colors: list[str | None] = field(default_factory=list)
    # (the prompt's shape, the silhouette's best template) per frame showing an object
    frame_shapes: list[tuple[str, str | None]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"frames {self.frames}, blocks {len(self.blocks)}: object colour {self.color_acc:.1%}, "
            f"background {self.background_acc:.1%}, direction {self.direction_acc:.1%}, "
            f"shape {self.shape_acc:.1%}, glide {self.glide_acc:.1%}"
        ]
        for sw in self.switches:
            lines.append(
                f"  switch @{sw.start_frame} {'+'.join(sw.changed)}: latency {sw.latency} holds {sw.holds} "
                f"clean {sw.clean} (no jump {sw.no_jump}, no blend {sw.no_blend}, no ghost {sw.no_ghost})"
            )
        return "\n".join(lines)


_T = TypeVar("_T")


def _majority(values: list[_T]) -> _T:
    """The most common of `values` (a block always has frames: `values` is never empty)."""
    return Counter(values).most_common(1)[0][0]


def score(
    frames: np.ndarray,
    schedule: Mapping[int, str],
    *,
    frames_per_block: int = 3,
    min_motion: float | None = None,
    threshold: float = 64.0,
) -> Score:
    """Score uint8 frames [T, H, W, 3] (a whole stream, from its first frame) against `schedule`."""
    t, h, w = frames.shape[:3]
    if min_motion is None:
        min_motion = 0.05 * min(h, w)  # a scene moves ~0.26 * size per 12-frame block
    style = Style.for_size(h, w)
    measures = measure_frames(frames, threshold=threshold, style=style)
    expected = [scene_at(schedule, latent_of_video_frame(j), frames_per_block) for j in range(t)]
    color_ok = [m.color == e.color for m, e in zip(measures, expected)]
    bg_ok = [m.background == e.background for m, e in zip(measures, expected)]
    frame_shapes = [(e.shape, m.shape) for m, e in zip(measures, expected) if m.color is not None]
    shape_ok = [want == got for want, got in frame_shapes]
    glide_ok = [glides(measures[j - 1], measures[j], expected[j], style.speed, h, w) for j in range(1, t)]

    blocks: list[BlockScore] = []
    s = 0
    while True:
        a, b = block_video_range(s, frames_per_block)
        if b > t:
            break
        ms = measures[a:b]
        mv = motion(ms, h, w)
        blocks.append(
            BlockScore(
                start_frame=s,
                expected=expected[a],
                color=_majority([m.color for m in ms]),
                background=_majority([m.background for m in ms]),
                direction=direction_of(*mv, min_motion),
                motion=mv,
            )
        )
        s += frames_per_block
    dir_ok = [bl.direction == bl.expected.direction for bl in blocks]

    switches: list[SwitchScore] = []
    times = sorted(k for k in schedule if k > 0)
    for i, ts in enumerate(times):
        idx = [k for k, bl in enumerate(blocks) if bl.start_frame >= ts]
        if not idx:
            continue
        nxt = times[i + 1] if i + 1 < len(times) else None
        span = [k for k in idx if nxt is None or blocks[k].start_frame < nxt]
        if not span:
            continue
        new = blocks[span[0]].expected
        old = scene_at(schedule, ts - 1, frames_per_block)
        changed = [
            a for a in ("color", "shape", "direction", "background") if getattr(old, a) != getattr(new, a)
        ]
        latency: dict[str, int | None] = {}
        holds: dict[str, bool] = {}
        for attr in ("color", "background", "direction"):
            if attr not in changed:
                continue
            got = [getattr(blocks[k], attr) == getattr(new, attr) for k in span]
            latency[attr] = got.index(True) if True in got else None
            if attr == "direction":
                holds[attr] = all(got)
            else:
                a0 = block_video_range(blocks[span[0]].start_frame, frames_per_block)[0]
                b1 = block_video_range(blocks[span[-1]].start_frame, frames_per_block)[1]
                ok = color_ok if attr == "color" else bg_ok
                holds[attr] = all(ok[a0:b1])
        j0 = block_video_range(blocks[span[0]].start_frame, frames_per_block)[0]
        m0 = measures[j0]
        new_rgb = np.asarray(COLORS[new.color], dtype=np.float32)
        no_blend = (
            m0.rgb is not None
            and m0.background == new.background
            and float(np.sqrt(((np.asarray(m0.rgb) - new_rgb) ** 2).sum())) <= BLEND_TOLERANCE
        )
        switches.append(
            SwitchScore(
                ts,
                changed,
                latency,
                holds,
                no_jump=j0 > 0 and glide_ok[j0 - 1],
                no_blend=no_blend,
                no_ghost=all(m.stray <= MAX_STRAY for m in measures[j0 : j0 + TEMPORAL]),
            )
        )

    return Score(
        frames=t,
        color_acc=float(np.mean(color_ok)) if color_ok else 0.0,
        background_acc=float(np.mean(bg_ok)) if bg_ok else 0.0,
        direction_acc=float(np.mean(dir_ok)) if dir_ok else 0.0,
        shape_acc=float(np.mean(shape_ok)) if shape_ok else 0.0,
        glide_acc=float(np.mean(glide_ok)) if glide_ok else 0.0,
        blocks=blocks,
        switches=switches,
        frame_colors=[m.color for m in measures],
        frame_shapes=frame_shapes,
    )
