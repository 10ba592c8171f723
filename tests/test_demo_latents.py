"""The demo's latent space (src/longlive_runner/demo/latents.py): the scene's parameters as a Wan latent."""

from __future__ import annotations

import numpy as np
import pytest

from longlive_runner.demo import scenes

RED = "a red circle moving right on a black background"
BLUE = "a blue square moving down on a gray background"


def test_scene_latents_layout():
    import torch

    from longlive_runner.demo.latents import BACKGROUND, CHANNELS, COLOR, FIELD, SHAPE, scene_latents

    clip = scenes.render({0: RED, 3: BLUE}, 6, 64, 64)
    z = scene_latents(clip, 64, 64)
    assert z.shape == (CHANNELS, 6, 8, 8) and z.dtype == torch.float32
    colors, backgrounds = list(scenes.COLORS), list(scenes.BACKGROUNDS)
    assert FIELD == 8 and CHANNELS == 4 * FIELD + 3 + len(colors) + len(backgrounds)

    def field(k: int, lat: int) -> torch.Tensor:
        return z[FIELD * k : FIELD * (k + 1), lat]

    # latent frame 0 is video frame 0 alone: its 4 per-frame fields are the same
    for k in range(1, 4):
        assert torch.equal(field(k, 0), field(0, 0))
    # latent frame 1 is video frames 1..4: four different places, one per video frame
    assert not torch.allclose(field(0, 1), field(1, 1))
    # a field's quarters are the frame drawn at 16x16: the object's area, ~250 px of 4096
    for k in range(4):
        quarters = field(k, 2)[4:]
        assert quarters.min() >= 0.0 and quarters.max() > 0.9
        assert abs(quarters.sum().item() * 16 - np.pi * scenes.Style.for_size(64, 64).radius ** 2) < 8
    # the scene's words, the same in every cell, switching with the block
    assert torch.equal(z[SHAPE, 2, 3, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(z[SHAPE, 3, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
    # colour and background: one-hot, times the share of each cell the object (or background)
    # covers over the latent's 4 video frames
    share = z[COLOR, 2].sum(0)  # [8, 8]
    mean_quarters = torch.stack([field(k, 2)[4:].mean(0) for k in range(4)]).mean(0)
    assert torch.allclose(share, mean_quarters, atol=1e-6)
    assert share.max() > 0.5 and share.min() == 0.0 and 2.0 < share.sum() < 8.0
    assert torch.allclose(z[COLOR, 2][colors.index("red")], share)
    assert torch.allclose(z[BACKGROUND, 2][backgrounds.index("black")], 1.0 - share)
    assert z[COLOR, 3].sum((1, 2)).argmax().item() == colors.index("blue")
    assert z[BACKGROUND, 3].sum((1, 2)).argmax().item() == backgrounds.index("gray")
    assert torch.allclose(z[COLOR, 3].sum(0) + z[BACKGROUND, 3].sum(0), torch.ones(8, 8))
    with pytest.raises(ValueError):
        scene_latents(scenes.Clip(clip.frames[:3], clip.scenes[:3], clip.positions[:3]), 64, 64)


@pytest.mark.parametrize("direction", list(scenes.DIRECTIONS))
def test_latents_shift_one_cell_per_latent_frame(direction):
    """2 px per video frame = 8 px per latent frame: a scene's latents move by exactly one cell,
    wrap-around included (what the DiT continues)."""
    import torch

    from longlive_runner.demo.latents import scene_latents

    dx, dy = scenes.DIRECTIONS[direction]
    clip = scenes.render({0: f"a green triangle moving {direction} on a navy background"}, 40, 64, 64)
    z = scene_latents(clip, 64, 64)
    for f in range(1, 39):
        shifted = torch.roll(z[:, f], shifts=(dy, dx), dims=(1, 2))
        assert torch.allclose(shifted, z[:, f + 1], atol=1e-5), (direction, f)


def test_latents_of_any_positions_and_frames():
    """`latents_of` lays out any latent frames of a clip from its scenes and per-frame places:
    the clip's own places give `scene_latents`' frames; places moved by a cell give them moved
    by a cell (what train_demo's anchored targets rely on); places moved by less, read back."""
    import torch

    from longlive_runner.demo.latents import latents_of, read_latent, scene_latents

    clip = scenes.render({0: RED, 3: BLUE}, 9, 64, 64, start=(13.0, 40.0))
    z = scene_latents(clip, 64, 64)
    assert torch.equal(latents_of(clip.scenes, clip.positions, 64, 64, range(3, 6)), z[:, 3:6])
    moved = latents_of(clip.scenes, (clip.positions + [8.0, -8.0]) % 64.0, 64, 64, range(4, 9))
    assert torch.allclose(moved, torch.roll(z[:, 4:9], shifts=(-1, 1), dims=(2, 3)), atol=1e-5)
    nudged = latents_of(clip.scenes, (clip.positions + [1.5, 0.25]) % 64.0, 64, 64, range(6, 7))
    _, centres = read_latent(nudged[:, 0], 64, 64)
    err = (centres - clip.positions[21:25] - [1.5, 0.25] + 32.0) % 64.0 - 32.0
    assert np.abs(err).max() < 1e-3


def test_read_latent_gives_every_video_frame_its_place():
    from longlive_runner.demo.latents import read_latent, scene_latents

    rng = np.random.default_rng(3)
    for _ in range(5):
        sch = scenes.sample_schedule(rng, 4, switch_prob=0.7, kinds=scenes.SWITCH_KINDS)
        start = (float(rng.uniform(0, 64)), float(rng.uniform(0, 64)))
        clip = scenes.render(sch, 12, 64, 64, start=start)
        z = scene_latents(clip, 64, 64)
        for lat in range(12):
            scene, centres = read_latent(z[:, lat], 64, 64)
            frames = [0] * 4 if lat == 0 else [4 * lat - 3 + k for k in range(4)]
            err = (centres - clip.positions[frames] + 32.0) % 64.0 - 32.0
            assert np.abs(err).max() < 1e-3, (lat, centres, clip.positions[frames])
            want = clip.scenes[frames[0]]
            assert (scene.color, scene.shape, scene.background) == (want.color, want.shape, want.background)


def test_latent_preview_draws_the_clip_exactly():
    from longlive_runner.demo import checker
    from longlive_runner.demo.latents import latent_preview, scene_latents

    sch = {0: RED, 6: BLUE, 9: "a yellow triangle moving left on a dark green background"}
    clip = scenes.render(sch, 12, 64, 64, start=(61.0, 2.5))
    z = scene_latents(clip, 64, 64)
    blocks = [latent_preview(z[:, s : s + 3], s == 0, 64, 64) for s in range(0, 12, 3)]
    frames = np.concatenate(blocks)
    assert frames.shape == clip.frames.shape
    assert np.abs(frames.astype(int) - clip.frames).max() <= 1
    result = checker.score(frames, sch)
    assert result.shape_acc == 1.0 and result.glide_acc == 1.0
