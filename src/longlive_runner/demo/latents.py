"""The demo model's latent space: the scene's parameters laid out as a Wan latent, learned by its VAE.

Training a Wan VAE from scratch as an autoencoder takes far longer than the demo's CPU budget, so
the demo defines its latent space from what the renderer knows (`scenes.Clip`: the object's
position in every video frame and the scene in force) and trains the Wan *decoder* to draw it (and
the Wan encoder to reproduce it). The DiT is trained on these latents. The runner only ever decodes,
through the usual `StreamingDecoder`; the layout is the Wan VAE's (8x spatial and 4x causal
temporal compression: latent frame 0 is video frame 0, latent frame l >= 1 is video frames
4l-3 .. 4l), with `CHANNELS` channels per 8x8-pixel cell:

  * 0-31, position: for each of the latent's 4 video frames k, a field of 8 channels (`FIELD`):
    the phases of the object's offset from the cell's centre on the torus, (cos px, sin px,
    cos py, sin py) with p = 2*pi*(cell centre - object centre) / frame size, and the share of each
    4x4-pixel quarter of the cell the object covers in that frame (top-left, top-right,
    bottom-left, bottom-right: the frame drawn at 16x16, folded into the cell). The phases say
    where the object is from every cell (what the DiT continues smoothly); the quarters are a
    small drawing of the frame's silhouette, which a small decoder learns to sharpen in minutes
    (from the phases alone it did not learn in the CPU budget). Every video frame has its own
    field, so the object moves on every frame, not once per latent frame. Latent frame 0 repeats
    video frame 0's field 4 times.
  * 32-34: the shape (one-hot: circle, square, triangle), the same in every cell;
  * 35-42: the object's colour, one-hot over the palette, times the share of the cell the object
    covers (over the latent's 4 video frames); 43-46: the background's, one-hot, times the share
    it covers. A pixel's colour is then, to first order, a linear function of the latent (the
    palette colours weighted by the upsampled shares), which the decoder learns in a few hundred
    steps, then sharpens with the position fields and the shape. Colours as global fields
    instead need a product of colour and coverage, and the small decoder stayed on one mean
    colour for hundreds of steps.

The scenes move 2 px per video frame at 64x64 = 8 px = one cell per latent frame, so a scene's
latent frame l+1 is latent frame l shifted by one cell (exactly, wrap-around included): what the
DiT continues. A prompt switch changes channels 32-46 from the block's first latent frame on; the
position carries on. The demo's VAE decoder draws video frame k of a latent from channels 32-46
and field k alone (built in by `scripts/train_demo.py`, `routed_decoder_init`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .scenes import (
    BACKGROUNDS,
    COLORS,
    SHAPES,
    TEMPORAL,
    Clip,
    Scene,
    Style,
    latent_of_video_frame,
    num_video_frames,
    render_frame,
    shape_coverage,
    torus_offsets,
)

CELL = 8
QUARTER = CELL // 2
FIELD = 8  # per video frame: cos px, sin px, cos py, sin py, the 4 quarters' coverage
POSITION_CHANNELS = FIELD * TEMPORAL
SHAPE = slice(POSITION_CHANNELS, POSITION_CHANNELS + len(SHAPES))
COLOR = slice(SHAPE.stop, SHAPE.stop + len(COLORS))
BACKGROUND = slice(COLOR.stop, COLOR.stop + len(BACKGROUNDS))
CHANNELS = BACKGROUND.stop  # 47


def _one_hot(names: list[str] | tuple[str, ...], name: str) -> np.ndarray:
    return np.asarray([n == name for n in names], dtype=np.float32)[:, None, None]


def _video_frames_of_latent(latent: int) -> list[int]:
    if latent == 0:  # the first latent frame decodes to one video frame, drawn in all 4 slots
        return [0] * TEMPORAL
    first = num_video_frames(latent)
    return list(range(first, first + TEMPORAL))


def _quarter_coverage(shape: str, centre: np.ndarray, height: int, width: int, style: Style) -> np.ndarray:
    """The share [4, H/8, W/8] of each quarter of each cell (top-left, top-right, bottom-left,
    bottom-right) the object covers, centred at `centre` (x, y) on the torus."""
    dx, dy = torus_offsets(height, width, float(centre[0]), float(centre[1]))
    cov = shape_coverage(shape, dx, dy, style.radius)
    h, w = height // CELL, width // CELL
    q = cov.reshape(h, 2, QUARTER, w, 2, QUARTER).mean((2, 5))  # [h, 2 (row), w, 2 (col)]
    quarters: np.ndarray = q.transpose(1, 3, 0, 2).reshape(4, h, w)
    return quarters


def scene_latents(clip: Clip, height: int, width: int) -> torch.Tensor:
    """A rendered clip's raw latents [CHANNELS, L, H/8, W/8] (float32), L = its latent frames."""
    t = len(clip.scenes)
    num_latent = latent_of_video_frame(t - 1) + 1 if t > 0 else 0
    if num_video_frames(num_latent) != t:
        raise ValueError(f"a clip needs 1 + 4k video frames, got {t}")
    return latents_of(clip.scenes, clip.positions, height, width, range(num_latent))


def latents_of(
    scenes: Sequence[Scene], positions: np.ndarray, height: int, width: int, latent_frames: range
) -> torch.Tensor:
    """The raw latents [CHANNELS, len(latent_frames), H/8, W/8] (float32) of a clip's latent frames
    `latent_frames`, from its scene and object centre (x, y) per video frame (`scenes`,
    `positions` [T, 2], from video frame 0): what `scene_latents` lays out, for any positions."""
    h, w = height // CELL, width // CELL
    style = Style.for_size(height, width)
    cx = (np.arange(w) + 0.5) * CELL  # cell centres, pixels
    cy = (np.arange(h) + 0.5) * CELL
    out = np.empty((CHANNELS, len(latent_frames), h, w), dtype=np.float32)
    for n, lat in enumerate(latent_frames):
        frames = _video_frames_of_latent(lat)
        scene = scenes[frames[-1]]
        quarters = [_quarter_coverage(scene.shape, positions[j], height, width, style) for j in frames]
        out[SHAPE, n] = _one_hot(SHAPES, scene.shape)
        for k, j in enumerate(frames):
            x, y = positions[j]
            px = 2.0 * math.pi * (cx - x) / width  # [w]
            py = 2.0 * math.pi * (cy - y) / height  # [h]
            f = FIELD * k
            out[f + 0, n] = np.cos(px)[None, :]
            out[f + 1, n] = np.sin(px)[None, :]
            out[f + 2, n] = np.cos(py)[:, None]
            out[f + 3, n] = np.sin(py)[:, None]
            out[f + 4 : f + 8, n] = quarters[k]
        share = np.mean(quarters, axis=(0, 1))  # of each cell, over the latent's video frames
        out[COLOR, n] = _one_hot(list(COLORS), scene.color) * share
        out[BACKGROUND, n] = _one_hot(list(BACKGROUNDS), scene.background) * (1.0 - share)
    return torch.from_numpy(out)


def object_phases(raw: torch.Tensor) -> torch.Tensor:
    """Raw latent frames [..., CHANNELS, h, w] -> for each video frame's field and each axis (x, y)
    the circular mean (cos, sin) of the object's phase on the torus [..., 4, 2, 2]: each cell's
    phase p = 2*pi*(cell - object) / size turned back by the cell's own phase, then averaged over
    the cells (the mean's length says how well they agree). Differentiable: `read_latent` reads
    places from it, and `scripts/train_demo.py`'s position loss trains through it."""
    h, w = raw.shape[-2:]
    p = raw[..., :POSITION_CHANNELS, :, :].reshape(
        *raw.shape[:-3], TEMPORAL, FIELD, h, w
    )  # [..., 4, FIELD, h, w]
    ax = (2.0 * math.pi / w) * (torch.arange(w, dtype=raw.dtype) + 0.5)  # each cell's own phase
    ay = (2.0 * math.pi / h) * (torch.arange(h, dtype=raw.dtype) + 0.5)
    axes = []
    for cos_p, sin_p, a in (
        (p[..., 0, :, :], p[..., 1, :, :], ax[None, :]),
        (p[..., 2, :, :], p[..., 3, :, :], ay[:, None]),
    ):
        cos_o = (torch.cos(a) * cos_p + torch.sin(a) * sin_p).mean((-2, -1))  # cos(a - p)
        sin_o = (torch.sin(a) * cos_p - torch.cos(a) * sin_p).mean((-2, -1))
        axes.append(torch.stack([cos_o, sin_o], dim=-1))
    return torch.stack(axes, dim=-2)


def object_places(raw: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Raw latent frames [..., CHANNELS, h, w] -> the object's centre (x, y) in pixels in each of
    their 4 video frames [..., 4, 2] (the angle of `object_phases`)."""
    u = object_phases(raw.detach().double().cpu()).numpy()  # [..., 4, 2, 2]
    size = np.asarray([width, height], dtype=np.float64)
    places: np.ndarray = (np.arctan2(u[..., 1], u[..., 0]) * size / (2.0 * math.pi)) % size
    return places


def read_latent(raw: torch.Tensor, height: int, width: int) -> tuple[Scene, np.ndarray]:
    """One raw latent frame [CHANNELS, h, w] -> (the scene it names, the object's centre (x, y) in
    each of its 4 video frames [4, 2]), read by the circular mean of the position fields and the
    largest one-hot entries. The demo's analytic "decoder": it scores the DiT alone (eval --preview)."""
    centres = object_places(raw, height, width)
    z = raw.detach().float().cpu().numpy()
    shape = SHAPES[int(np.argmax(z[SHAPE].mean((1, 2))))]
    color = list(COLORS)[int(np.argmax(z[COLOR].sum((1, 2))))]
    background = list(BACKGROUNDS)[int(np.argmax(z[BACKGROUND].sum((1, 2))))]
    # a latent frame holds no direction (the motion is across frames); the renderer ignores it
    scene = Scene(color=color, shape=shape, direction="right", background=background)
    return scene, centres


def latent_preview(raw: torch.Tensor, first_block: bool, height: int, width: int) -> np.ndarray:
    """Raw latents [CHANNELS, n, h, w] of one block -> the uint8 frames [T, H, W, 3] they name,
    drawn by the scene renderer (no decoder): T = 1 + 4(n-1) for a video's first block, else 4n."""
    style = Style.for_size(height, width)
    frames = []
    for lat in range(raw.shape[1]):
        scene, centres = read_latent(raw[:, lat], height, width)
        ks = [0] if (first_block and lat == 0) else range(TEMPORAL)
        for k in ks:
            frames.append(render_frame(scene, centres[k, 0], centres[k, 1], height, width, style))
    return np.stack(frames)


__all__ = [
    "BACKGROUND",
    "CHANNELS",
    "COLOR",
    "FIELD",
    "POSITION_CHANNELS",
    "SHAPE",
    "latent_preview",
    "latents_of",
    "object_phases",
    "object_places",
    "read_latent",
    "scene_latents",
]
