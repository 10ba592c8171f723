"""Model configuration and presets, as plain data.

One `PipelineConfig` describes everything the runner builds: the causal DiT, the Wan VAE, the
umT5 text encoder and the streaming schedule. Presets differ only in numbers and in a few
stream settings; every preset runs the same code path.

Two model families share that path (`PipelineConfig.family`):

* `longlive-1.0` (Wan2.1-T2V-1.3B): blocks of 3 latent frames, a 3-frame sink, a 12-frame cache,
  the x0 + fresh-noise sampler, and a KV re-cache of recent frames on a prompt switch;
* `longlive-2.0` (Wan2.2-TI2V-5B): chunks of 8 latent frames, chunk 0 as the global sink, a
  32-frame cache, flow UniPC without noise inside the loop, shots (a prompt starting with
  `shot_prefix` pins its chunk as the shot sink and moves the RoPE time axis by
  `shot_rope_offset`) and no re-cache on a plain prompt change.

The family is a label for the clients (which commands make sense); the behaviour comes from the
`StreamConfig` fields, whose defaults are 1.0's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longlive.units import block_video_frames

# Per-channel statistics of the Wan2.1 VAE latent space (see docs/architecture.md).
WAN_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

# Per-channel statistics of the Wan2.2 VAE latent space (48 channels; `Wan2_2_VAE` in the reference).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip


@dataclass(frozen=True)
class DiTConfig:
    """The causal Wan2.1 diffusion transformer."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    eps: float = 1e-6
    patch_size: tuple[int, int, int] = (1, 2, 2)
    rope_theta: float = 10000.0
    rope_max_positions: int = 1024

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass(frozen=True)
class VAEConfig:
    """A Wan causal 3D VAE.

    The defaults are the Wan2.1 VAE (4x temporal, 8x spatial compression, 16 channels);
    `WAN22_VAE` below is the Wan2.2 VAE (`is_residual`, `patch_size` 2: 4x16x16, 48 channels).
    The field names follow diffusers' `AutoencoderKLWan` config.
    """

    z_dim: int = 16
    base_dim: int = 96  # encoder width
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] = WAN_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN_LATENTS_STD
    decoder_base_dim: int | None = None  # decoder width (None: base_dim)
    patch_size: int = 1  # pixels folded into channels before the encoder (2: RGB -> 12 channels)
    is_residual: bool = False  # Wan2.2: levels with parameter-free avg-down / dup-up shortcuts

    @property
    def decoder_dim(self) -> int:
        return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

    @property
    def spatial_compression(self) -> int:
        return (1 << (len(self.dim_mult) - 1)) * self.patch_size

    @property
    def temporal_compression(self) -> int:
        return 1 << sum(self.temporal_downsample)


#: The Wan2.2 VAE of Wan2.2-TI2V-5B (`Wan2.2_VAE.pth`), the VAE of LongLive 2.0.
WAN22_VAE = VAEConfig(
    z_dim=48,
    base_dim=160,
    decoder_base_dim=256,
    latents_mean=WAN22_LATENTS_MEAN,
    latents_std=WAN22_LATENTS_STD,
    patch_size=2,
    is_residual=True,
)


@dataclass(frozen=True)
class T5Config:
    """The umT5 encoder (one relative-position table per layer)."""

    vocab_size: int = 256384
    dim: int = 4096
    ffn_dim: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    text_len: int = 512

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


@dataclass(frozen=True)
class StreamConfig:
    """How the video is generated block by block."""

    height: int = 480
    width: int = 832
    fps: int = 16
    frames_per_block: int = 3  # latent frames per block
    sink_frames: int = 3  # first latent frames kept in the KV cache forever
    cache_frames: int = 12  # latent frames held per layer: sink + rolling window (current block included)
    denoising_steps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)  # before the shift warp
    shift: float = 5.0
    num_train_timesteps: int = 1000
    global_sink: bool = True  # a re-cache keeps the first frames as the sink (LongLive's configs)
    max_latent_frames: int | None = None  # a user limit: the video ends here (None: never)
    # --- how a block is sampled ---------------------------------------------------------------
    # "flow_renoise" (1.0): x0 = x_t - sigma * v, re-noised with fresh noise at `denoising_steps`;
    # "flow_unipc" (2.0): flow UniPC multistep (bh2, order 2, x0 prediction, corrector, lower
    # order at the end) over `unipc_steps` steps with `shift`; only the initial noise is drawn.
    sampler: str = "flow_renoise"
    unipc_steps: int = 4
    # --- prompt changes and shots -------------------------------------------------------------
    # "recache" (1.0): a prompt switch re-encodes the recent frames' K/V under the new prompt;
    # "context" (2.0): a new prompt only changes the cross-attention context of later blocks.
    prompt_switch: str = "recache"
    # A block whose prompt starts with this text begins a new shot (None: no shots, 1.0).
    shot_prefix: str | None = None
    shot_rope_offset: int = 0  # RoPE time offset added per shot (shot index x this), for q and k
    shot_sink: bool = False  # pin a shot's first block in the cache after its clean pass
    shot_clean_recache: bool = False  # a shot's clean pass first drops the window to the sink


@dataclass(frozen=True)
class PipelineConfig:
    """Everything needed to build a LongLive pipeline."""

    name: str
    family: str = "longlive-1.0"  # one of FAMILIES: what the clients may ask of this model
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    t5: T5Config = field(default_factory=T5Config)
    stream: StreamConfig = field(default_factory=StreamConfig)

    # Convenience views used by the session layer and the protocol's `hello`.
    @property
    def fps(self) -> int:
        return self.stream.fps

    @property
    def height(self) -> int:
        return self.stream.height

    @property
    def width(self) -> int:
        return self.stream.width

    @property
    def frames_per_block(self) -> int:
        return self.stream.frames_per_block

    @property
    def latent_height(self) -> int:
        return self.stream.height // self.vae.spatial_compression

    @property
    def latent_width(self) -> int:
        return self.stream.width // self.vae.spatial_compression

    @property
    def tokens_per_frame(self) -> int:
        _, ph, pw = self.dit.patch_size
        return (self.latent_height // ph) * (self.latent_width // pw)

    def video_frames_for_block(self, start_frame: int) -> int:
        """Decoded video frames of the block starting at latent frame `start_frame` (9 then 12)."""
        return block_video_frames(start_frame, self.stream.frames_per_block, self.vae.temporal_compression)

    @property
    def is_v2(self) -> bool:
        """True for the LongLive 2.0 family (shots and scene cuts, no prompt re-cache)."""
        return self.family == "longlive-2.0"

    def validate(self) -> None:
        s, d = self.stream, self.dit
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if s.sampler not in SAMPLERS:
            raise ValueError(f"stream.sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}")
        if s.prompt_switch not in PROMPT_SWITCHES:
            raise ValueError(
                f"stream.prompt_switch must be one of {', '.join(PROMPT_SWITCHES)}, got {s.prompt_switch!r}"
            )
        if s.unipc_steps < 1:
            raise ValueError(f"stream.unipc_steps must be at least 1, got {s.unipc_steps}")
        if s.shot_prefix is not None and not s.shot_prefix:
            raise ValueError("stream.shot_prefix must be a non-empty text or None")
        if s.shot_rope_offset < 0:
            raise ValueError(f"stream.shot_rope_offset must be >= 0, got {s.shot_rope_offset}")
        if (s.shot_sink or s.shot_clean_recache) and s.shot_prefix is None:
            raise ValueError("shot_sink and shot_clean_recache need a shot_prefix (shots)")
        if s.shot_sink and (s.sink_frames == 0 or s.cache_frames < s.sink_frames + 2 * s.frames_per_block):
            raise ValueError("a shot sink needs a global sink and room for itself and one block")
        if s.cache_frames <= s.sink_frames + s.frames_per_block - 1:
            raise ValueError("cache_frames must leave room for the sink and one block")
        if s.sink_frames % s.frames_per_block or (s.cache_frames - s.sink_frames) % s.frames_per_block:
            raise ValueError("sink and window sizes must be whole blocks")
        c = self.vae.spatial_compression
        if s.height % (c * d.patch_size[1]) or s.width % (c * d.patch_size[2]):
            raise ValueError(f"height and width must be multiples of {c * d.patch_size[1]}")
        if d.rope_max_positions < 2 * s.cache_frames:
            raise ValueError(
                f"rope_max_positions ({d.rope_max_positions}) must be at least twice cache_frames "
                f"({s.cache_frames}): past the table the window is re-based to its middle"
            )
        if s.max_latent_frames is not None and s.max_latent_frames < s.frames_per_block:
            raise ValueError("max_latent_frames must hold at least one block (or be None)")
        if d.dim % d.num_heads or d.head_dim % 2:
            raise ValueError("dim must split into heads of even size")
        if d.text_dim != self.t5.dim:
            raise ValueError(f"dit.text_dim ({d.text_dim}) must equal t5.dim ({self.t5.dim})")
        if d.text_len != self.t5.text_len:
            raise ValueError(f"dit.text_len ({d.text_len}) must equal t5.text_len ({self.t5.text_len})")
        if d.in_dim != self.vae.z_dim or d.out_dim != self.vae.z_dim:
            raise ValueError("DiT in/out channels must equal the VAE's z_dim")

    # --- (de)serialisation: the `config.json` of a converted folder -------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        def build(kind: type, values: dict[str, Any]) -> Any:
            names = {f.name: f for f in dataclasses.fields(kind)}
            unknown = set(values) - set(names)
            if unknown:
                raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        data = dict(data)
        return cls(
            name=data.pop("name"),
            family=data.pop("family", "longlive-1.0"),
            dit=build(DiTConfig, data.pop("dit", {})),
            vae=build(VAEConfig, data.pop("vae", {})),
            t5=build(T5Config, data.pop("t5", {})),
            stream=build(StreamConfig, data.pop("stream", {})),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PipelineConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# A tiny Wan2.2-kind VAE (residual, patchify 2: 4 x 16 x 16, z 48) for the `tiny2` preset.
TINY2_VAE = dataclasses.replace(
    WAN22_VAE, base_dim=8, decoder_base_dim=8, dim_mult=(1, 2, 2, 2), num_res_blocks=1
)

#: The model families, samplers and prompt-switch behaviours a config may name.
FAMILIES = ("longlive-1.0", "longlive-2.0")
SAMPLERS = ("flow_renoise", "flow_unipc")
PROMPT_SWITCHES = ("recache", "context")

#: The text that starts the prompt of a new shot in LongLive 2.0 (`DEFAULT_SCENE_CUT_PREFIX` there).
SHOT_PREFIX = "The scene transitions. "


def longlive2_stream(**overrides: Any) -> StreamConfig:
    """LongLive 2.0's stream settings (its `configs/inference.yaml`), with `overrides`."""
    values: dict[str, Any] = {
        "height": 704,
        "width": 1280,
        "fps": 24,
        "frames_per_block": 8,  # num_frame_per_block
        "sink_frames": 8,  # sink_size with multi_shot_sink: chunk 0, kept forever
        "cache_frames": 32,  # local_attn_size: sink and current chunk included
        "shift": 5.0,
        "sampler": "flow_unipc",
        "unipc_steps": 4,  # sampling_steps: timesteps [999, 937, 833, 624]
        "prompt_switch": "context",
        "shot_prefix": SHOT_PREFIX,
        "shot_rope_offset": 8,  # multi_shot_rope_offset
        "shot_sink": True,  # multi_shot_sink
        "shot_clean_recache": False,
    }
    values.update(overrides)
    return StreamConfig(**values)


PRESETS: dict[str, PipelineConfig] = {
    # The published model: Wan2.1-T2V-1.3B + LongLive. Weights come from disk (see docs/weights.md).
    "longlive-1.3b": PipelineConfig(name="longlive-1.3b"),
    # Same architecture, small numbers; random weights from a fixed seed. Used by tests and CI.
    "tiny": PipelineConfig(
        name="tiny",
        dit=DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=64, freq_dim=32),
        vae=VAEConfig(base_dim=8, dim_mult=(1, 2, 2, 2)),
        t5=T5Config(vocab_size=384, dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_len=64),
        stream=StreamConfig(height=64, width=112),
    ),
    # LongLive 2.0: Wan2.2-TI2V-5B + LongLive (shots, scene cuts). Weights from disk (docs/weights.md).
    "longlive2-5b": PipelineConfig(
        name="longlive2-5b",
        family="longlive-2.0",
        dit=DiTConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48),
        vae=WAN22_VAE,
        stream=longlive2_stream(),
    ),
    # Same 2.0 architecture and stream logic, small numbers; seeded random weights (tests and CI).
    "tiny2": PipelineConfig(
        name="tiny2",
        family="longlive-2.0",
        dit=DiTConfig(
            dim=64,
            ffn_dim=128,
            num_heads=2,
            num_layers=2,
            in_dim=48,
            out_dim=48,
            text_dim=32,
            text_len=64,
            freq_dim=32,
        ),
        vae=TINY2_VAE,
        t5=T5Config(vocab_size=384, dim=32, ffn_dim=64, num_heads=2, num_layers=2, text_len=64),
        stream=longlive2_stream(height=64, width=128),
    ),
}


#: Models whose weights ship inside the package, as converted folders (name -> folder).
PACKAGED_MODELS: dict[str, Path] = {"demo": Path(__file__).parents[1] / "assets" / "demo"}


def model_names() -> list[str]:
    return sorted([*PRESETS, *PACKAGED_MODELS])


def resolve_model(name: str | Path) -> Path | None:
    """The folder of a packaged model name or of a path to a converted folder; None for presets."""
    if str(name) in PACKAGED_MODELS:
        return PACKAGED_MODELS[str(name)]
    path = Path(name)
    return path if path.is_dir() else None


def get_preset(name: str) -> PipelineConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(model_names())}") from None


#: The model used when none is named (`generate`, `serve`, `Reactor.local()`, `load_pipeline()`).
DEFAULT_MODEL = "demo"
