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
