"""Model configuration and presets, as plain data.

One `PipelineConfig` describes everything the runner builds: the causal DiT, the Wan VAE, the
umT5 text encoder and the streaming schedule. Presets differ only in numbers; every preset runs
the same code path.
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


@dataclass(frozen=True)
class PipelineConfig:
    """Everything needed to build a LongLive pipeline."""

    name: str
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

    def validate(self) -> None:
        s, d = self.stream, self.dit
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
