"""The demo training's analytic latent space (src/longlive_runner/demo/latents.py)."""

from __future__ import annotations

from longlive_runner.demo import scenes

RED = "a red circle moving right on a black background"
BLUE = "a blue circle moving right on a black background"


def test_analytic_latents_layout():
    import torch

    from longlive_runner.demo.latents import analytic_latents

    sch = {0: RED, 3: BLUE}
    clip = scenes.render(sch, 6, 64, 64)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
    z = analytic_latents(video)
    assert z.shape == (1, 16, 6, 8, 8)
    # latent frame 0 is video frame 0 alone: its quadrant means are that frame's 4x4 averages
    q = video[0, :, 0].unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2))  # [3, 16, 16]
    assert torch.allclose(
        z[0, :12, 0].view(3, 2, 2, 8, 8).permute(0, 3, 1, 4, 2).reshape(3, 16, 16), q, atol=1e-5
    )
    assert z[0, 12:15, 0].abs().max() == 0  # no motion inside a single frame


def test_latents_shift_one_cell_per_latent_frame():
    """2 px per video frame = 8 px per latent frame: a scene's latents move by exactly one cell."""
    import torch

    from longlive_runner.demo.latents import analytic_latents

    for direction, (dx, dy) in scenes.DIRECTIONS.items():
        clip = scenes.render({0: f"a green square moving {direction} on a navy background"}, 6, 64, 64)
        video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
        z = analytic_latents(video)
        for f in range(1, 5):
            shifted = torch.roll(z[:, :, f], shifts=(dy, dx), dims=(2, 3))
            assert torch.allclose(shifted, z[:, :, f + 1], atol=1e-5), (direction, f)


def test_latent_preview_shows_the_scene():
    import torch

    from longlive_runner.demo import checker
    from longlive_runner.demo.latents import analytic_latents, latent_preview

    sch = {0: RED, 6: BLUE}
    clip = scenes.render(sch, 9, 64, 64)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
    preview = latent_preview(analytic_latents(video), first_block=True)
    assert preview.shape == video.shape
    frames = preview[0].add(1).mul(127.5).round().byte().permute(1, 2, 3, 0).numpy()
    result = checker.score(frames, sch)
    assert result.color_acc == 1.0 and result.background_acc == 1.0 and result.direction_acc == 1.0


def test_motion_field_channels_follow_the_scene_direction():
    import torch

    from longlive_runner.demo.latents import analytic_latents

    sch = {
        0: "a green square moving right on a navy background",
        6: "a green square moving up on a navy background",
        12: "a red circle moving left on a gray background",
    }
    clip = scenes.render(sch, 15, 64, 64)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
    field = analytic_latents(video)[0, 12:14]  # [2, F, 8, 8]
    assert torch.all(field[:, 0] == 0)  # a single frame shows no motion
    for f in range(1, 15):
        dx, dy = scenes.DIRECTIONS[scenes.scene_at(sch, f).direction]
        want = torch.tensor([dx, dy], dtype=field.dtype)[:, None, None].expand(2, 8, 8)
        assert torch.allclose(field[:, f], want, atol=0.05), f
