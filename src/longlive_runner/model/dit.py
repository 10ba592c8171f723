"""The causal Wan2.1 diffusion transformer: LongLive's denoiser.

Parameter names are the native Wan names, so Wan / LongLive checkpoints load as they are:

    patch_embedding.{weight,bias}                  Conv3d(in_dim -> dim, kernel = stride = patch)
    text_embedding.{0,2}.*                         Linear, GELU(tanh), Linear
    time_embedding.{0,2}.*                         Linear, SiLU, Linear
    time_projection.1.*                            SiLU, Linear(dim -> 6*dim)
    blocks.N.modulation                            [1, 6, dim]: shift/scale/gate for self-attn and FFN
    blocks.N.self_attn.{q,k,v,o}.*, .{norm_q,norm_k}.weight   (RMSNorm over the full dim)
    blocks.N.norm3.{weight,bias}                   affine LayerNorm before cross-attn (norm1/norm2: no params)
    blocks.N.cross_attn.{q,k,v,o}.*, .{norm_q,norm_k}.weight
    blocks.N.ffn.{0,2}.*                           Linear, GELU(tanh), Linear
    head.head.*, head.modulation [1, 2, dim]

Every latent frame has its own timestep (t [B, F]); each token is modulated by its frame's.
RoPE positions are absolute: the time position of a token is its latent frame index (+ the
cache's `rope_offset`, LongLive 2.0's per-shot offset, for the frames written while it is set).

The same class is the Wan2.1-T2V-1.3B DiT of LongLive 1.0 and the Wan2.2-TI2V-5B DiT of
LongLive 2.0: the block structure is the same; only the sizes (`DiTConfig`) differ.

Four ways to run it:
  forward          no cache; bidirectional, or any frame-level mask
  forward_with_attention   no cache; any attention callable and per-sample RoPE positions (training)
  forward_cached   one block against the KVCache (frame sink + rolling window), writing its K/V
  context_pass     the same for the clean block at t=0, keeping only the K/V (no output)
  recache          re-encode recent clean frames under a new prompt: an ordinary cached forward
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from longlive_runner.model.config import DiTConfig, StreamConfig
from longlive_runner.model.kv_cache import KVCache, Run

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin: float32 [S, 1, head_dim/2]
# attend(q, k, v) for one layer; q, k, v [B, S, H, D] -> [B, S, H, D], or None: nothing reads it
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


# ----------------------------------------------------------------------------------------------
# Embeddings and small helpers


def modulation_table(rows: int, dim: int) -> nn.Parameter:
    """[1, rows, dim] ~ N(0, 1/dim). On the meta device (loaders build there) it stays empty: random
    ops on meta tensors run torch's Python reference kernels, whose first use imports ~800
    modules (2-3 s per process)."""
    table = torch.empty(1, rows, dim)
    return nn.Parameter(table if table.is_meta else torch.randn(1, rows, dim) / dim**0.5)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Float timesteps [...] -> [..., dim] float32, cos half first (Wan's layout)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    angles = t.float()[..., None] * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def rope_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex frequencies per axis (time, height, width): Wan splits head_dim/2 as c-2(c//3), c//3, c//3."""
    hw = head_dim // 6
    return head_dim // 2 - 2 * hw, hw, hw


def rope_inv_freq(pairs: int, theta: float) -> torch.Tensor:
    """The frequency ladder of one axis with `pairs` complex channels: float64 [pairs] on the CPU."""
    return 1.0 / theta ** (torch.arange(pairs, dtype=torch.float64, device="cpu") * 2 / (2 * pairs))


def rope_table(head_dim: int, positions: int, theta: float) -> torch.Tensor:
    """[2 (cos, sin), positions, head_dim/2] float32 on the CPU; each axis has its own frequency ladder."""
    steps = torch.arange(positions, dtype=torch.float64, device="cpu")
    a = torch.cat([torch.outer(steps, rope_inv_freq(p, theta)) for p in rope_pairs(head_dim)], dim=1)
    return torch.stack([a.cos(), a.sin()]).float()  # computed once in float64, stored in float32


def rotate_time_(keys: torch.Tensor, shift: int, head_dim: int, theta: float) -> None:
    """Move post-RoPE keys [..., H, head_dim] `shift` time positions back, in place: RoPE rotations
    compose, so rotating by -shift equals having applied RoPE at position - shift."""
    ct = rope_pairs(head_dim)[0]
    angles = -shift * rope_inv_freq(ct, theta)  # float64, exact for any shift
    cos, sin = angles.cos().float().to(keys.device), angles.sin().float().to(keys.device)
    time_part = keys[..., : 2 * ct]
    time_part.copy_(apply_rope(time_part, cos, sin))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of x [B, S, H, D] by the angles in cos/sin [S, 1, D/2] (float32)."""
    x1, x2 = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SDPA on [B, S, H, D] tensors (strided views, no copies); returns [B, Sq, H, D]."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [B, F*T, dim] * (1 + scale) + shift, with shift/scale [B, F, dim] applied per frame."""
    B, S, D = x.shape
    f = shift.shape[1]
    x = x.view(B, f, S // f, D)
    return (x * (1 + scale[:, :, None]) + shift[:, :, None]).view(B, S, D)


def gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + y * gate (gate [B, F, dim] per frame), summed in float32."""
    B, S, D = x.shape
    f = gate.shape[1]
    out = x.float().view(B, f, S // f, D) + y.float().view(B, f, S // f, D) * gate[:, :, None]
    return out.view(B, S, D).to(x.dtype)


class LayerNorm32(nn.LayerNorm):
    """LayerNorm with statistics in float32; returns float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


class RMSNorm(nn.Module):
    """RMS norm over the full feature dim (all heads together), statistics in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype) * self.weight


# ----------------------------------------------------------------------------------------------
# Transformer block


class Attention(nn.Module):
    """The projections both attentions own: q, k, v, o and RMS norms of q and k."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)


class SelfAttention(Attention):
    def forward(self, x: torch.Tensor, rope: Rope, attend: Attend) -> torch.Tensor | None:
        # x [B, S, dim] -> [B, S, dim]; `attend` decides which keys are seen (and caches k, v)
        heads = (self.num_heads, -1)
        q = apply_rope(self.norm_q(self.q(x)).unflatten(-1, heads), *rope)
        k = apply_rope(self.norm_k(self.k(x)).unflatten(-1, heads), *rope)
        v = self.v(x).unflatten(-1, heads)
        out = attend(q, k, v)  # [B, S, H, D]
        return None if out is None else self.o(out.flatten(2))


class CrossAttention(Attention):
    def kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded text [B, L, dim] -> k, v [B, L, H, D] (computed once per prompt)."""
        heads = (self.num_heads, -1)
        return self.norm_k(self.k(context)).unflatten(-1, heads), self.v(context).unflatten(-1, heads)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1))
        out: torch.Tensor = self.o(attention(q, k, v).flatten(2))  # all text slots, padding included
        return out


class WanBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        dim = cfg.dim
        self.norm1 = LayerNorm32(dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, cfg.num_heads, cfg.eps)
        self.norm3 = LayerNorm32(dim, cfg.eps, elementwise_affine=True)
        self.cross_attn = CrossAttention(dim, cfg.num_heads, cfg.eps)
        self.norm2 = LayerNorm32(dim, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, dim)
        )
        self.modulation = modulation_table(6, dim)

    def forward(
        self,
        x: torch.Tensor,  # [B, F*T, dim]
        e: torch.Tensor,  # [B, F, 6, dim] float32, per-frame time projection
        rope: Rope,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        attend: Attend,
    ) -> torch.Tensor | None:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e).unbind(2)  # [B, F, dim]
        y = self.self_attn(modulate(self.norm1(x), shift1, scale1).to(x.dtype), rope, attend)
        if y is None:  # only this layer's K/V were wanted
            return None
        x = gated_add(x, y, gate1)
        x = x + self.cross_attn(self.norm3(x).to(x.dtype), *text_kv)
        y = self.ffn(modulate(self.norm2(x), shift2, scale2).to(x.dtype))
        return gated_add(x, y, gate2)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = LayerNorm32(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = modulation_table(2, cfg.dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # x [B, F*T, dim], e [B, F, dim] float32 (time embedding) -> [B, F*T, out_dim * prod(patch)]
        shift, scale = (self.modulation.float() + e[:, :, None]).unbind(2)
        out: torch.Tensor = self.head(modulate(self.norm(x), shift, scale).to(x.dtype))
        return out


# ----------------------------------------------------------------------------------------------
# The model


class CausalWanDiT(nn.Module):
    """Wan2.1 DiT with per-frame timesteps, absolute-frame RoPE and a sink + rolling-window KV cache."""

    rope_freqs: torch.Tensor  # [2, rope_max_positions, head_dim/2] float32 (a non-persistent buffer)

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        dim = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_dim, dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList([WanBlock(cfg) for _ in range(cfg.num_layers)])
        self.head = Head(cfg)
        # RoPE angles for every position, once. Built on a real device even when the weights are
        # on "meta" (loaders build there, then assign the checkpoint); see also `_apply`.
        device = torch.empty(0).device
        device = torch.device("cpu") if device.type == "meta" else device
        self.register_buffer("rope_freqs", self._rope_table(device), persistent=False)
        # The last RoPE grid built: a block's 4 denoising steps and its context pass share it.
        self._rope_memo: tuple[tuple[int, int, int, int], Rope] | None = None

    @property
    def layers(self) -> list[WanBlock]:
        """`blocks`, typed."""
        return cast(list[WanBlock], list(self.blocks))

    def _rope_table(self, device: torch.device) -> torch.Tensor:
        return rope_table(self.cfg.head_dim, self.cfg.rope_max_positions, self.cfg.rope_theta).to(device)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> CausalWanDiT:
        # .to(bfloat16) / .half() / to_empty() would degrade or wipe the float32 RoPE tables: rebuild them.
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves Module._apply untyped
        if self.rope_freqs.device.type != "meta":
            self.rope_freqs = self._rope_table(self.rope_freqs.device)
        self._rope_memo = None
        return self

    # --- pieces shared by every path ------------------------------------------------------------
    def rope(self, start_frame: int, f: int, h: int, w: int) -> Rope:
        """cos, sin [f*h*w, 1, head_dim/2] for the token grid of frames [start_frame, start_frame+f)."""
        if start_frame < 0 or start_frame + f > self.cfg.rope_max_positions:
            raise ValueError(
                f"latent frames {start_frame}..{start_frame + f - 1} exceed the "
                f"{self.cfg.rope_max_positions} RoPE positions"
            )
        key = (start_frame, f, h, w)
        if self._rope_memo is not None and self._rope_memo[0] == key:
            return self._rope_memo[1]
        ct = rope_pairs(self.cfg.head_dim)[0]
        rope = self._grid_rope(self.rope_freqs[:, start_frame : start_frame + f, :ct], h, w)
        self._rope_memo = (key, rope)
        return rope

    def rope_at(self, positions: torch.Tensor, h: int, w: int) -> Rope:
        """cos, sin [B, f*h*w, 1, head_dim/2] for per-sample frame positions [B, f] (int): frames
        of one sequence may sit anywhere, e.g. a training sequence whose middle was evicted."""
        if positions.ndim != 2 or positions.is_floating_point():
            raise ValueError(f"positions must be int [B, f], got {positions.dtype} {tuple(positions.shape)}")
        if positions.numel() and (positions.min() < 0 or positions.max() >= self.cfg.rope_max_positions):
            raise ValueError(f"positions must lie in [0, {self.cfg.rope_max_positions})")
        ct = rope_pairs(self.cfg.head_dim)[0]
        return self._grid_rope(self.rope_freqs[:, positions.to(self.rope_freqs.device), :ct], h, w)

    def _grid_rope(self, t_part: torch.Tensor, h: int, w: int) -> Rope:
        """Time angles t_part [2, *lead, f, ct] + the grid's height/width angles -> cos, sin
        [*lead, f*h*w, 1, head_dim/2] (frame-major tokens, as `patchify` lays them out)."""
        if max(h, w) > self.cfg.rope_max_positions:
            raise ValueError(f"a {h}x{w} token grid exceeds the {self.cfg.rope_max_positions} RoPE positions")
        ct, ch, cw = rope_pairs(self.cfg.head_dim)
        table = self.rope_freqs  # [2, P, D/2]
        *lead, f, _ = t_part.shape[1:]
        ones = [1] * len(lead)
        full = (2, *lead, f, h, w)
        t_part = t_part[..., None, None, :].expand(*full, ct)
        h_part = table[:, :h, ct : ct + ch].view(2, *ones, 1, h, 1, ch).expand(*full, ch)
        w_part = table[:, :w, ct + ch :].view(2, *ones, 1, 1, w, cw).expand(*full, cw)
        cos, sin = torch.cat([t_part, h_part, w_part], dim=-1).reshape(2, *lead, f * h * w, 1, -1)
        return cos, sin

    def embed_time(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t [B, F] -> (e [B, F, dim] for the head, e0 [B, F, 6, dim] for the blocks), float32."""
        dtype = cast(nn.Linear, self.time_embedding[0]).weight.dtype
        e = self.time_embedding(sinusoidal_embedding(t, self.cfg.freq_dim).to(dtype))
        e0 = self.time_projection(e).unflatten(-1, (6, -1))
        return e.float(), e0.float()

    def _layer_text_kv(self, context: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Text features [B, L, text_dim] -> each layer's cross-attention (k, v) [B, L, H, D]."""
        ctx = self.text_embedding(context)
        return [block.cross_attn.kv(ctx) for block in self.layers]

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """x [B, C, F, H, W] -> tokens [B, f*h*w, dim] (frame-major), grid (f, h, w)."""
        x = self.patch_embedding(x)  # [B, dim, f, h, w]
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2).contiguous(), grid  # type: ignore[return-value]

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, f*h*w, pt*ph*pw*C] -> [B, C, f*pt, h*ph, w*pw]."""
        (f, h, w), (pt, ph, pw) = grid, self.cfg.patch_size
        x = x.view(x.shape[0], f, h, w, pt, ph, pw, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(x.shape[0], -1, f * pt, h * ph, w * pw)

    def _check(self, x: torch.Tensor, t: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.cfg.in_dim:
            raise ValueError(f"x must be [B, {self.cfg.in_dim}, F, h, w], got {tuple(x.shape)}")
        pt, ph, pw = self.cfg.patch_size
        if x.shape[2] % pt or x.shape[3] % ph or x.shape[4] % pw:
            raise ValueError(f"x {tuple(x.shape)} does not split into {self.cfg.patch_size} patches")
        if tuple(t.shape) != (x.shape[0], x.shape[2] // pt):
            raise ValueError(f"t must be [B, F] = {(x.shape[0], x.shape[2] // pt)}, got {tuple(t.shape)}")

    def _run(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        rope_for: Callable[[int, int, int], Rope],
        text_kv: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
        attend: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor | None],
    ) -> torch.Tensor | None:
        """The transformer body; rope_for(f, h, w) places the tokens, text_kv(layer) and
        attend(layer, q, k, v) choose the attention pattern."""
        tokens, grid = self.patchify(x)  # [B, S, dim]
        rope = rope_for(*grid)
        e, e0 = self.embed_time(t)
        for i, block in enumerate(self.layers):
            tokens = block(tokens, e0, rope, text_kv(i), partial(attend, i))
            if tokens is None:
                return None
        return self.unpatchify(self.head(tokens, e), grid)

    # --- no-cache forward -----------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,  # [B, C, F, h, w]
        t: torch.Tensor,  # [B, F] float
        context: torch.Tensor,  # [B, L, text_dim]
        frame_mask: torch.Tensor | None = None,  # bool [F, F]: query frame i may attend key frame j
        start_frame: int = 0,
    ) -> torch.Tensor:
        """Predicted flow v [B, C, F, h, w]; bidirectional attention when frame_mask is None."""
        self._check(x, t)
        text_kv = self._layer_text_kv(context)
        mask = None
        if frame_mask is not None:
            f = t.shape[1]
            if tuple(frame_mask.shape) != (f, f) or frame_mask.dtype != torch.bool:
                raise ValueError(
                    f"frame_mask must be bool [{f}, {f}], got {frame_mask.dtype} {tuple(frame_mask.shape)}"
                )
            tokens_per_frame = (x.shape[3] // self.cfg.patch_size[1]) * (x.shape[4] // self.cfg.patch_size[2])
            mask = frame_mask.to(x.device).repeat_interleave(tokens_per_frame, 0)
            mask = mask.repeat_interleave(tokens_per_frame, 1)  # [S, S]
        out = self._run(
            x,
            t,
            partial(self.rope, start_frame),
            text_kv.__getitem__,
            lambda i, q, k, v: attention(q, k, v, mask),
        )
        assert out is not None
        return out

    def forward_with_attention(
        self,
        x: torch.Tensor,  # [B, C, F, h, w]
        t: torch.Tensor,  # [B, F] float
        context: torch.Tensor,  # [B, L, text_dim]
        attend: Attend,  # the same for every layer; must return a tensor
        positions: torch.Tensor,  # int [B, F / pt]: each frame's RoPE time position
    ) -> torch.Tensor:
        """Predicted flow v [B, C, F, h, w] with a caller-made attention pattern and per-sample
        frame positions: the training entry point (teacher forcing over a sequence laid out as
        the KV cache would show it). `forward` is this with a frame mask and positions 0..F-1."""
        self._check(x, t)
        if positions.shape != t.shape:
            raise ValueError(f"positions must be [B, F] = {tuple(t.shape)}, got {tuple(positions.shape)}")
        text_kv = self._layer_text_kv(context)
        out = self._run(
            x,
            t,
            lambda f, h, w: self.rope_at(positions, h, w),
            text_kv.__getitem__,
            lambda i, q, k, v: attend(q, k, v),
        )
        if out is None:
            raise ValueError("attend returned None: forward_with_attention needs every layer's output")
        return out

    # --- cached generation ----------------------------------------------------------------------
    def new_cache(
        self,
        batch: int,
        tokens_per_frame: int,
        stream: StreamConfig,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> KVCache:
        """An empty, fixed-size cache: sink_frames + a window, cache_frames frames per layer in all."""
        cfg = self.cfg
        return KVCache(
            num_layers=cfg.num_layers,
            batch=batch,
            tokens_per_frame=tokens_per_frame,
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            sink_frames=stream.sink_frames,
            cache_frames=stream.cache_frames,
            device=device,
            dtype=dtype,
        )

    def _text_kv(
        self, context: torch.Tensor, cache: KVCache
    ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        # Cross-attention K/V are computed once per prompt and reused until cache.clear_text().
        if not cache.has_text:
            for i, kv in enumerate(self._layer_text_kv(context)):
                cache.set_text(i, *kv)
        return cache.text

    def _check_cache(self, x: torch.Tensor, cache: KVCache) -> None:
        _, ph, pw = self.cfg.patch_size
        tokens_per_frame = (x.shape[3] // ph) * (x.shape[4] // pw)
        if tokens_per_frame != cache.tokens_per_frame or x.shape[0] != cache.batch:
            raise ValueError(
                f"x {tuple(x.shape)} has batch {x.shape[0]} and {tokens_per_frame} tokens per frame; "
                f"the cache was made for batch {cache.batch} and {cache.tokens_per_frame}"
            )

    def _place(self, cache: KVCache, start_frame: int, n: int) -> int:
        """RoPE time position of `start_frame` for a block of n frames (the shot offset
        `cache.rope_offset` included), re-basing the cache first if the block would run past the
        RoPE table (see kv_cache.py: exact LongLive positions up to the table's end, then the
        window moved back to its middle)."""
        table = self.cfg.rope_max_positions
        end = cache.position(start_frame) + cache.rope_offset + n
        if end > table:
            cache.rebase(end - table // 2, self._rotate_keys)
        return cache.position(start_frame) + cache.rope_offset

    def _rotate_keys(self, keys: torch.Tensor, shift: int) -> None:
        """Move cached keys [layers, B, S, H, D] `shift` positions back, one layer at a time."""
        for layer_keys in keys:
            rotate_time_(layer_keys, shift, self.cfg.head_dim, self.cfg.rope_theta)

    def _cached(
        self,
        x: torch.Tensor,  # [B, C, n, h, w]: latent frames [start_frame, start_frame+n)
        t: torch.Tensor,  # [B, n]
        text_kv: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
        cache: KVCache,
        position: int,
        runs: list[Run],
        want_output: bool,
    ) -> torch.Tensor | None:
        """The cached forward every generation path shares: in each layer the frames first write
        their post-RoPE K/V into the cache (`runs`), then their queries attend, without a mask, to
        everything the cache holds after that write (sink + window)."""
        last = len(self.blocks) - 1

        def attend(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
            cache.write(i, k, v, runs)
            if not want_output and i == last:
                return None  # nothing reads the last layer's output: only its K/V were wanted
            return attention(q, *cache.layer(i))

        return self._run(x, t, partial(self.rope, position), text_kv, attend)

    @torch.no_grad()
    def forward_cached(
        self,
        x: torch.Tensor,  # [B, C, n, h, w]: latent frames [start_frame, start_frame+n)
        t: torch.Tensor,  # [B, n]
        context: torch.Tensor,  # [B, L, text_dim]; ignored while the cache holds text K/V
        cache: KVCache,
        start_frame: int,
    ) -> torch.Tensor:
        """One denoising step of a block against the cache: v [B, C, n, h, w].

        Writes the block's post-RoPE K/V into its frames' slots, then attends to every frame the
        cache holds (sink + window, this block included) without a mask.
        """
        out = self._cached_block(x, t, context, cache, start_frame, want_output=True)
        assert out is not None
        return out

    @torch.no_grad()
    def context_pass(
        self, x_clean: torch.Tensor, context: torch.Tensor, cache: KVCache, start_frame: int
    ) -> None:
        """The block's clean latents [B, C, n, h, w] at t=0: their K/V are what the cache keeps."""
        t = torch.zeros(x_clean.shape[0], x_clean.shape[2] // self.cfg.patch_size[0], device=x_clean.device)
        self._cached_block(x_clean, t, context, cache, start_frame, want_output=False)

    def _cached_block(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        cache: KVCache,
        start_frame: int,
        want_output: bool,
    ) -> torch.Tensor | None:
        self._check(x, t)
        self._check_cache(x, cache)
        runs = cache.begin_block(start_frame, t.shape[1])
        position = self._place(cache, start_frame, t.shape[1])
        return self._cached(x, t, self._text_kv(context, cache), cache, position, runs, want_output)

    @torch.no_grad()
    def recache(
        self,
        x_clean: torch.Tensor,  # [B, C, n, h, w]: the newest n clean frames, n = min(cache_frames, s)
        context: torch.Tensor,  # [B, L, text_dim]: the new prompt
        cache: KVCache,
        first_frame: int,
        global_sink: bool = True,
    ) -> None:
        """Re-encode clean frames [first_frame, first_frame+n) at t=0 under a new prompt.

        An ordinary cached forward at their positions: in every layer they write their new K/V,
        then attend to what the cache holds after the write.
        - global_sink (LongLive's default): only the frames the cache still holds are rewritten;
          the sink keeps the first frames' old K/V unless they are re-encoded themselves (s <= 12),
          and frames the window has dropped only serve as queries.
        - otherwise the cache is emptied and every re-encoded frame is written from slot 0 on: the
          first `sink_frames` of them become the new sink.
        Frame counters do not move and the text K/V are left cleared for the next block.
        """
        t = torch.zeros(x_clean.shape[0], x_clean.shape[2] // self.cfg.patch_size[0], device=x_clean.device)
        self._check(x_clean, t)
        self._check_cache(x_clean, cache)
        n = t.shape[1]
        if global_sink:
            runs = cache.held_runs(first_frame, n)
        else:
            runs = cache.restart_sink(first_frame, n)
        position = cache.position(first_frame)
        cache.clear_text()
        text_kv = self._layer_text_kv(context)
        self._cached(x_clean, t, text_kv.__getitem__, cache, position, runs, want_output=False)
        cache.clear_text()
