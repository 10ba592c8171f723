"""Synthetic scenes for the demo model: a prompt grammar, prompt schedules and a numpy renderer.

A scene is one object (a circle, square or triangle in a solid colour) on a plain background,
moving at constant speed in one of four directions. Prompts follow one template::

    a {color} {shape} moving {direction} on a {background} background

Schedules use the runner's convention: ``{latent frame: prompt}``, every timestamp a block
boundary, a prompt at frame 0. The prompt in force for the block starting at latent frame ``s``
is the one at the largest timestamp ``<= s``.

Rendering follows the runner's video layout: ``F`` latent frames decode to ``1 + 4(F-1)`` video
frames; latent frame 0 is video frame 0 and latent frame ``s >= 1`` is video frames
``4s-3 .. 4s``. So the block starting at latent frame ``s > 0`` owns video frames
``4s-3 .. 4s+8`` (12 frames) and the first block owns frames ``0 .. 8`` (9 frames).

Motion: the object starts at the centre of the frame and moves ``speed`` pixels per video
frame (default 2 px at 64 px: 8 px per latent frame, exactly one 8-px latent cell, so the scene's
latents shift by one cell per latent frame; 24 px per 12-frame block, easy to measure). The
frame is a torus: an object leaving one edge re-enters from the opposite edge (wrap-around),
so the direction named in the prompt holds on every frame (bouncing would reverse it). A
prompt switch changes colour / shape / direction / background from the first video frame of
the new block on, while the object keeps its place: the position carries across the switch.
The start is deterministic, so a whole clip is a function of its schedule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from longlive.units import latent_to_video_frame, prompt_in_force, video_to_latent_frame

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "white": (255, 255, 255),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "orange": (255, 140, 0),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "navy": (0, 0, 128),
    "dark green": (0, 100, 0),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}  # (dx, dy)
SWITCH_KINDS: tuple[str, ...] = ("color", "shape", "direction", "background")

TEMPORAL = 4  # video frames per latent frame (after the first)


@dataclass(frozen=True)
class Scene:
    """The attributes a prompt names."""

    color: str
    shape: str
    direction: str
    background: str

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")

    @property
    def prompt(self) -> str:
        return format_prompt(self)


def format_prompt(scene: Scene) -> str:
    return f"a {scene.color} {scene.shape} moving {scene.direction} on a {scene.background} background"


def parse_prompt(text: str) -> Scene:
    """Inverse of `format_prompt` (case and extra whitespace ignored; 'an' accepted for 'a')."""
    words = text.lower().split()
    if len(words) < 8 or words[0] not in ("a", "an") or words[3] != "moving" or words[5] != "on":
        raise ValueError(f"not a demo prompt: {text!r}")
    if words[6] not in ("a", "an") or words[-1] != "background":
        raise ValueError(f"not a demo prompt: {text!r}")
    return Scene(color=words[1], shape=words[2], direction=words[4], background=" ".join(words[7:-1]))


def grammar() -> str:
    """What the demo model draws, in one line (for warnings and help texts)."""
    return (
        "the demo model draws 'a COLOR SHAPE moving DIRECTION on a BACKGROUND background' "
        f"(COLOR: {', '.join(COLORS)}; SHAPE: {', '.join(SHAPES)}; "
        f"DIRECTION: {', '.join(DIRECTIONS)}; BACKGROUND: {', '.join(BACKGROUNDS)})"
    )


#: What `form_problem` puts in a missing slot of its example prompt.
FORM_EXAMPLE = Scene(color="red", shape="circle", direction="right", background="black")


def form_problem(text: str) -> str | None:
    """None for a prompt of the demo's form (`parse_prompt` reads it, every value known); else
    what is wrong with it, for the `prompt_form` warning: the parts it lacks (or that its words
    are out of the form's order) and the prompt rewritten in the form, from the values it has.

    The demo model was trained on that form only: a prompt outside it (`a blue square`) is out of
    its distribution and gives a blotchy, shape-shifting video."""
    try:
        parse_prompt(text)
        return None
    except ValueError:
        pass
    words = text.lower().split()
    used: set[int] = set()
    background = None
    for i, word in enumerate(words):
        if word == "background":
            for n in (2, 1):  # "dark green" before "green"
                phrase = " ".join(words[max(i - n, 0) : i])
                if i - n >= 0 and phrase in BACKGROUNDS:
                    background, used = phrase, set(range(i - n, i + 1))
                    break
            if background is not None:
                break
    rest = [w for i, w in enumerate(words) if i not in used]
    found = {
        "COLOR": next((w for w in rest if w in COLORS), None),
        "SHAPE": next((w for w in rest if w in SHAPES), None),
        "DIRECTION": next((w for w in rest if w in DIRECTIONS), None),
        "BACKGROUND": background,
    }
    example = format_prompt(
        Scene(
            color=found["COLOR"] or FORM_EXAMPLE.color,
            shape=found["SHAPE"] or FORM_EXAMPLE.shape,
            direction=found["DIRECTION"] or FORM_EXAMPLE.direction,
            background=found["BACKGROUND"] or FORM_EXAMPLE.background,
        )
    )
    missing = [part for part, value in found.items() if value is None]
    if missing:
        what = "it has no " + (", ".join(missing[:-1]) + " or " if len(missing) > 1 else "") + missing[-1]
    else:
        what = "its words are out of the form's order, or a part comes twice"
    return (
        f"the prompt is not of the demo model's form ({what}): the video will be out of what the "
        f"model was trained on (blotchy, the shape changing); in the form: {example!r}"
    )


def vocabulary() -> list[str]:
    """Every word a demo prompt can contain (for a word-level tokenizer)."""
    words = {"a", "an", "moving", "on", "background", *COLORS, *SHAPES, *DIRECTIONS}
    for bg in BACKGROUNDS:
        words.update(bg.split())
    return sorted(words)


# --- schedules --------------------------------------------------------------------------------
def scene_at(schedule: Mapping[int, str], latent_frame: int, frames_per_block: int = 3) -> Scene:
    """The scene in force for a latent frame: the prompt at the largest timestamp <= its block start
    (`longlive.units.prompt_in_force`)."""
    t = prompt_in_force(schedule, latent_frame, frames_per_block)
    if t is None:
        raise ValueError("the schedule needs a prompt at frame 0")
    return parse_prompt(schedule[t])


def sample_scene(rng: np.random.Generator) -> Scene:
    return Scene(
        color=str(rng.choice(list(COLORS))),
        shape=str(rng.choice(SHAPES)),
        direction=str(rng.choice(list(DIRECTIONS))),
        background=str(rng.choice(list(BACKGROUNDS))),
    )


def switch_scene(scene: Scene, kind: str, rng: np.random.Generator) -> Scene:
    """`scene` with one attribute (`kind`) changed to a different random value."""
    if kind == "color":
        return replace(scene, color=str(rng.choice([c for c in COLORS if c != scene.color])))
    if kind == "shape":
        return replace(scene, shape=str(rng.choice([s for s in SHAPES if s != scene.shape])))
    if kind == "direction":
        return replace(scene, direction=str(rng.choice([d for d in DIRECTIONS if d != scene.direction])))
    if kind == "background":
        return replace(scene, background=str(rng.choice([b for b in BACKGROUNDS if b != scene.background])))
    raise ValueError(f"unknown switch kind {kind!r}")


def sample_schedule(
    rng: np.random.Generator,
    num_blocks: int,
    *,
    frames_per_block: int = 3,
    switch_prob: float = 0.3,
    kinds: Sequence[str] = ("color", "shape", "direction"),
    min_gap: int = 1,
    first: Scene | None = None,
) -> dict[int, str]:
    """A schedule over `num_blocks` blocks: a random first scene, then at each later block boundary
    (at least `min_gap` blocks after the previous switch) a switch of one random attribute of
    `kinds` with probability `switch_prob`. Returns {latent frame: prompt}."""
    scene = first or sample_scene(rng)
    schedule = {0: scene.prompt}
    last = 0
    for b in range(1, num_blocks):
        if b - last >= min_gap and rng.random() < switch_prob:
            scene = switch_scene(scene, str(rng.choice(list(kinds))), rng)
            schedule[b * frames_per_block] = scene.prompt
            last = b
    return schedule


# --- frame layout -----------------------------------------------------------------------------
# The demo's names for the arithmetic of `longlive.units` (with its temporal compression, TEMPORAL).
def num_video_frames(num_latent_frames: int) -> int:
    """Video frames decoded from `num_latent_frames` latent frames (1 + 4(F-1); 0 for none)."""
    return latent_to_video_frame(num_latent_frames, TEMPORAL)


def latent_of_video_frame(j: int) -> int:
    """The latent frame that decodes to video frame `j`."""
    return video_to_latent_frame(j, TEMPORAL)


def block_video_range(start_frame: int, frames_per_block: int = 3) -> tuple[int, int]:
    """[first, end) video frames of the block starting at latent frame `start_frame`."""
    return num_video_frames(start_frame), num_video_frames(start_frame + frames_per_block)


# --- rendering --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Style:
    """Geometry of the rendered scenes, in pixels (derived from the frame size by `for_size`)."""

    radius: float  # circle radius; squares and triangles have about the same area
    speed: float  # pixels per video frame

    @classmethod
    def for_size(cls, height: int, width: int) -> Style:
        m = min(height, width)
        return cls(radius=0.14 * m, speed=2.0 * m / 64.0)


@dataclass
class Clip:
    """A rendered clip and its ground truth, one entry per video frame."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    scenes: list[Scene]
    positions: np.ndarray  # float [T, 2]: object centre (x, y) in pixels, wrapped into the frame


def shape_coverage(scene_shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (pixels) to the shape's edge."""
    if scene_shape == "circle":
        sdf = np.sqrt(dx * dx + dy * dy) - r
    elif scene_shape == "square":
        half = r * 0.886  # same area as the circle
        sdf = np.maximum(np.abs(dx), np.abs(dy)) - half
    else:  # equilateral triangle pointing up, centroid at the centre, same area as the circle
        ri = np.sqrt(np.pi * r * r / (3.0 * np.sqrt(3.0)))  # inradius: area 3*sqrt(3)*ri^2 = pi r^2
        s3 = np.sqrt(3.0) / 2.0
        d1 = dy - ri  # bottom edge (y grows downwards)
        d2 = -s3 * dx - 0.5 * dy - ri  # upper-left edge
        d3 = s3 * dx - 0.5 * dy - ri  # upper-right edge
        sdf = np.maximum(np.maximum(d1, d2), d3)
    coverage: np.ndarray = np.clip(0.5 - sdf, 0.0, 1.0)
    return coverage


def torus_offsets(height: int, width: int, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Shortest offsets (dx [1, W], dy [H, 1]) of the pixel centres from (x, y) on the torus."""
    dx = (np.arange(width, dtype=np.float64) + 0.5 - x + width / 2.0) % width - width / 2.0
    dy = (np.arange(height, dtype=np.float64) + 0.5 - y + height / 2.0) % height - height / 2.0
    return dx[None, :], dy[:, None]


def render_frame(scene: Scene, x: float, y: float, height: int, width: int, style: Style) -> np.ndarray:
    """One uint8 [H, W, 3] frame with the object centred at (x, y) on a torus."""
    dx, dy = torus_offsets(height, width, x, y)
    cov = shape_coverage(scene.shape, dx, dy, style.radius)[..., None]
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float64)
    fg = np.asarray(COLORS[scene.color], dtype=np.float64)
    return np.round(bg + cov * (fg - bg)).astype(np.uint8)


def render(
    schedule: Mapping[int, str],
    num_latent_frames: int,
    height: int = 64,
    width: int = 64,
    *,
    frames_per_block: int = 3,
    style: Style | None = None,
    start: tuple[float, float] | None = None,
) -> Clip:
    """Render the `1 + 4(F-1)` video frames of `num_latent_frames` latent frames under `schedule`."""
    if 0 not in schedule:
        raise ValueError("the schedule needs a prompt at frame 0")
    style = style or Style.for_size(height, width)
    x, y = start if start is not None else (width / 2.0, height / 2.0)
    n = num_video_frames(num_latent_frames)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    positions = np.empty((n, 2), dtype=np.float64)
    scenes: list[Scene] = []
    cache: dict[int, Scene] = {}
    for j in range(n):
        lat = latent_of_video_frame(j)
        block = lat - lat % frames_per_block
        if block not in cache:
            cache[block] = scene_at(schedule, lat, frames_per_block)
        scene = cache[block]
        if j > 0:  # the displacement into frame j follows frame j's direction
            ddx, ddy = DIRECTIONS[scene.direction]
            x = (x + ddx * style.speed) % width
            y = (y + ddy * style.speed) % height
        frames[j] = render_frame(scene, x, y, height, width, style)
        positions[j] = (x, y)
        scenes.append(scene)
    return Clip(frames, scenes, positions)
