"""The embedded demo model: shipped in the package, loaded with no network, follows its prompts.

These run the trained weights under src/longlive_runner/assets/demo through the product's own
paths (load_pipeline, Reactor.local) and judge the frames by their pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from longlive import Reactor  # noqa: E402
from longlive_runner import load_pipeline  # noqa: E402
from longlive_runner.demo import checker  # noqa: E402
from longlive_runner.demo.scenes import BACKGROUNDS, COLORS, Style, block_video_range, parse_prompt  # noqa: E402
from longlive_runner.model.config import DEFAULT_MODEL, PACKAGED_MODELS  # noqa: E402

DEMO = PACKAGED_MODELS["demo"]
RED = "a red circle moving right on a black background"
BLUE = "a blue circle moving right on a black background"


def test_demo_is_the_default_and_ships_within_budget() -> None:
    assert DEFAULT_MODEL == "demo"
    files = sorted(p.name for p in DEMO.iterdir())
    assert {"config.json", "dit.safetensors", "vae.safetensors", "t5.safetensors", "tokenizer.json"} <= set(
        files
    )
    weights = sum(p.stat().st_size for p in DEMO.glob("*.safetensors"))
    assert weights <= 25 * 2**20, f"demo weights are {weights / 2**20:.1f} MiB (budget 25 MiB)"


def test_demo_loads_offline_with_the_packaged_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # any attempt to open a network connection fails the test
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the demo model must load without network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    pipe = load_pipeline("demo")
    assert pipe.config.name == "demo"
    block = next(iter(pipe.stream({0: RED}, 3)))
    assert block.frames.shape == (9, pipe.config.height, pipe.config.width, 3)


def object_pixels(frame: np.ndarray, background: str) -> np.ndarray:
    """RGB of the pixels that differ clearly from the background, as float [N, 3]."""
    f = frame.astype(np.float32)
    bg = np.asarray(BACKGROUNDS[background], dtype=np.float32)
    far = np.sqrt(((f - bg) ** 2).sum(-1)) > 96
    return f[far]


def dominant_channel(frame: np.ndarray) -> str | None:
    """'red' or 'blue' when the object's pixels are clearly that, judged on raw channels."""
    px = object_pixels(frame, "black")
    if len(px) < 12:
        return None
    r, g, b = np.median(px, axis=0)
    if r > 150 and r > b + 100 and r > g + 100:
        return "red"
    if b > 150 and b > r + 100 and b > g + 100:
        return "blue"
    return None


async def test_red_to_blue_switch_through_reactor_local() -> None:
    """'a red ...' at 0, 'a blue ...' at block 3: frames are red before and blue from the switch on."""
    switch_at = 9  # latent frame: block 3 of 3-frame blocks
    blocks = 6
    frames: dict[int, list[np.ndarray]] = {}
    async with Reactor.local() as reactor:  # the default model: the embedded demo
        assert (reactor.hello.width, reactor.hello.height) == (64, 64)  # the demo's resolution
        await reactor.schedule_prompt(RED, timestamp=0)
        await reactor.schedule_prompt(BLUE, timestamp=switch_at)
        await reactor.start(seed=3)
        async for frame in reactor.frames():
            frames.setdefault(frame.start_frame, []).append(frame.image)
            if frame.start_frame == (blocks - 1) * 3 and frame.index_in_block == frame.frames_in_block - 1:
                break
        await reactor.pause()

    assert sorted(frames) == [0, 3, 6, 9, 12, 15]
    for start, images in frames.items():
        want = "red" if start < switch_at else "blue"
        for i, image in enumerate(images):
            assert dominant_channel(image) == want, f"block {start} frame {i}: expected {want}"
            measured = checker.measure_frame(image)
            assert measured.color == want and measured.background == "black", (start, i, measured)
    # the object moves right in every block (centroid measured from the pixels)
    for start, images in frames.items():
        dx, dy = checker.motion(checker.measure_frames(np.stack(images)), 64, 64)
        assert dx > 3 and abs(dy) < dx, (start, dx, dy)


@pytest.mark.parametrize("color", ["green", "yellow", "magenta"])
def test_demo_paints_the_named_colour(color: str) -> None:
    assert color in COLORS
    pipe = load_pipeline("demo")
    prompt = f"a {color} square moving down on a gray background"
    frames = np.concatenate([b.frames for b in pipe.stream({0: prompt}, 6, seed=1)])
    measured = checker.measure_frames(frames)
    right = sum(m.color == color and m.background == "gray" for m in measured)
    assert right >= 0.9 * len(frames), [m.color for m in measured]


def test_the_readme_main_job_follows_its_prompts(tmp_path):
    """The README's first command (after the install) as a real process, on the default model:
    the mp4 shows a red circle, then from the switch block on a blue square, by the pixels."""
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    from longlive.video import read_video

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith('pip install -e ".[all]" && '))
    argv = shlex.split(line.split(" && ", 1)[1])
    assert argv[0] == "longlive-runner" and "--model" not in argv  # the default model
    # the console script `longlive-runner` is `python -m longlive_runner` of this interpreter's install
    cmd = [sys.executable, "-m", "longlive_runner", *argv[1:]]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    schedule = {}
    for i, arg in enumerate(argv):
        if arg == "--prompt":
            frame, text = argv[i + 1].split(":", 1)
            schedule[int(frame)] = parse_prompt(text)
    (switch,) = [t for t in schedule if t > 0]
    first, second = schedule[0].color, schedule[switch].color
    assert first != second
    frames = read_video(tmp_path / argv[argv.index("--out") + 1])
    first_after = 4 * switch - 3  # the first video frame of the switch block
    assert len(frames) == 1 + 4 * (int(argv[argv.index("--frames") + 1]) - 1)
    before = [checker.measure_frame(f).color for f in frames[:first_after]]
    after = [checker.measure_frame(f).color for f in frames[first_after:]]
    assert before.count(first) >= 0.9 * len(before), before
    assert after.count(second) >= 0.9 * len(after), after


async def _local_video(schedule: dict[int, str], blocks: int, seed: int) -> np.ndarray:
    """Every video frame of `blocks` blocks under `schedule`, through Reactor.local()."""
    images: list[np.ndarray] = []
    async with Reactor.local() as reactor:
        for timestamp, prompt in schedule.items():
            await reactor.schedule_prompt(prompt, timestamp=timestamp)
        await reactor.start(seed=seed)
        async for frame in reactor.frames():
            images.append(frame.image)
            if frame.start_frame == (blocks - 1) * 3 and frame.index_in_block == frame.frames_in_block - 1:
                break
        await reactor.pause()
    return np.stack(images)


async def test_square_and_triangle_told_apart_through_reactor_local() -> None:
    """The shape word draws the shape: same colour, direction, background and seed, and the
    silhouettes are a square's and a triangle's (corners, straight edges), not one blob."""
    style = Style.for_size(64, 64)
    videos = {}
    for shape in ("square", "triangle"):
        videos[shape] = await _local_video(
            {0: f"a white {shape} moving right on a gray background"}, 4, seed=5
        )
        shapes = [checker.measure_frame(f, style=style).shape for f in videos[shape]]
        assert shapes.count(shape) >= 0.9 * len(shapes), (shape, shapes)
    # and the pixels say so too: the two videos differ where the silhouettes differ
    diff = np.abs(videos["square"].astype(np.int16) - videos["triangle"].astype(np.int16)).max(-1)
    differing = (diff > 64).sum(axis=(1, 2))  # pixels per frame
    assert np.median(differing) >= 40, differing


async def test_a_switch_keeps_the_place_with_no_blend_frame() -> None:
    """Red to blue at block 2: the object glides on across the switch (no jump) and the first
    frame under the new prompt is already blue (no blend of the two colours)."""
    style = Style.for_size(64, 64)
    schedule = {0: RED, 6: BLUE}
    frames = await _local_video(schedule, 4, seed=2)
    result = checker.score(frames, schedule)
    (switch,) = result.switches
    assert switch.no_jump and switch.no_blend and switch.no_ghost, result.summary()
    j0 = block_video_range(6)[0]
    before, first = (
        checker.measure_frame(frames[j0 - 1], style=style),
        checker.measure_frame(frames[j0], style=style),
    )
    assert before.color == "red" and first.color == "blue"
    assert first.rgb is not None and first.rgb[0] < 60 and first.rgb[2] > 195, first.rgb
    assert before.centroid is not None and first.centroid is not None
    step = first.centroid[0] - before.centroid[0]
    assert 1.0 <= step <= 3.0 and abs(first.centroid[1] - before.centroid[1]) <= 1.0, (before, first)
    assert result.glide_acc >= 0.9, result.summary()


def test_each_video_frame_is_drawn_from_its_own_position_field() -> None:
    """The demo VAE draws video frame k of a latent frame from the scene and the k-th of the
    latent's 4 position fields alone: swapping two fields swaps those two video frames (to within
    half a uint8 level) and leaves the others as they were, so the object can step on every video
    frame and nothing of a neighbouring frame shows in it."""
    from longlive_runner.demo.latents import FIELD, scene_latents
    from longlive_runner.demo.scenes import TEMPORAL, render

    pipe = load_pipeline("demo")
    vae = pipe.vae
    raw = scene_latents(render({0: RED}, 3, 64, 64), 64, 64)[None]  # [1, C, 3, 8, 8]

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return vae.decode((latents - vae.latents_mean) / vae.latents_std)[0]  # [3, 9, 64, 64]

    def field(k: int) -> slice:
        return slice(FIELD * k, FIELD * (k + 1))

    base = decode(raw)
    first = 1 + TEMPORAL  # latent frame 2's first video frame
    for a, b in ((0, 1), (1, 3), (0, 2)):
        swapped = raw.clone()
        swapped[0, field(a), 2], swapped[0, field(b), 2] = raw[0, field(b), 2], raw[0, field(a), 2]
        out = decode(swapped)
        order = list(range(TEMPORAL))
        order[a], order[b] = b, a
        for k in range(TEMPORAL):
            # within half a uint8 level: the trained decoder leaks under 1e-3 between fields
            # (the same in float64, so it is the weights, not rounding)
            assert (out[:, first + k] - base[:, first + order[k]]).abs().max() < 1 / 255, (a, b, k)
        # and the swap is visible: the two frames show the object in different places
        assert (out[:, first + a] - base[:, first + a]).abs().max() > 0.5, (a, b)
        assert torch.equal(out[:, :first], base[:, :first])
