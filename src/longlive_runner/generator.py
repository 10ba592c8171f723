"""The block loop: one call generates, caches and decodes one block of latent frames.

A `VideoGenerator` owns everything that lives for one video: the DiT's KV cache, the VAE's
streaming decoder state, the noise generator and the last clean latent frames (needed to re-cache
after a prompt switch). The session layer calls `generate_block(prompt)` between commands; the
generator itself never looks at a schedule.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .models.vae import to_uint8
from .scheduler import denoising_sigmas

if TYPE_CHECKING:
    from .pipeline import Pipeline


class GenerationFinished(RuntimeError):
    """Raised when a block is asked for past the model's last latent frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Block:
    """One generated block."""

    start_frame: int  # latent frame index of the block's first frame (0, 3, 6, ...)
    frames: np.ndarray  # uint8 [n, H, W, 3]: 9 video frames for the first block, 12 after
    prompt: str  # the prompt in force for this block
    switched: bool = False  # True when this block is the first one under a new prompt
    previous_prompt: str | None = None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class VideoGenerator:
    """Stateful block-by-block generation for one video."""

    def __init__(self, pipe: Pipeline, seed: int = 0) -> None:
        self.pipe = pipe
        cfg = pipe.config
        self._stream = cfg.stream
        self._shape = (1, cfg.dit.in_dim, cfg.stream.frames_per_block, cfg.latent_height, cfg.latent_width)
        self._sigmas = denoising_sigmas(cfg.stream)
        self._cache = pipe.dit.new_cache(1, cfg.tokens_per_frame, cfg.stream, pipe.device, pipe.dtype)
        self._decoder = pipe.vae.stream_decoder()
        # Clean latents of the newest blocks, enough to re-cache `cache_frames` frames on a switch.
        self._recent: deque[torch.Tensor] = deque(
            maxlen=cfg.stream.cache_frames // cfg.stream.frames_per_block
        )
        self._noise = torch.Generator(device=pipe.device)
        self.reset(seed)

    # ------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Start a new video: caches, counters, decoder state and noise cleared."""
        if seed is not None:
            self.seed = int(seed)
        self._noise.manual_seed(self.seed)
        self._cache.reset()
        self._decoder.reset()
        self._recent.clear()
        self.prompt: str | None = None
        self.current_start_frame = 0
        self.finished: str | None = None
        self.recache_count = 0

    def _randn(self) -> torch.Tensor:
        return torch.randn(
            self._shape, generator=self._noise, device=self.pipe.device, dtype=torch.float32
        ).to(self.pipe.dtype)

    @torch.inference_mode()
    def generate_block(self, prompt: str) -> Block:
        """Generate, cache and decode the next block under `prompt`."""
        if self.finished is not None:
            raise GenerationFinished(self.finished)
        s, n = self.current_start_frame, self._stream.frames_per_block
        dit = self.pipe.dit
        context = self.pipe.text_encoder.encode(prompt)  # [1, L, text_dim], cached per text

        previous = self.prompt
        switched = previous is not None and prompt != previous
        if switched:
            self._recache(context)

        # Few-step flow matching: x0 = x_t - sigma * v, re-noised to the next level with fresh noise.
        x = self._randn()  # [1, C, n, h, w]
        x0 = x
        for i, sigma in enumerate(self._sigmas):
            t = torch.full((1, n), sigma * self._stream.num_train_timesteps, device=x.device)
            v = dit.forward_cached(x, t, context, self._cache, s)
            x0 = x - sigma * v
            if i + 1 < len(self._sigmas):
                nxt = self._sigmas[i + 1]
                x = (1.0 - nxt) * x0 + nxt * self._randn()
        # Context pass: the clean block at t=0; its K/V are what the cache keeps.
        dit.forward_cached(
            x0, torch.zeros((1, n), device=x.device), context, self._cache, s, return_output=False
        )

        video = self._decoder.decode(x0)  # [1, 3, T, H, W] in [-1, 1]
        frames = to_uint8(video)

        self._recent.append(x0)
        self.prompt = prompt
        self.current_start_frame = s + n
        if self.current_start_frame + n > self._stream.max_latent_frames:
            self.finished = "max_frames"
        return Block(s, frames, prompt, switched, previous if switched else None)

    def _recache(self, context: torch.Tensor) -> None:
        """Rewrite the self-attention K/V of the recent clean frames under the new prompt."""
        # A switch needs a previous block, so s > 0. `recache` clears the cross-attention cache
        # before and after, so the next block encodes the new prompt's text K/V.
        s = self.current_start_frame
        k = min(self._stream.cache_frames, s)
        clean = torch.cat(list(self._recent), dim=2)[:, :, -k:]  # [1, C, k, h, w]
        self.pipe.dit.recache(clean, context, self._cache, s - k)
        self.recache_count += 1
