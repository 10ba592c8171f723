"""The DiT's attention caches: self-attention K/V (frame sink + rolling window) and text K/V.

Self-attention: one preallocated buffer per K and V holding, for every layer, `cache_frames`
latent frames of `tokens_per_frame` tokens each:

    slot:   0 .. sink-1                     | sink .. cache_frames-1
    frame:  sink_first .. sink_first+sink-1 | the window: the newest frames (and a shot sink)

`sink_first` is 0 (the video's first frames are the sink) until a re-cache without a global sink
(`restart_sink`) makes the first re-encoded frames the new sink.

The keys are stored after RoPE (their positions are baked in) and cached attention uses no mask,
so the order of the keys does not matter: rolling the window is just writing each new frame over
the slot of the oldest frame it may evict (for frames in order that is a ring:
slot = sink + (frame - sink_first - sink) % window). Nothing is moved, cloned or reallocated,
however long the video. The slots in use always form a prefix (`valid_frames`), and attention
reads exactly that prefix.

Shots (LongLive 2.0): `pin(first, n)` marks the frames of a shot's first block as the shot sink.
A pinned frame is never evicted; the window keeps the newest frames in the slots left over. In
LongLive's own buffer, which is kept in order and shifted on each roll, the pinned chunk "floats"
left with every roll until it sits right after the global sink and then joins the protected
prefix; held sets are the same either way: [global sink | shot sink | newest blocks]. Pinning a
new shot releases the old shot sink, which is then the oldest frame and rolls out next.
`drop_window()` (LongLive's `shot_clean_recache`) forgets everything but the global sink.

Buffers are [layers, B, cache_frames * T, heads, head_dim]: a layer's view `[B, S, H, D]` is what
the attention projections produce, and its `.transpose(1, 2)` is the strided [B, H, S, D] view
that `scaled_dot_product_attention` (flash / memory-efficient kernels) reads without a copy.

Positions: up to the model's RoPE table (`max_positions`, 1024 latent frames for LongLive) a
frame's RoPE time position is its index (+ `rope_offset`, the shot offset of LongLive 2.0,
applied to the frames written while it is in force), exactly as in LongLive. Past it the cache is
re-based (`rebase`): every held key except the video's own first frames (the global sink, pinned
at 0..sink-1) is rotated back by the same shift, and later frames are placed at
`frame - position_offset`. RoPE rotations compose, so the window keeps its relative positions;
the sink-to-newest distance stays inside the trained range. See docs/architecture.md.

Cross-attention: the K/V of the text, per layer, computed once per prompt and kept until
`clear_text()` (a prompt switch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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
        self._slot_of: dict[int, int] = {}  # the inverse: slot of each held frame
        self.filled = 0  # slots 0 .. filled-1 are in use
        self.sink_first = 0  # latent frame held by slot 0
        self.position_offset = 0  # RoPE time position of a non-pinned frame f: f - position_offset
        self.rope_offset = 0  # added to the RoPE time position of frames written now (shots)
        self.pinned: tuple[int, int] | None = None  # the shot sink: (first frame, frames)
        self._last_block: tuple[int, int, int, list[Run]] | None = None  # begin_block's memo
        self._version = 0  # bumped by every change of the slot layout
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

    @property
    def ring_origin(self) -> int:
        """The first latent frame that lives in the ring window."""
        return self.sink_first + self.sink_frames

    @property
    def sink_pinned(self) -> bool:
        """True while the sink holds the video's first frames (their positions never move)."""
        return self.sink_first == 0

    def slot(self, frame: int) -> int:
        """Cache slot of latent frame `frame`, or -1 when the cache does not hold it."""
        return self._slot_of.get(frame, -1)

    def holds(self, frame: int) -> bool:
        return frame in self._slot_of

    def position(self, frame: int) -> int:
        """RoPE time position of latent frame `frame` (after any `rebase`), shot offset not included."""
        if self.sink_pinned and frame < self.sink_frames:
            return frame
        return frame - self.position_offset

    @property
    def valid_frames(self) -> int:
        return self.filled

    @property
    def pinned_frames(self) -> int:
        return 0 if self.pinned is None else self.pinned[1]

    def _protected(self, frame: int) -> bool:
        if self.ring_origin > frame >= self.sink_first:
            return True
        return self.pinned is not None and self.pinned[0] <= frame < self.pinned[0] + self.pinned[1]

    def _place_frame(self, frame: int, claimed: set[int]) -> None:
        """Give `frame` a slot: its own, its sink slot, the lowest free one, or that of the oldest
        frame it may evict (not a sink or shot-sink frame, not one just claimed)."""
        if frame in self._slot_of:
            return
        if self.sink_first <= frame < self.ring_origin:
            slot = frame - self.sink_first
        elif self.filled < self.cache_frames:
            slot = max(self.filled, self.sink_frames)
        else:
            victims = [f for f in self._slot_of if not self._protected(f) and f not in claimed]
            if not victims:
                raise ValueError(f"no slot left for frame {frame}: the cache holds only protected frames")
            slot = self._slot_of.pop(min(victims))
        old = self.slot_frame[slot]
        if old >= 0 and self._slot_of.get(old) == slot:
            del self._slot_of[old]
        self.slot_frame[slot] = frame
        self._slot_of[frame] = slot
        self.filled = max(self.filled, slot + 1)

    def begin_block(self, start_frame: int, n: int) -> list[Run]:
        """Claim the slots of frames [start_frame, start_frame+n) for a cached forward.

        Frames must follow on from what the cache has seen (a block may be rewritten, e.g. by
        each denoising step and its context pass). Returns the copy runs for `write`.
        """
        memo = self._last_block
        if memo is not None and memo[:3] == (start_frame, n, self._version):
            return memo[3]  # the same block again (the next denoising step): nothing changed
        if n < 1 or start_frame < 0:
            raise ValueError(f"bad block: start_frame={start_frame}, n={n}")
        if start_frame > self.frames_seen:
            raise ValueError(
                f"block starts at frame {start_frame} but the cache has only seen {self.frames_seen} frames"
            )
        newest = max(self.frames_seen, start_frame + n)
        first_ring_frame = max(start_frame, self.ring_origin)
        window = self.window - self.pinned_frames
        if first_ring_frame < start_frame + n and first_ring_frame < newest - window:
            raise ValueError(
                f"frames {start_frame}..{start_frame + n - 1} do not fit the window of {window} frames "
                f"ending at frame {newest - 1}"
            )
        self.frames_seen = newest
        frames = range(start_frame, start_frame + n)
        claimed = set(frames)
        for f in frames:
            self._place_frame(f, claimed)
        runs = self._runs(start_frame, frames)
        self._version += 1
        self._last_block = (start_frame, n, self._version, runs)
        return runs

    def pin(self, first_frame: int, n: int) -> None:
        """Make frames [first_frame, first_frame+n) the shot sink (they must be held): never
        evicted until the next `pin` releases them (LongLive 2.0's `_pin_current_chunk`)."""
        if n < 1 or any(not self.holds(f) for f in range(first_frame, first_frame + n)):
            raise ValueError(f"cannot pin frames {first_frame}..{first_frame + n - 1}: not all held")
        if n > self.window - 1:
            raise ValueError(f"a shot sink of {n} frames leaves no window (window {self.window})")
        self.pinned = (first_frame, n)
        self._version += 1

    def drop_window(self) -> None:
        """Forget every frame but the global sink (LongLive 2.0's `shot_clean_recache`); the
        shot sink goes too. Frame counters do not move."""
        for slot in range(self.sink_frames, self.cache_frames):
            frame = self.slot_frame[slot]
            if frame >= 0:
                self._slot_of.pop(frame, None)
            self.slot_frame[slot] = -1
        self.filled = min(self.filled, self.sink_frames)
        self.pinned = None
        self._version += 1

    def held_runs(self, first_frame: int, n: int) -> list[Run]:
        """Copy runs for those of frames [first_frame, first_frame+n) that the cache still holds."""
        if first_frame < 0 or first_frame + n > self.frames_seen:
            raise ValueError(
                f"frames {first_frame}..{first_frame + n - 1} were never written "
                f"(the cache has seen {self.frames_seen} frames)"
            )
        return self._runs(first_frame, [f for f in range(first_frame, first_frame + n) if self.holds(f)])

    def restart_sink(self, first_frame: int, n: int) -> list[Run]:
        """Empty the cache and lay frames [first_frame, first_frame+n) out from slot 0 on: the first
        `sink_frames` of them become the sink, the rest start the ring (a re-cache without a global
        sink). Counters of generated frames do not move. Returns the copy runs for `write`."""
        if first_frame < 0 or first_frame + n != self.frames_seen or n < self.sink_frames:
            raise ValueError(
                f"a sink restart re-encodes the newest frames: got {first_frame}..{first_frame + n - 1}, "
                f"the cache has seen {self.frames_seen} frames and needs at least {self.sink_frames}"
            )
        if n > self.cache_frames:
            raise ValueError(f"{n} frames do not fit the cache of {self.cache_frames}")
        self.k.zero_()
        self.v.zero_()
        self.sink_first = first_frame
        self.slot_frame = [-1] * self.cache_frames
        self._slot_of = {}
        self.filled = 0
        self.pinned = None
        frames = range(first_frame, first_frame + n)
        claimed = set(frames)
        for f in frames:
            self._place_frame(f, claimed)
        self._version += 1
        return self._runs(first_frame, frames)

    def rebase(self, shift: int, rotate: Callable[[torch.Tensor, int], None]) -> None:
        """Move every non-pinned frame `shift` RoPE positions back: `rotate(keys, shift)` rotates
        the keys [layers, B, S, H, D] of the non-pinned slots in place. Values carry no position."""
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}")
        T = self.tokens_per_frame
        first_slot = self.sink_frames if self.sink_pinned else 0
        rotate(self.k[:, :, first_slot * T :], shift)
        self.position_offset += shift

    def _runs(self, first_frame: int, frames: Iterable[int]) -> list[Run]:
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
