"""The block loop: one call generates, caches and decodes one block of latent frames.

A `VideoGenerator` owns everything that lives for one video: the DiT's KV cache, the VAE's
streaming decoder state, the noise generator and the last clean latent frames (needed to re-cache
after a prompt switch). The session layer calls `generate_block(prompt)` between commands; the
generator itself never looks at a schedule.

Both model families run through the same loop; the config's `StreamConfig` chooses:
- the sampler: 1.0 re-noises the x0 prediction with fresh noise between its 4 steps; 2.0 runs
  flow UniPC (a fresh `FlowUniPC` per chunk) from the chunk's initial noise, nothing drawn inside;
- a prompt change: 1.0 re-caches the recent frames under the new prompt; 2.0 only changes the
  cross-attention context of the blocks that follow;
- shots (2.0): a prompt starting with `shot_prefix` (or `new_shot=True`) begins a new shot where
  it first comes in (the same prompt again continues the shot and is encoded without the
  prefix, as the reference's per-chunk prompt lists have it): the shot index grows and the RoPE time offset becomes shot_index x `shot_rope_offset` for this and
  later chunks (cached keys keep theirs); after the chunk's clean pass it is pinned as the shot
  sink (`KVCache.pin`); with `shot_clean_recache` the window is dropped back to the global sink
  before that clean pass;
- scene cuts (2.0 vocabulary, `scene_cut=True`): memory purged, as a fresh run of the reference:
  a new cache whose global sink is the cut's first chunk, shot index 0, chunk counter 0, and a
  new clip for the decoder.
Every block ends with one forward of its clean latents at t = 0 (the context pass) whose K/V
are what the cache keeps: 1.0 and 2.0 alike make 4 denoising forwards + 1 clean forward.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from .scheduler import FlowUniPC, denoising_sigmas
from .vae import to_uint8

if TYPE_CHECKING:
    from .config import PipelineConfig
    from .dit import CausalWanDiT
    from .kv_cache import KVCache
    from .text_encoder import TextEncoder
    from .vae import WanVAE


class Models(Protocol):
    """What a generator needs of a loaded model (a `Pipeline` is one): this module never imports
    the loaders, so the dependency runs one way, pipeline -> generator."""

    config: PipelineConfig
    dit: CausalWanDiT
    vae: WanVAE
    text_encoder: TextEncoder
    device: torch.device
    dtype: torch.dtype


# A noise source: called with the shape [1, C, n, h, w] of a block, returns standard Gaussian noise
# of that shape (any float dtype, any device: it is moved to the model's). A block asks for the
# initial noise, then one re-noise draw after each denoising step but the last (3 with 4 steps).
NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]
NoiseSource = NoiseFn | torch.Generator


class FrameLimitReached(RuntimeError):
    """Raised when a block is asked for past the user's frame limit (`max_latent_frames`).

    (Called `GenerationFinished` before, the name of the protocol's message: the runner reports
    it to clients as a `longlive.protocol.GenerationFinished` message with reason "max_frames".)"""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, eq=False)
class PromptEmbedding:
    """Precomputed text features standing in for a prompt string: the text encoder is bypassed.

    `features` [n, text_dim] or [1, n, text_dim] with n <= text_len; rows past n are zero-padded, as
    the text encoder pads. Two embeddings are the same prompt when their features are equal (same
    shape and values, `same_as`): a new object holding the same tensor is no prompt switch.
    `label` names it in `Block.prompt` and logs.
    """

    features: torch.Tensor
    label: str = "<embedding>"

    def __str__(self) -> str:
        return self.label

    def same_as(self, other: PromptEmbedding) -> bool:
        """Equal features (the label is only a name)."""
        a, b = self.features, other.features
        if a is b:
            return True
        if a.ndim == 3:
            a = a[0]
        if b.ndim == 3:
            b = b[0]
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b.to(a.device)))


Prompt = str | PromptEmbedding


@dataclass(frozen=True)
class ModelCall:
    """One DiT call of the block loop, handed to `VideoGenerator.trace` right after it ran.

    `kind`: "denoise" (a denoising step: `out` is the predicted flow v), "clean" (the context pass
    of the clean block at t = 0, whose K/V stay: `out` is None) or "recache" (1.0's re-encode of
    the recent frames under a new prompt, at t = 0: `x` holds those frames, `out` is None).
    `x` [1, C, n, h, w] is the DiT's input, `context` [1, L, text_dim] the text features it got,
    `start_frame` the latent frame of x's first frame in the scene, `timestep` what the time
    embedding was fed. The tensors are the loop's own (do not modify them; clone to keep).
    """

    kind: str
    scene: int
    start_frame: int
    timestep: float
    x: torch.Tensor
    out: torch.Tensor | None
    context: torch.Tensor


@dataclass
class Block:
    """One generated block."""

    start_frame: int  # latent frame index of the block's first frame (0, 3, 6, ...)
    frames: np.ndarray  # uint8 [n, H, W, 3]: 9 video frames for the first block, 12 after
    prompt: Prompt  # the prompt in force for this block
    switched: bool = False  # True when this block is the first one under a new prompt
    previous_prompt: Prompt | None = None
    latents: torch.Tensor | None = None  # the clean x0 [1, C, n, h, w] the cache and the decoder got
    # LongLive 2.0: the shot and scene this block belongs to, and whether it begins them.
    shot: int = 0  # shot index inside the scene (0 for the scene's first shot)
    scene: int = 0  # scene index of the video (scene cuts so far)
    new_shot: bool = False
    scene_cut: bool = False

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


class VideoGenerator:
    """Stateful block-by-block generation for one video.

    `seed` seeds the noise (`reset(seed)` reseeds it); `noise` replaces the seeded noise with your
    own source (a callable given the shape, or a `torch.Generator`), e.g. to feed the very draws
    another implementation used. `decode=False` makes latents only (`Block.frames` is empty and
    the VAE is never run): a research hook, and the way to time the DiT alone. `clip_start=True`
    decodes every block as the start of a clip (2.0: 29 video frames per chunk, as the hosted
    `longlive-v2` service counts them; default: continuous, 29 then 32, equal to a whole decode).
    """

    def __init__(
        self,
        pipe: Models,
        seed: int = 0,
        noise: NoiseSource | None = None,
        decode: bool = True,
        clip_start: bool = False,
    ) -> None:
        self.pipe = pipe
        cfg = pipe.config
        self._stream = cfg.stream
        self._shape = (1, cfg.dit.in_dim, cfg.stream.frames_per_block, cfg.latent_height, cfg.latent_width)
        self._sigmas = denoising_sigmas(cfg.stream)
        self._cache = pipe.dit.new_cache(1, cfg.tokens_per_frame, cfg.stream, pipe.device, pipe.dtype)
        self.decode = decode
        self.trace: Callable[[ModelCall], None] | None = None  # called after every DiT call (see ModelCall)
        self._decoder = pipe.vae.stream_decoder(clip_start) if decode else None
        # Clean latents of the newest blocks, enough to re-cache `cache_frames` frames on a switch.
        self._recent: deque[torch.Tensor] = deque(
            maxlen=cfg.stream.cache_frames // cfg.stream.frames_per_block
        )
        self._custom_noise: NoiseFn | None = None
        if isinstance(noise, torch.Generator):
            self._noise = noise
        else:
            self._noise = torch.Generator(device=pipe.device)
            self._custom_noise = noise
        self._seeded = not isinstance(noise, torch.Generator)
        self._embedded: tuple[PromptEmbedding, torch.Tensor] | None = None  # the last one, padded
        self.reset(seed)

    # ------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        """Start a new video: caches, counters, decoder state and noise cleared.

        The noise is reseeded unless a `torch.Generator` was handed in (its state is yours)."""
        if seed is not None:
            self.seed = int(seed)
        if self._seeded:
            self._noise.manual_seed(self.seed)
        self._cache.reset()
        if self._decoder is not None:
            self._decoder.reset()
        self._recent.clear()
        self.prompt: Prompt | None = None
        self._encoded: Prompt | None = None  # the prompt the text K/V were made from
        self.current_start_frame = 0  # latent frame of the next block inside the current scene
        self.finished: str | None = None
        self.recache_count = 0
        self.shot_index = 0  # shots begun in the current scene
        self.scene_index = 0  # scene cuts so far
        self.frames_generated = 0  # latent frames of the whole video, every scene

    @property
    def cache(self) -> KVCache:
        """The DiT's KV cache (read it, don't write it)."""
        return self._cache

    def _randn(self) -> torch.Tensor:
        if self._custom_noise is not None:
            noise = self._custom_noise(self._shape)
            if tuple(noise.shape) != self._shape:
                raise ValueError(f"the noise source returned {tuple(noise.shape)}, expected {self._shape}")
            return noise.to(device=self.pipe.device, dtype=self.pipe.dtype)
        return torch.randn(
            self._shape, generator=self._noise, device=self._noise.device, dtype=torch.float32
        ).to(device=self.pipe.device, dtype=self.pipe.dtype)

    def encode_prompt(self, prompt: Prompt) -> torch.Tensor:
        """Text features [1, text_len, text_dim] of a prompt (cached per text) or an embedding."""
        if isinstance(prompt, str):
            return self.pipe.text_encoder.encode(prompt)
        if self._embedded is not None and self._embedded[0].same_as(prompt):
            return self._embedded[1]
        dit = self.pipe.config.dit
        feats = prompt.features
        if feats.ndim == 2:
            feats = feats[None]
        if (
            feats.ndim != 3
            or feats.shape[0] != 1
            or feats.shape[2] != dit.text_dim
            or feats.shape[1] > dit.text_len
        ):
            raise ValueError(
                f"PromptEmbedding.features must be [n, {dit.text_dim}] or [1, n, {dit.text_dim}] with "
                f"n <= {dit.text_len}, got {tuple(prompt.features.shape)}"
            )
        padded = torch.zeros(1, dit.text_len, dit.text_dim, device=self.pipe.device, dtype=self.pipe.dtype)
        padded[:, : feats.shape[1]] = feats.to(device=self.pipe.device, dtype=self.pipe.dtype)
        self._embedded = (prompt, padded)  # padded once per embedding, not once per block
        return padded

    def is_shot_prompt(self, prompt: Prompt) -> bool:
        """True when `prompt` begins a new shot by its text (2.0's prefix; never on a scene's first
        block, and never for a family without shots)."""
        prefix = self._stream.shot_prefix
        return (
            prefix is not None
            and isinstance(prompt, str)
            and prompt.startswith(prefix)
            and self.current_start_frame > 0
        )

    @torch.inference_mode()
    def generate_block(
        self,
        prompt: Prompt,
        *,
        new_shot: bool | None = None,
        scene_cut: bool = False,
        decode: bool | None = None,
    ) -> Block:
        """Generate, cache and decode the next block under `prompt` (a text or a PromptEmbedding).

        `new_shot`: None reads it from the prompt's prefix (2.0); True / False force it.
        `scene_cut` (2.0): purge the memory first; this block starts a new scene.
        `decode=False` skips the VAE for this block (`Block.frames` is then empty).
        """
        if self.finished is not None:
            raise FrameLimitReached(self.finished)
        stream = self._stream
        if (scene_cut or new_shot) and stream.shot_prefix is None:
            raise ValueError(
                f"{self.pipe.config.name} ({self.pipe.config.family}) has no shots or scene cuts: "
                "a prompt change is its only control"
            )
        if decode is None:
            decode = self.decode
        if decode and self._decoder is None:
            raise ValueError("this generator was made with decode=False: it has no decoder")
        cut = scene_cut and self.frames_generated > 0
        if cut:
            self._cut()
        s, n = self.current_start_frame, stream.frames_per_block
        dit = self.pipe.dit
        previous = self.prompt
        switched = previous is not None and not _same_prompt(prompt, previous)
        # A prefixed prompt begins a shot where it first comes in; the same prompt again
        # continues the shot, conditioned (as in the reference's prompt lists) without the prefix.
        if new_shot is None:
            shot = self.is_shot_prompt(prompt) and (previous is None or switched)
        else:
            shot = new_shot and s > 0
        encoded = prompt
        if isinstance(prompt, str) and not shot and not switched and self.is_shot_prompt(prompt):
            encoded = prompt[len(stream.shot_prefix or "") :]
        context = self.encode_prompt(encoded)  # [1, L, text_dim]
        if shot:
            self.shot_index += 1
            self._cache.rope_offset = self.shot_index * stream.shot_rope_offset

        if switched and stream.prompt_switch == "recache":
            self._recache(context)
        elif stream.prompt_switch == "context" and (
            self._encoded is None or not _same_prompt(encoded, self._encoded)
        ):
            self._cache.clear_text()  # only the cross-attention context changes (LongLive 2.0)
        self._encoded = encoded

        x = self._randn()  # [1, C, n, h, w]
        if stream.sampler == "flow_unipc":
            x0 = self._sample_unipc(x, context, s)
        else:
            x0 = self._sample_renoise(x, context, s)
        if shot and stream.shot_clean_recache:
            self._cache.drop_window()  # the clean pass then sees the global sink and itself only
        dit.context_pass(x0, context, self._cache, s)  # the clean block's K/V are what the cache keeps
        self._trace("clean", s, 0.0, x0, None, context)
        if shot and stream.shot_sink:
            self._cache.pin(s, n)

        if decode:
            assert self._decoder is not None
            frames = to_uint8(self._decoder.decode(x0))  # [1, 3, T, H, W] in [-1, 1] -> uint8
        else:
            cfg = self.pipe.config
            frames = np.zeros((0, cfg.height, cfg.width, 3), dtype=np.uint8)

        self._recent.append(x0)
        self.prompt = prompt
        self.current_start_frame = s + n
        self.frames_generated += n
        limit = stream.max_latent_frames
        if limit is not None and self.frames_generated + n > limit:
            self.finished = "max_frames"
        return Block(
            s,
            frames,
            prompt,
            switched,
            previous if switched else None,
            latents=x0,
            shot=self.shot_index,
            scene=self.scene_index,
            new_shot=shot,
            scene_cut=cut,
        )

    def _sample_renoise(self, x: torch.Tensor, context: torch.Tensor, s: int) -> torch.Tensor:
        """LongLive 1.0: x0 = x_t - sigma * v, re-noised to the next level with fresh noise."""
        n = self._stream.frames_per_block
        x0 = x
        for i, sigma in enumerate(self._sigmas):
            t = torch.full((1, n), sigma * self._stream.num_train_timesteps, device=x.device)
            v = self.pipe.dit.forward_cached(x, t, context, self._cache, s)
            self._trace("denoise", s, sigma * self._stream.num_train_timesteps, x, v, context)
            x0 = x - sigma * v
            if i + 1 < len(self._sigmas):
                nxt = self._sigmas[i + 1]
                x = (1.0 - nxt) * x0 + nxt * self._randn()
        return x0

    def _sample_unipc(self, x: torch.Tensor, context: torch.Tensor, s: int) -> torch.Tensor:
        """LongLive 2.0: flow UniPC from the initial noise (a new solver per chunk, no noise inside)."""
        stream = self._stream
        solver = FlowUniPC(stream.unipc_steps, stream.shift, stream.num_train_timesteps)
        n = stream.frames_per_block
        for timestep in solver.timesteps:
            t = torch.full((1, n), float(timestep), device=x.device)
            v = self.pipe.dit.forward_cached(x, t, context, self._cache, s)
            self._trace("denoise", s, float(timestep), x, v, context)
            x = solver.step(v, x)
        return x

    def _trace(
        self,
        kind: str,
        start_frame: int,
        timestep: float,
        x: torch.Tensor,
        out: torch.Tensor | None,
        context: torch.Tensor,
    ) -> None:
        if self.trace is not None:
            self.trace(ModelCall(kind, self.scene_index, start_frame, timestep, x, out, context))

    def _cut(self) -> None:
        """A scene cut: the memory is purged as for a fresh run (the video and its noise go on)."""
        self._cache.reset()
        if self._decoder is not None:
            self._decoder.reset()
        self._recent.clear()
        self.prompt = None
        self._encoded = None
        self.current_start_frame = 0
        self.shot_index = 0
        self.scene_index += 1

    def _recache(self, context: torch.Tensor) -> None:
        """Rewrite the self-attention K/V of the recent clean frames under the new prompt."""
        # A switch needs a previous block, so s > 0. `recache` clears the cross-attention cache
        # before and after, so the next block encodes the new prompt's text K/V.
        s = self.current_start_frame
        k = min(self._stream.cache_frames, s)
        clean = torch.cat(list(self._recent), dim=2)[:, :, -k:]  # [1, C, k, h, w]
        self.pipe.dit.recache(clean, context, self._cache, s - k, global_sink=self._stream.global_sink)
        self._trace("recache", s - k, 0.0, clean, None, context)
        self.recache_count += 1


def _same_prompt(a: Prompt, b: Prompt) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, PromptEmbedding) and isinstance(b, PromptEmbedding):
        return a.same_as(b)
    return False
