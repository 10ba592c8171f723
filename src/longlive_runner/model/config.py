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
    """The Wan2.1 causal 3D VAE (4x temporal, 8x spatial compression)."""

    z_dim: int = 16
    base_dim: int = 96
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] = WAN_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN_LATENTS_STD

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_compression(self) -> int:
        return 2 ** sum(self.temporal_downsample)


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
