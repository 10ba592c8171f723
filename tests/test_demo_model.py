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
from longlive_runner.demo.scenes import BACKGROUNDS, COLORS, parse_prompt  # noqa: E402
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
