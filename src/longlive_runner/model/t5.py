"""The umT5 encoder used by Wan2.1 as its text encoder.

Parameter names match the native Wan checkpoint (`models_t5_umt5-xxl-enc-bf16.pth`):

    token_embedding.weight
    blocks.N.norm1.weight
    blocks.N.attn.{q,k,v,o}.weight
    blocks.N.norm2.weight
    blocks.N.ffn.gate.0.weight, blocks.N.ffn.fc1.weight, blocks.N.ffn.fc2.weight
    blocks.N.pos_embedding.embedding.weight      (umT5: one relative-position table per layer)
    norm.weight

T5 specifics: RMS layer norm without mean subtraction (statistics in float32), no 1/sqrt(d)
scaling of the attention scores, bidirectional bucketed relative positions, gated-GELU FFN.
Inference only: there is no dropout.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from longlive_runner.model.config import T5Config


def relative_position_buckets(
    length: int, num_buckets: int, max_distance: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Bidirectional T5 buckets of (key position - query position): long [L, L] in [0, num_buckets)."""
    pos = torch.arange(length, device=device)
    rel = pos[None, :] - pos[:, None]  # [Lq, Lk]
    half = num_buckets // 2  # one half for keys before the query, one for keys after it
    buckets = (rel > 0).long() * half
    dist = rel.abs()
    # Distances below max_exact get their own bucket; larger ones share log-spaced buckets up to max_distance.
    max_exact = half // 2
    log_ratio = torch.log(dist.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (half - max_exact)).long()
    large = large.clamp(max=half - 1)
    return buckets + torch.where(dist < max_exact, dist, large)


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    # The XXL encoder's residual stream can overflow float16; bf16 and fp32 have the range.
    if x.dtype == torch.float16:
        limit = torch.finfo(torch.float16).max - 1000
        x = x.clamp(-limit, limit)
    return x


class T5Embedding(nn.Embedding):
    """nn.Embedding that leaves its table empty on the meta device (loaders build there and fill
    it): a random init of a meta tensor runs torch's Python reference kernels, whose first use
    imports ~800 modules (2-3 s per process)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class T5LayerNorm(nn.Module):
    """RMS norm: scale only, no mean subtraction, statistics in float32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x32.to(self.weight.dtype)


class T5RelativeEmbedding(nn.Module):
    """A learned bias per (bucket, head), added to the attention scores."""

    def __init__(self, num_buckets: int, num_heads: int):
        super().__init__()
        self.embedding = T5Embedding(num_buckets, num_heads)

    def forward(self, buckets: torch.Tensor) -> torch.Tensor:
        # buckets [L, L] -> bias [1, H, L, L]
        bias: torch.Tensor = self.embedding(buckets)  # [L, L, H]
        return bias.permute(2, 0, 1).unsqueeze(0)


class T5Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        assert dim % num_heads == 0
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x [B, L, D], bias [B or 1, H, L, L] (positions + padding mask) -> [B, L, D]
        B, L, D = x.shape
        H = self.num_heads
        q = self.q(x).view(B, L, H, D // H).transpose(1, 2)  # [B, H, L, hd]
        k = self.k(x).view(B, L, H, D // H).transpose(1, 2)
        v = self.v(x).view(B, L, H, D // H).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) + bias  # T5: no 1/sqrt(head_dim) scaling
        attn = F.softmax(scores.float(), dim=-1).to(q.dtype)
        y = (attn @ v).transpose(1, 2).reshape(B, L, D)
        out: torch.Tensor = self.o(y)
        return out


class T5FeedForward(nn.Module):
    """Gated GELU: fc2(fc1(x) * gelu_tanh(gate(x)))."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, ffn_dim, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = nn.Linear(dim, ffn_dim, bias=False)
        self.fc2 = nn.Linear(ffn_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(self.fc1(x) * self.gate(x))
        return out


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.norm1 = T5LayerNorm(cfg.dim, cfg.eps)
        self.attn = T5Attention(cfg.dim, cfg.num_heads)
        self.norm2 = T5LayerNorm(cfg.dim, cfg.eps)
        self.ffn = T5FeedForward(cfg.dim, cfg.ffn_dim)
        self.pos_embedding = T5RelativeEmbedding(cfg.num_buckets, cfg.num_heads)

    def forward(self, x: torch.Tensor, buckets: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        # x [B, L, D], buckets [L, L], mask_bias [B, 1, 1, L] (0 or a large negative)
        bias = self.pos_embedding(buckets).to(x.dtype) + mask_bias
        x = _clamp_fp16(x + self.attn(self.norm1(x), bias))
        x = _clamp_fp16(x + self.ffn(self.norm2(x)))
        return x


class UMT5Encoder(nn.Module):
    """umT5 encoder: ids [B, L] + padding mask [B, L] -> features [B, L, dim]."""

    def __init__(self, cfg: T5Config):
        super().__init__()
        self.cfg = cfg
        self.token_embedding = T5Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList([T5Block(cfg) for _ in range(cfg.num_layers)])
        self.norm = T5LayerNorm(cfg.dim, cfg.eps)
        self.reset_parameters()

    @property
    def layers(self) -> list[T5Block]:
        """`blocks`, typed."""
        return cast(list[T5Block], list(self.blocks))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """T5-style random init (used by the random-weight `tiny` preset; real weights overwrite it).
        Nothing to do on the meta device (see T5Embedding)."""
        if self.token_embedding.weight.is_meta:
            return
        d, f, h = self.cfg.dim, self.cfg.ffn_dim, self.cfg.num_heads
        nn.init.normal_(self.token_embedding.weight, std=1.0)
        for block in self.layers:
            nn.init.normal_(block.attn.q.weight, std=(d * d) ** -0.5)
            nn.init.normal_(block.attn.k.weight, std=d**-0.5)
            nn.init.normal_(block.attn.v.weight, std=d**-0.5)
            nn.init.normal_(block.attn.o.weight, std=d**-0.5)
            nn.init.normal_(cast(nn.Linear, block.ffn.gate[0]).weight, std=d**-0.5)
            nn.init.normal_(block.ffn.fc1.weight, std=d**-0.5)
            nn.init.normal_(block.ffn.fc2.weight, std=f**-0.5)
            nn.init.normal_(block.pos_embedding.embedding.weight, std=(2 * self.cfg.num_buckets * h) ** -0.5)
            nn.init.ones_(block.norm1.weight)
            nn.init.ones_(block.norm2.weight)
        nn.init.ones_(self.norm.weight)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # ids [B, L] long, mask [B, L] (nonzero = real token) -> [B, L, dim]
        B, L = ids.shape
        x = self.token_embedding(ids)
        buckets = relative_position_buckets(L, self.cfg.num_buckets, self.cfg.max_distance, ids.device)
        mask_bias = torch.zeros(B, 1, 1, L, device=ids.device, dtype=x.dtype)
        if mask is not None:
            # Padded keys get the most negative finite value: softmax weight 0, but never NaN.
            mask_bias.masked_fill_(mask.view(B, 1, 1, L) == 0, torch.finfo(x.dtype).min)
        for block in self.layers:
            x = block(x, buckets, mask_bias)
        out: torch.Tensor = self.norm(x)
        return out
