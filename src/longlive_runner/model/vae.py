"""The Wan2.1 causal 3D VAE (4x temporal, 8x spatial compression), with a streaming decoder.

Parameter names match the native Wan checkpoint (`Wan2.1_VAE.pth`):

    encoder.conv1.*, encoder.downsamples.N.*, encoder.middle.{0,1,2}.*, encoder.head.{0,2}.*
    conv1.*  (encoder output -> mu, log_var)      conv2.*  (latent -> decoder input)
    decoder.conv1.*, decoder.middle.{0,1,2}.*, decoder.upsamples.N.*, decoder.head.{0,2}.*

A residual block is `residual.{0: RMS, 1: SiLU, 2: conv, 3: RMS, 4: SiLU, 5: dropout, 6: conv}` plus an
optional 1x1x1 `shortcut`; a resampler is `resample.1` (the 2D conv) plus, when it also works in time,
`time_conv`.

Time is causal everywhere. Video is processed in chunks (encode: the first frame alone, then chunks of
4 frames; decode: one latent frame at a time, i.e. 1 then 4 video frames) and every temporal conv keeps
the last frames of its input as context for the next chunk, so the chunked result equals a causal
conv over the whole sequence and the context never grows with video length. The context of a stream
lives in a `CausalCache` (a dict keyed by the layer that owns the context).

The Wan2.2 VAE (`vae2.py`) is built from these same pieces: it subclasses `WanVAE`, `Encoder3d`
and `Decoder3d` and changes only how the levels are grouped and how pixels enter and leave.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from longlive_runner.model.config import VAEConfig

# layer -> its fixed-size temporal context; one dict per encode/decode stream
CausalCache = dict[nn.Module, torch.Tensor]


class CausalConv3d(nn.Conv3d):
    """Conv3d, causal in time: each chunk is prefixed with the last `2*pad_t` input frames seen so far.

    The context starts as zeros, so chunk by chunk equals one conv over the whole sequence with
    `2*pad_t` zero frames in front. Spatial padding is symmetric (done by the conv itself).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: int | tuple[int, int, int],
        padding: int | tuple[int, int, int] = 0,
    ):
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        p = (padding,) * 3 if isinstance(padding, int) else padding
        super().__init__(in_dim, out_dim, k, padding=(0, p[1], p[2]))
        self.context = 2 * p[0]

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:  # type: ignore[override]
        # x [B, C, t, H, W] -> [B, C_out, t, H, W]; a conv that also takes the stream's cache
        if self.context == 0:
            return super().forward(x)
        prev = cache.get(self)
        if prev is None:
            b, c, _, h, w = x.shape
            prev = cache[self] = x.new_zeros(b, c, self.context, h, w)
        x = torch.cat([prev, x], dim=2)
        prev.copy_(x[:, :, -self.context :])
        if x.device.type == "cpu" and self.stride == (1, 1, 1) and self.dilation == (1, 1, 1):
            return self._conv_by_frames(x)
        return super().forward(x)

    def _conv_by_frames(self, x: torch.Tensor) -> torch.Tensor:
        # PyTorch's CPU conv3d falls back to a slow im2col kernel for small inputs; the same conv as
        # one 2D conv over (frame, temporal tap) stacks runs 2-6x faster there.
        b, c, t, h, w = x.shape
        kt = self.kernel_size[0]
        n = t - kt + 1
        taps = x.unfold(2, kt, 1)  # [B, C, n, H, W, kt]
        taps = taps.permute(0, 2, 1, 5, 3, 4).reshape(b * n, c * kt, h, w)
        weight = self.weight.reshape(self.out_channels, c * kt, *self.kernel_size[1:])
        y = F.conv2d(taps, weight, self.bias, padding=self.padding[1:])  # [B*n, C_out, H, W]
        return y.view(b, n, self.out_channels, h, w).transpose(1, 2)


class RMSNorm(nn.Module):
    """L2-normalise over channels (dim 1), times sqrt(dim) and a learned per-channel gamma."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        # images=True: [B, C, H, W] inputs; otherwise [B, C, T, H, W]
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in float32 for half-precision inputs; x * rsqrt(sum x^2) is F.normalize(x, dim=1)
        # computed ~10x faster on CPU (its vector-norm kernel is slow over a strided dim).
        xf = x.float()
        inv_norm = torch.rsqrt(xf.square().sum(1, keepdim=True).clamp_min(1e-24))
        out: torch.Tensor = (xf * inv_norm).to(x.dtype) * (self.gamma * self.scale)
        return out


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.Sequential(
            RMSNorm(in_dim),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim),
            nn.SiLU(),
            nn.Identity(),  # the dropout slot of the native module (inference only)
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = nn.Conv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        norm1, act1, conv1, norm2, act2, _, conv2 = self.residual
        h: torch.Tensor = self.shortcut(x)
        x = conv1(act1(norm1(x)), cache)
        x = conv2(act2(norm2(x)), cache)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:  # stateless: cache unused
        b, c, t, h, w = x.shape
        identity = x
        x = x.transpose(1, 2).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(x)).view(b * t, 1, 3 * c, h * w).transpose(2, 3)  # [bt, 1, hw, 3c]
        q, k, v = qkv.chunk(3, dim=-1)
        x = F.scaled_dot_product_attention(q, k, v)  # [bt, 1, hw, c]
        x = self.proj(x.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w))
        return x.view(b, t, c, h, w).transpose(1, 2) + identity


class Upsample2x(nn.Module):
    """Nearest 2x spatial upsampling (parameter-free slot 0 of `resample`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2.0, mode="nearest-exact")


class Resample(nn.Module):
    """2x spatial up/downsampling per frame, optionally with 2x temporal up/downsampling.

    upsample3d: `time_conv` doubles the channels into two sub-frames per frame. The first chunk of a
      stream (the first latent frame) is not upsampled in time; its context then starts as zeros.
    downsample3d: `time_conv` (kernel 3, stride 2, no padding) sees the previous chunk's last frame.
      The first chunk (the first frame) passes through unchanged in time.
    Spatial upsampling goes to `up_dim` channels: half of `dim` in Wan2.1 (the default), `dim` in Wan2.2.
    """

    def __init__(self, dim: int, mode: str, up_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode in ("upsample2d", "upsample3d"):
            out = dim // 2 if up_dim is None else up_dim
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, out, 3, padding=1))
        elif mode in ("downsample2d", "downsample3d"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        else:
            raise ValueError(f"unknown resample mode {mode!r}")
        if mode == "upsample3d":
            self.time_conv: nn.Module = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        elif mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        # x [B, C, t, H, W] -> [B, C', t', H', W']
        b, c, t, h, w = x.shape
        if self.mode == "upsample3d":
            if self.time_conv in cache:
                x = self.time_conv(x, cache).view(b, 2, c, t, h, w)
                x = x.permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)  # interleave the sub-frames
                t = 2 * t
            else:  # first chunk: no temporal upsampling, the time conv starts from zero context
                cache[self.time_conv] = x.new_zeros(b, c, 2, h, w)

        x = self.resample(x.transpose(1, 2).reshape(b * t, c, h, w))
        x = x.view(b, t, *x.shape[1:]).transpose(1, 2)

        if self.mode == "downsample3d":
            prev = cache.get(self)
            if prev is None:  # first chunk: keep its last frame as context, pass it through
                cache[self] = x[:, :, -1:].clone()
            else:
                x_in = torch.cat([prev, x], dim=2)
                prev.copy_(x[:, :, -1:])
                x = self.time_conv(x_in)
        return x


class Encoder3d(nn.Module):
    """conv1 -> downsampling levels -> middle (res, attention, res) -> head (norm, SiLU, conv)."""

    def __init__(
        self,
        dim: int,
        z_dim: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temporal_down: tuple[bool, ...],
        in_channels: int = 3,
    ):
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        self.conv1 = CausalConv3d(in_channels, dims[0], 3, padding=1)
        self.downsamples = nn.Sequential(*self.levels(dims, num_res_blocks, temporal_down))
        d = dims[-1]
        self.middle = nn.Sequential(ResidualBlock(d, d), AttentionBlock(d), ResidualBlock(d, d))
        self.head = nn.Sequential(RMSNorm(d), nn.SiLU(), CausalConv3d(d, z_dim, 3, padding=1))

    @staticmethod
    def levels(dims: list[int], num_res_blocks: int, temporal_down: tuple[bool, ...]) -> list[nn.Module]:
        # Wan2.1: one flat list, `num_res_blocks` residual blocks per level and a downsampler between
        layers: list[nn.Module] = []
        last = len(dims) - 2
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != last:
                layers.append(Resample(out_dim, "downsample3d" if temporal_down[i] else "downsample2d"))
        return layers

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        # x [B, in_channels, t, H, W] (t = 1 or a whole multiple of the temporal compression)
        #   -> [B, z_dim, t', H/8, W/8]
        x = self.conv1(x, cache)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, cache)
        norm, act, conv = self.head
        out: torch.Tensor = conv(act(norm(x)), cache)
        return out


class Decoder3d(nn.Module):
    """conv1 -> middle (res, attention, res) -> upsampling levels -> head (norm, SiLU, conv)."""

    def __init__(
        self,
        dim: int,
        z_dim: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temporal_up: tuple[bool, ...],
        out_channels: int = 3,
    ):
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *dim_mult[::-1])]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        d = dims[0]
        self.middle = nn.Sequential(ResidualBlock(d, d), AttentionBlock(d), ResidualBlock(d, d))
        self.upsamples = nn.Sequential(*self.levels(dims, num_res_blocks, temporal_up))
        d = dims[-1]
        self.head = nn.Sequential(RMSNorm(d), nn.SiLU(), CausalConv3d(d, out_channels, 3, padding=1))

    @staticmethod
    def levels(dims: list[int], num_res_blocks: int, temporal_up: tuple[bool, ...]) -> list[nn.Module]:
        # Wan2.1: one flat list, `num_res_blocks + 1` residual blocks per level and an upsampler between
        layers: list[nn.Module] = []
        last = len(dims) - 2
        for i, (in_dim, out_dim) in enumerate(itertools.pairwise(dims)):
            if i > 0:
                in_dim //= 2  # the previous level's upsampler halved the channels
            for _ in range(num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != last:
                layers.append(Resample(out_dim, "upsample3d" if temporal_up[i] else "upsample2d"))
        return layers

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        # x [B, z_dim, 1, h, w] (one latent frame) -> [B, out_channels, 1 (first frame) or 4, 8h, 8w]
        x = self.conv1(x, cache)
        for layer in (*self.middle, *self.upsamples):
            x = layer(x, cache)
        norm, act, conv = self.head
        out: torch.Tensor = conv(act(norm(x)), cache)
        return out


class WanVAE(nn.Module):
    """The Wan2.1 VAE. Public methods take and return latents in the DiT's normalised space.

    The Wan2.2 VAE (`vae2.Wan22VAE`) is this class with other encoder/decoder levels and pixels
    folded into channels (`to_channels` / `to_pixels`); everything else here is shared.
    """

    encoder_class: type[Encoder3d] = Encoder3d
    decoder_class: type[Decoder3d] = Decoder3d
    latents_mean: torch.Tensor  # [1, z_dim, 1, 1, 1] float32 (non-persistent buffers)
    latents_std: torch.Tensor

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if len(cfg.temporal_downsample) != len(cfg.dim_mult) - 1:
            raise ValueError("temporal_downsample needs one entry per downsampling level (len(dim_mult) - 1)")
        if len(cfg.latents_mean) != cfg.z_dim or len(cfg.latents_std) != cfg.z_dim:
            raise ValueError("latents_mean and latents_std need z_dim entries")
        self._check_family(cfg)
        self.cfg = cfg
        z, pixels = cfg.z_dim, 3 * cfg.patch_size**2
        levels = (cfg.dim_mult, cfg.num_res_blocks)
        self.encoder = self.encoder_class(
            cfg.base_dim, 2 * z, *levels, cfg.temporal_downsample, in_channels=pixels
        )
        self.conv1 = nn.Conv3d(2 * z, 2 * z, 1)  # -> mu, log_var
        self.conv2 = nn.Conv3d(z, z, 1)
        self.decoder = self.decoder_class(
            cfg.decoder_dim, z, *levels, cfg.temporal_downsample[::-1], out_channels=pixels
        )
        # Not part of the checkpoint. Built on a real device even when the weights are on "meta"
        # (loaders build there, then assign the checkpoint); rebuilt in float32 by `_apply`.
        device = torch.empty(0).device
        device = torch.device("cpu") if device.type == "meta" else device
        mean, std = self._latent_stats(device)
        self.register_buffer("latents_mean", mean, persistent=False)
        self.register_buffer("latents_std", std, persistent=False)

    @staticmethod
    def _check_family(cfg: VAEConfig) -> None:
        if cfg.is_residual or cfg.patch_size != 1:
            raise ValueError("is_residual or patch_size > 1 is the Wan2.2 VAE: use vae2.build_vae(cfg)")

    def _latent_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.cfg.z_dim, 1, 1, 1)
        mean = torch.tensor(self.cfg.latents_mean, dtype=torch.float32, device=device).view(shape)
        std = torch.tensor(self.cfg.latents_std, dtype=torch.float32, device=device).view(shape)
        return mean, std

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> WanVAE:
        # .to(dtype) would round and to_empty() would wipe the statistics: rebuild them.
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves Module._apply untyped
        if self.latents_mean.device.type != "meta":
            self.latents_mean, self.latents_std = self._latent_stats(self.latents_mean.device)
        return self

    def to_channels(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, T, H, W] -> the encoder's input (Wan2.1: unchanged)."""
        return video

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output -> video [B, 3, T, H, W] (Wan2.1: unchanged)."""
        return x

    def stream_decoder(self, clip_start: bool = False) -> StreamingDecoder:
        return StreamingDecoder(self, clip_start)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Whole video: normalised latents [B, C, n, h, w] -> video [B, 3, 1+4(n-1), H, W] in [-1, 1]."""
        return StreamingDecoder(self).decode(z)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video [B, 3, 1+4k, H, W] in [-1, 1] -> normalised latent means [B, C, 1+k, h, w]."""
        tc, sc = self.cfg.temporal_compression, self.cfg.spatial_compression
        if (video.shape[2] - 1) % tc:
            raise ValueError(f"encode needs 1 + {tc}k frames, got {video.shape[2]}")
        if video.shape[3] % sc or video.shape[4] % sc:
            raise ValueError(f"encode needs height and width multiples of {sc}, got {tuple(video.shape[3:])}")
        x = self.to_channels(video.to(self.conv1.weight.dtype))
        cache: CausalCache = {}
        chunks = [x[:, :, :1], *torch.split(x[:, :, 1:], tc, dim=2)]
        x = torch.cat([self.encoder(chunk, cache) for chunk in chunks], dim=2)
        mu: torch.Tensor = self.conv1(x)[:, : self.cfg.z_dim]
        return (mu - self.latents_mean) / self.latents_std


class StreamingDecoder:
    """Decodes a latent video chunk by chunk.

    clip_start=False (continuous): conv contexts carry over, so the chunks join seamlessly and
      together equal the whole-video decode; the first chunk yields 1 + 4(n-1) frames, later ones 4n.
    clip_start=True: every chunk is decoded as the start of a new video (contexts dropped first), so
      every chunk of n latents yields 1 + 4(n-1) frames (8 -> 29), with no context across chunks.
    """

    def __init__(self, vae: WanVAE, clip_start: bool = False):
        self.vae = vae
        self.clip_start = clip_start
        self.cache: CausalCache = {}

    def reset(self) -> None:
        """Forget the previous chunks (start a new video)."""
        self.cache = {}

    def frames_for(self, n: int, first: bool) -> int:
        """Video frames that decoding n latent frames yields (first: the video's first chunk)."""
        t = self.vae.cfg.temporal_compression
        return 1 + t * (n - 1) if first or self.clip_start else t * n

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, C, n, h, w] -> video [B, 3, T, H, W] in [-1, 1] (T: `frames_for`)."""
        if self.clip_start:
            self.reset()
        vae = self.vae
        z = z.to(vae.conv2.weight.dtype)
        x = vae.conv2(z * vae.latents_std + vae.latents_mean)
        frames = [vae.decoder(x[:, :, i : i + 1], self.cache) for i in range(x.shape[2])]
        return vae.to_pixels(torch.cat(frames, dim=2)).clamp_(-1.0, 1.0)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """Batch item 0 of a video [B, 3, T, H, W] in [-1, 1] -> uint8 frames [T, H, W, 3].

    The decoders already clamp to [-1, 1] (`StreamingDecoder.decode`), so this does not clamp again:
    a value outside [-1, 1] would not saturate here.
    """
    x = video[0].float().mul(0.5)  # a new tensor: the rest works in place on it
    x = x.add_(0.5).mul_(255.0).round_().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().cpu().numpy()
