"""The Wan2.2 causal 3D VAE (4x temporal, 16x spatial compression, 48 channels), LongLive 2.0's VAE.

It is the Wan2.1 VAE of `vae.py` (same causal convs, RMS norms, residual and attention blocks,
resamplers, latent statistics, chunked encode and streaming decode) with three changes:

* pixels are folded into channels first (`patchify`, 2x2: RGB -> 12 channels) and unfolded last,
  so the 8x of the conv levels becomes 16x;
* each level is one module with a parameter-free shortcut around it: `AvgDown` (space and time
  folded into channels, then averaged in groups) around a downsampling level, `DupUp` (channels
  repeated, then unfolded into space and time) around an upsampling level;
* the decoder is wider than the encoder (`decoder_base_dim` 256 vs `base_dim` 160) and its
  upsamplers keep their channels (Wan2.1's halve them).

Parameter names match the native checkpoint (`Wan2.2_VAE.pth` of Wan-AI/Wan2.2-TI2V-5B):

    encoder.conv1.*, encoder.downsamples.L.downsamples.N.*, encoder.middle.{0,1,2}.*, encoder.head.{0,2}.*
    conv1.*  (encoder output -> mu, log_var)      conv2.*  (latent -> decoder input)
    decoder.conv1.*, decoder.middle.{0,1,2}.*, decoder.upsamples.L.upsamples.N.*, decoder.head.{0,2}.*

where level L holds its residual blocks at N = 0, 1, ... and its resampler (`resample.1`, plus
`time_conv` when it also works in time) last. The shortcuts have no parameters.

Full size (`config.WAN22_VAE`): encoder widths 160, 160, 320, 640, 640; decoder widths 1024, 1024,
1024, 512, 256. A latent frame [48, h, w] decodes to 4 frames [3, 16h, 16w] (the first one of a
video to 1 frame).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoints as ckpt
from .config import WAN22_VAE, VAEConfig
from .vae import CausalCache, Decoder3d, Encoder3d, Resample, ResidualBlock, WanVAE


# --- pixels <-> channels ----------------------------------------------------------------------
def patchify(video: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C*p*p, T, H/p, W/p]; channel c*p*p + wx*p + hy holds pixel (hy, wx) of a patch."""
    b, c, t, h, w = video.shape
    x = video.view(b, c, t, h // p, p, w // p, p)  # [B, C, T, H/p, hy, W/p, wx]
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """The inverse of `patchify`: [B, C*p*p, T, h, w] -> [B, C, T, h*p, w*p]."""
    b, cpp, t, h, w = x.shape
    x = x.view(b, cpp // (p * p), p, p, t, h, w)  # [B, C, wx, hy, T, h, w]
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, cpp // (p * p), t, h * p, w * p)


# --- the parameter-free shortcuts -------------------------------------------------------------
class AvgDown(nn.Module):
    """Space-to-channels by (ft, fs, fs), then the mean of each group of consecutive channels.

    [B, C, T, H, W] -> [B, out_dim, T/ft, H/fs, W/fs]. Time is padded with zero frames in front to a
    multiple of ft (the first chunk of a video, 1 frame, is averaged with one zero frame).
    """

    def __init__(self, in_dim: int, out_dim: int, ft: int, fs: int):
        super().__init__()
        if in_dim * ft * fs * fs % out_dim:
            raise ValueError(
                f"AvgDown: {in_dim} channels x {ft * fs * fs} do not split into {out_dim} groups"
            )
        self.out_dim, self.ft, self.fs = out_dim, ft, fs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.ft, self.fs
        x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % ft, 0))
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # [B, C, ft, fs, fs, T', H', W']: channel-major folding
        return x.reshape(b, self.out_dim, -1, t // ft, h // fs, w // fs).mean(dim=2)


class DupUp(nn.Module):
    """Each channel repeated, then channels-to-space by (ft, fs, fs): the inverse layout of `AvgDown`.

    [B, C, T, H, W] -> [B, out_dim, T*ft, H*fs, W*fs]; `first=True` (the first chunk of a video)
    keeps only the last of the ft sub-frames, as the upsampler does not upsample that chunk in time.
    """

    def __init__(self, in_dim: int, out_dim: int, ft: int, fs: int):
        super().__init__()
        if out_dim * ft * fs * fs % in_dim:
            raise ValueError(f"DupUp: {out_dim} channels x {ft * fs * fs} are not a multiple of {in_dim}")
        self.repeats = out_dim * ft * fs * fs // in_dim
        self.out_dim, self.ft, self.fs = out_dim, ft, fs

    def forward(self, x: torch.Tensor, first: bool) -> torch.Tensor:
        ft, fs = self.ft, self.fs
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1).view(b, self.out_dim, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # [B, out, T, ft, H, fs, W, fs]
        x = x.reshape(b, self.out_dim, t * ft, h * fs, w * fs)
        return x[:, :, ft - 1 :] if first else x


# --- one level with its shortcut --------------------------------------------------------------
class DownLevel(nn.Module):
    """`num_res_blocks` residual blocks, then (except the last level) a downsampler; plus AvgDown."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, down: bool):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_res_blocks):
            layers.append(ResidualBlock(dim, out_dim))
            dim = out_dim
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.avg_shortcut = AvgDown(in_dim, out_dim, 2 if temporal else 1, 2 if down else 1)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        # [B, in_dim, t, H, W] -> [B, out_dim, t' (t/2 in time when temporal), H/2, W/2 (when down)]
        h: torch.Tensor = self.avg_shortcut(x)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x + h


class UpLevel(nn.Module):
    """`num_res_blocks + 1` residual blocks, then (except the last level) an upsampler; plus DupUp."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, up: bool):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_res_blocks + 1):
            layers.append(ResidualBlock(dim, out_dim))
            dim = out_dim
        if up:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d", up_dim=out_dim))
        self.upsamples = nn.Sequential(*layers)
        self.avg_shortcut = DupUp(in_dim, out_dim, 2 if temporal else 1, 2) if up else None

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        # [B, in_dim, t, h, w] -> [B, out_dim, t or 2t (1 on the first chunk), 2h, 2w (when up)]
        if self.avg_shortcut is None:
            for layer in self.upsamples:
                x = layer(x, cache)
            return x
        time_conv = getattr(self.upsamples[-1], "time_conv", None)  # the upsampler's, when temporal
        first = time_conv is not None and time_conv not in cache  # before the upsampler registers it
        h: torch.Tensor = self.avg_shortcut(x, first)
        for layer in self.upsamples:
            x = layer(x, cache)
        return x + h


# --- encoder, decoder, the VAE ----------------------------------------------------------------
class ResidualEncoder3d(Encoder3d):
    """Wan2.2's encoder: `Encoder3d` whose levels are `DownLevel`s."""

    @staticmethod
    def levels(dims: list[int], num_res_blocks: int, temporal_down: tuple[bool, ...]) -> list[nn.Module]:
        last = len(dims) - 2
        return [
            DownLevel(in_dim, out_dim, num_res_blocks, i != last and temporal_down[i], i != last)
            for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims))
        ]


class ResidualDecoder3d(Decoder3d):
    """Wan2.2's decoder: `Decoder3d` whose levels are `UpLevel`s."""

    @staticmethod
    def levels(dims: list[int], num_res_blocks: int, temporal_up: tuple[bool, ...]) -> list[nn.Module]:
        last = len(dims) - 2
        return [
            UpLevel(in_dim, out_dim, num_res_blocks, i != last and temporal_up[i], i != last)
            for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims))
        ]


class Wan22VAE(WanVAE):
    """The Wan2.2 VAE: normalised latents [B, 48, n, H/16, W/16] <-> video [B, 3, 1+4(n-1), H, W]."""

    encoder_class = ResidualEncoder3d
    decoder_class = ResidualDecoder3d

    @staticmethod
    def _check_family(cfg: VAEConfig) -> None:
        if not cfg.is_residual or cfg.patch_size < 1:
            raise ValueError("Wan22VAE needs is_residual=True and patch_size >= 1 (Wan2.1: vae.WanVAE)")

    def to_channels(self, video: torch.Tensor) -> torch.Tensor:
        return patchify(video, self.cfg.patch_size)  # [B, 3, T, H, W] -> [B, 12, T, H/2, W/2]

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return unpatchify(x, self.cfg.patch_size)  # [B, 12, T, H/2, W/2] -> [B, 3, T, H, W]


def build_vae(cfg: VAEConfig) -> WanVAE:
    """The VAE a config describes: Wan2.2 when `is_residual`, else Wan2.1."""
    return Wan22VAE(cfg) if cfg.is_residual else WanVAE(cfg)


def load_wan22_vae(
    path: str | Path,
    cfg: VAEConfig = WAN22_VAE,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Wan22VAE:
    """A `Wan2.2_VAE.pth` (or a .safetensors with the same names), checked key by key: a missing,
    unexpected or mis-shaped key raises `CheckpointError` naming the key and the file. The pickle
    is read with `torch.load(weights_only=True)` only."""
    with torch.device("meta"):
        vae = Wan22VAE(cfg)
    ckpt.load_weights(vae, ckpt.read_state_dict(path), path, torch.device(device), dtype)
    return vae.to(device).eval()
