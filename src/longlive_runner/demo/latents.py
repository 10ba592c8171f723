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


def analytic_latents(video: torch.Tensor) -> torch.Tensor:
    """Video [B, 3, 1+4k, H, W] in [-1, 1] -> raw latents [B, 16, 1+k, H/8, W/8].

    Latent frame 0 covers video frame 0, latent frame l >= 1 covers frames 4l-3 .. 4l (the Wan
    VAE's causal layout). Per 8x8-pixel cell: the mean colour of its four 4x4 quadrants over the
    latent's frames (12 channels), the colour change from its first to its last frame (3
    channels: the motion) and the mean pixel standard deviation (1 channel: edges).
    """
    B, _, T, H, W = video.shape
    L = 1 + (T - 1) // TEMPORAL
    g = torch.cat([video[:, :, :1].expand(-1, -1, TEMPORAL, -1, -1), video[:, :, 1:]], 2)
    g = g.view(B, 3, L, TEMPORAL, H, W)
    mean = g.mean(3).permute(0, 2, 1, 3, 4).reshape(B * L, 3, H, W)
    quad = F.pixel_unshuffle(F.avg_pool2d(mean, 4), 2).view(B, L, 12, H // 8, W // 8)
    diff = (g[:, :, :, -1] - g[:, :, :, 0]).permute(0, 2, 1, 3, 4).reshape(B * L, 3, H, W)
    diff = 2.0 * F.avg_pool2d(diff, 8).view(B, L, 3, H // 8, W // 8)
    sq = (g**2).mean(3).permute(0, 2, 1, 3, 4).reshape(B * L, 3, H, W)
    var = (F.avg_pool2d(sq, 8) - F.avg_pool2d(mean, 8) ** 2).clamp(min=0).mean(1, keepdim=True)
    std = var.sqrt().view(B, L, 1, H // 8, W // 8)
    return torch.cat([quad, diff, std], 2).permute(0, 2, 1, 3, 4).contiguous()
