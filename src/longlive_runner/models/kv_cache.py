"""The DiT's attention caches: self-attention K/V (frame sink + rolling window) and text K/V.

Self-attention: one preallocated buffer per K and V holding, for every layer, `cache_frames`
latent frames of `tokens_per_frame` tokens each, laid out like this:

    slot:   0 .. sink-1 | sink .. cache_frames-1
    frame:  0 .. sink-1 | a ring over frames >= sink: slot = sink + (frame - sink) % window

The keys are stored after RoPE (their positions are baked in) and cached attention uses no mask,
so the order of the keys does not matter: rolling the window is just writing the new frames over
the slots of the evicted ones. Nothing is moved, cloned or reallocated, however long the video.
Until the ring has been filled once, only the first `min(frames_seen, cache_frames)` slots hold
data, and attention reads exactly that prefix.

Buffers are [layers, B, cache_frames * T, heads, head_dim]: a layer's view `[B, S, H, D]` is what
the attention projections produce, and its `.transpose(1, 2)` is the strided [B, H, S, D] view
that `scaled_dot_product_attention` (flash / memory-efficient kernels) reads without a copy.

Cross-attention: the K/V of the text, per layer, computed once per prompt and kept until
`clear_text()` (a prompt switch).
"""

from __future__ import annotations

import torch

# (first token in the source block, first token in the cache, number of tokens)
Run = tuple[int, int, int]


class KVCache:
    """Fixed-size self-attention K/V (frame sink + ring window) and per-layer text K/V."""

    def __init__(
        self,
        num_layers: int,
        batch: int,
        tokens_per_frame: int,
        num_heads: int,
        head_dim: int,
        sink_frames: int,
        cache_frames: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not 0 <= sink_frames < cache_frames:
            raise ValueError(f"need 0 <= sink_frames ({sink_frames}) < cache_frames ({cache_frames})")
        self.num_layers = num_layers
        self.batch = batch
        self.tokens_per_frame = tokens_per_frame
        self.sink_frames = sink_frames
        self.cache_frames = cache_frames
        self.window = cache_frames - sink_frames
        shape = (num_layers, batch, cache_frames * tokens_per_frame, num_heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.text_k: list[torch.Tensor | None] = [None] * num_layers  # [B, L, H, D] each
        self.text_v: list[torch.Tensor | None] = [None] * num_layers
        self.reset()

    # --- bookkeeping (plain Python ints: no device syncs) -------------------------------------
    def reset(self) -> None:
        """Forget everything (new video). The buffers are kept; stale data is never read."""
        self.frames_seen = 0  # 1 + the newest latent frame written
        self.slot_frame: list[int] = [-1] * self.cache_frames  # latent frame held by each slot
        self.clear_text()

    def clear_text(self) -> None:
        """Drop the cross-attention K/V (prompt switch)."""
        self.text_k = [None] * self.num_layers
        self.text_v = [None] * self.num_layers

    @property
    def has_text(self) -> bool:
        return all(k is not None for k in self.text_k)

    def set_text(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        self.text_k[layer], self.text_v[layer] = k, v

    def text(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.text_k[layer], self.text_v[layer]
        if k is None or v is None:
            raise RuntimeError("the text K/V of this cache are not set")
        return k, v

    def slot(self, frame: int) -> int:
        """Cache slot of latent frame `frame`."""
        if frame < self.sink_frames:
            return frame
        return self.sink_frames + (frame - self.sink_frames) % self.window

    def holds(self, frame: int) -> bool:
        return 0 <= frame and self.slot_frame[self.slot(frame)] == frame

    @property
    def valid_frames(self) -> int:
        return min(self.frames_seen, self.cache_frames)

    def begin_block(self, start_frame: int, n: int) -> list[Run]:
        """Claim the slots of frames [start_frame, start_frame+n) for a cached forward.

        Frames must follow on from what the cache has seen (a block may be rewritten, e.g. by
        each denoising step and its context pass). Returns the copy runs for `write`.
        """
        if n < 1 or start_frame < 0:
            raise ValueError(f"bad block: start_frame={start_frame}, n={n}")
        if start_frame > self.frames_seen:
            raise ValueError(
                f"block starts at frame {start_frame} but the cache has only seen {self.frames_seen} frames"
            )
        newest = max(self.frames_seen, start_frame + n)
        first_ring_frame = max(start_frame, self.sink_frames)
        if first_ring_frame < start_frame + n and first_ring_frame < newest - self.window:
            raise ValueError(
                f"frames {start_frame}..{start_frame + n - 1} do not fit the window of {self.window} frames "
                f"ending at frame {newest - 1}"
            )
        self.frames_seen = newest
        frames = range(start_frame, start_frame + n)
        for f in frames:
            self.slot_frame[self.slot(f)] = f
        return self._runs(start_frame, frames)

    def held_runs(self, first_frame: int, n: int) -> list[Run]:
        """Copy runs for those of frames [first_frame, first_frame+n) that the cache still holds."""
        if first_frame < 0 or first_frame + n > self.frames_seen:
            raise ValueError(
                f"frames {first_frame}..{first_frame + n - 1} were never written "
                f"(the cache has seen {self.frames_seen} frames)"
            )
        return self._runs(first_frame, [f for f in range(first_frame, first_frame + n) if self.holds(f)])

    def _runs(self, first_frame: int, frames) -> list[Run]:
        # Group frames whose slots are consecutive into one copy each (the ring may wrap once).
        T = self.tokens_per_frame
        runs: list[list[int]] = []
        for f in frames:
            src, dst = f - first_frame, self.slot(f)
            if runs and runs[-1][0] + runs[-1][2] == src and runs[-1][1] + runs[-1][2] == dst:
                runs[-1][2] += 1
            else:
                runs.append([src, dst, 1])
        return [(src * T, dst * T, count * T) for src, dst, count in runs]

    # --- tensor access ------------------------------------------------------------------------
    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, runs: list[Run]) -> None:
        """Copy a block's post-RoPE k, v [B, n*T, H, D] into the slots given by `runs`."""
        for src, dst, length in runs:
            self.k[layer, :, dst : dst + length].copy_(k[:, src : src + length])
            self.v[layer, :, dst : dst + length].copy_(v[:, src : src + length])

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The held keys and values of one layer: views [B, valid_frames*T, H, D] (no copy)."""
        n = self.valid_frames * self.tokens_per_frame
        return self.k[layer, :, :n], self.v[layer, :, :n]

    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes
