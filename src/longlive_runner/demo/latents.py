"""The demo model's latent space: a fixed analytic encoding of video, learned by its Wan VAE.

Training a Wan VAE from scratch as an autoencoder takes far longer than the demo's CPU budget
(it sits on the "mean colour" plateau for hundreds of steps). So the demo defines its latent space
analytically and trains the Wan *decoder* to invert it (and the Wan encoder to reproduce it); the
DiT is trained on these latents. The runner only ever decodes, through the usual
`StreamingDecoder`; the layout (16 channels, 8x spatial and 4x causal temporal compression) is
the Wan VAE's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPORAL = 4


def _circular_centroid(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre of mass (x, y) in pixels on the torus of weights [..., H, W]."""
    H, W = weight.shape[-2:]
    out = []
    for n, dim in ((W, -1), (H, -2)):
        ang = (torch.arange(n, dtype=weight.dtype, device=weight.device) + 0.5) * (2 * torch.pi / n)
        shape = [1] * weight.dim()
        shape[dim] = n
        ang = ang.view(shape)
        c = torch.atan2((weight * ang.sin()).sum((-2, -1)), (weight * ang.cos()).sum((-2, -1)))
        out.append(c * n / (2 * torch.pi))
    return out[0], out[1]


def motion_field(g: torch.Tensor) -> torch.Tensor:
    """Grouped video [B, 3, L, 4, H, W] -> the motion of each latent frame [B, 2, L] (dx, dy), in
    units of 8 px (one latent cell): the wrapped shift of the object's centre of mass (pixels far
    from the frame's median colour) from the group's first to its last frame, scaled by 4/3."""
    H, W = g.shape[-2:]
    bg = g.flatten(-2).median(-1).values[..., None, None]  # [B, 3, L, 4, 1, 1]
    weight = (g - bg).abs().sum(1)  # [B, L, 4, H, W]
    cx, cy = _circular_centroid(weight)  # [B, L, 4]
    dx = (cx[..., -1] - cx[..., 0] + W / 2) % W - W / 2
    dy = (cy[..., -1] - cy[..., 0] + H / 2) % H - H / 2
    has_object = weight.flatten(-2).amax(-1).amin(-1) > 0.1  # [B, L]
    d = torch.stack([dx, dy], 1) * has_object[:, None] * (4.0 / 3.0) / 8.0
    return d.clamp(-1.5, 1.5)


def analytic_latents(video: torch.Tensor) -> torch.Tensor:
    """Video [B, 3, 1+4k, H, W] in [-1, 1] -> raw latents [B, 16, 1+k, H/8, W/8].

    Latent frame 0 covers video frame 0, latent frame l >= 1 covers frames 4l-3 .. 4l (the Wan
    VAE's causal layout). Per 8x8-pixel cell:
      * channels 0-11: the mean colour of its four 4x4 quadrants over the latent's frames;
      * channels 12-13: the latent frame's motion (dx, dy) in cells per latent frame, the same in
        every cell (a global field: what moves where is a property of the whole frame);
      * channel 14: the brightness change from its first to its last frame (moving edges);
      * channel 15: the mean pixel standard deviation (edges).
    """
    B, _, T, H, W = video.shape
    L = 1 + (T - 1) // TEMPORAL
    g = torch.cat([video[:, :, :1].expand(-1, -1, TEMPORAL, -1, -1), video[:, :, 1:]], 2)
    g = g.view(B, 3, L, TEMPORAL, H, W)
    mean = g.mean(3).permute(0, 2, 1, 3, 4).reshape(B * L, 3, H, W)
    quad = F.pixel_unshuffle(F.avg_pool2d(mean, 4), 2).view(B, L, 12, H // 8, W // 8)
    field = motion_field(g).permute(0, 2, 1)[..., None, None].expand(B, L, 2, H // 8, W // 8)
    diff = (g[:, :, :, -1] - g[:, :, :, 0]).mean(1).reshape(B * L, 1, H, W)
    diff = 2.0 * F.avg_pool2d(diff, 8).view(B, L, 1, H // 8, W // 8)
    sq = (g**2).mean(3).permute(0, 2, 1, 3, 4).reshape(B * L, 3, H, W)
    var = (F.avg_pool2d(sq, 8) - F.avg_pool2d(mean, 8) ** 2).clamp(min=0).mean(1, keepdim=True)
    std = var.sqrt().view(B, L, 1, H // 8, W // 8)
    return torch.cat([quad, field, diff, std], 2).permute(0, 2, 1, 3, 4).contiguous()


def latent_preview(raw: torch.Tensor, first_block: bool) -> torch.Tensor:
    """Raw latents [B, 16, n, h, w] -> the video they describe, without a decoder:
    [B, 3, T, 8h, 8w] in [-1, 1], T = 1 + 4(n-1) for a video's first block, else 4n.

    Each latent frame's four quadrant colours per cell (channels 0-11) form a thumbnail at
    1/4 resolution, shown for each of the latent's video frames. Used to score the DiT alone.
    """
    B, _, n, h, w = raw.shape
    quad = raw[:, :12].permute(0, 2, 1, 3, 4).reshape(B * n, 12, h, w)
    thumb = F.interpolate(F.pixel_shuffle(quad, 2), scale_factor=4, mode="nearest")
    thumb = thumb.view(B, n, 3, 8 * h, 8 * w).permute(0, 2, 1, 3, 4)
    reps = torch.full((n,), TEMPORAL, dtype=torch.long, device=raw.device)
    if first_block:
        reps[0] = 1
    return thumb.repeat_interleave(reps, dim=2).clamp(-1.0, 1.0)
