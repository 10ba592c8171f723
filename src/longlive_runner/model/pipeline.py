"""`Pipeline`: the loaded models of one preset, and `load_pipeline()` to get one.

Every preset goes through the same code: build the modules on the meta device (no memory, no
random init), then either fill them with weights read from disk or, for presets that ship no
weights (`tiny`), initialise them from a fixed seed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn

from longlive.units import prompt_in_force

from . import checkpoints as ckpt
from . import layouts
from .config import DEFAULT_MODEL, PipelineConfig, get_preset, model_names, resolve_model
from .dit import CausalWanDiT
from .generator import Block, NoiseSource, Prompt, VideoGenerator
from .lora import LoraUpdate, apply_lora_, lora_updates
from .t5 import UMT5Encoder
from .text_encoder import TextEncoder
from .tokenizer import TextTokenizer, build_tiny_tokenizer
from .vae import WanVAE
from .vae2 import build_vae

log = logging.getLogger(__name__)

#: Presets of published models: they load from weight files only (never random weights).
WEIGHTS_REQUIRED = ("longlive-1.3b", "longlive2-5b")

DOWNLOAD_HINT = "get the weights with `longlive-runner download --to DIR` (see docs/weights.md)"


class Pipeline:
    """The DiT, the VAE and the text encoder of one model, on one device."""

    def __init__(
        self,
        config: PipelineConfig,
        dit: CausalWanDiT,
        vae: WanVAE,
        text_encoder: TextEncoder,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.config = config
        self.dit = dit.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.device = device
        self.dtype = dtype

    def generator(
        self,
        seed: int = 0,
        noise: NoiseSource | None = None,
        decode: bool = True,
        clip_start: bool = False,
    ) -> VideoGenerator:
        """A fresh video: its own KV cache, decoder state and noise stream (`seed` seeds the noise;
        `noise` replaces it; `decode=False` makes latents only; `clip_start` decodes every block
        as a clip start; see `VideoGenerator`)."""
        return VideoGenerator(self, seed=seed, noise=noise, decode=decode, clip_start=clip_start)

    def stream(
        self,
        schedule: Mapping[int, Prompt],
        num_frames: int,
        seed: int = 0,
        noise: NoiseSource | None = None,
    ) -> Iterator[Block]:
        """Generate `num_frames` latent frames (rounded up to whole blocks) following `schedule`.

        `schedule` maps latent frame -> prompt (a text or a `PromptEmbedding`) and must have a
        prompt at frame 0. Before the block starting at frame `s`, the prompt in force is the one at
        the largest timestamp <= s (`longlive.units.prompt_in_force`, the protocol's rule). `seed`
        seeds the noise of the video; `noise` replaces it.
        """
        if 0 not in schedule:
            raise ValueError("the schedule needs a prompt at frame 0")
        if num_frames <= 0:
            raise ValueError("num_frames must be positive")
        gen = self.generator(seed, noise)
        n = self.config.frames_per_block
        while gen.current_start_frame < num_frames and gen.finished is None:
            t = prompt_in_force(schedule, gen.current_start_frame, n)
            assert t is not None  # the schedule has a prompt at 0
            yield gen.generate_block(schedule[t])


# --- loading ----------------------------------------------------------------------------------
def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def build_modules(config: PipelineConfig) -> tuple[CausalWanDiT, WanVAE, UMT5Encoder]:
    """The three models with no storage (meta device), ready to be filled."""
    with torch.device("meta"):
        return CausalWanDiT(config.dit), build_vae(config.vae), UMT5Encoder(config.t5)


def materialize(module: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    """Give a meta module real storage and a seeded random initialisation (presets without weights)."""
    module.to_empty(device=device)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
        with torch.no_grad():
            for name, p in module.named_parameters():
                if _initialised_by_reset(module, name):
                    continue
                if name.endswith("gamma") or (p.dim() == 1 and name.endswith("weight")):
                    p.fill_(1.0)  # norm scales
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, p.shape[-1] ** -0.5)  # e.g. modulation tables
    finally:
        torch.random.set_rng_state(gen_state)
    module.to(dtype=dtype)


def _initialised_by_reset(root: nn.Module, param_name: str) -> bool:
    owner_name = param_name.rpartition(".")[0]
    owner = root.get_submodule(owner_name) if owner_name else root
    return hasattr(owner, "reset_parameters")


def load_pipeline(
    model: str | Path | None = None,
    *,
    wan_dir: str | Path | None = None,
    longlive_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    init_seed: int = 0,
    stream: Mapping[str, Any] | None = None,
) -> Pipeline:
    """Load a pipeline.

    `stream` overrides `StreamConfig` fields of whatever is loaded, at load time (e.g.
    `{"global_sink": False}` for 1.0, `{"shot_clean_recache": True}` for 2.0); an unknown field
    or a value the config refuses raises ValueError.

    - `load_pipeline("tiny")`: a preset without weight files (random weights seeded by `init_seed`;
      `init_seed` seeds the WEIGHTS only, never the video's noise: that is `stream(seed=...)`);
    - `load_pipeline("path/to/converted")`: our converted folder (`longlive-runner convert`);
    - `load_pipeline(wan_dir=..., longlive_dir=...)`: the Wan + LongLive folders as downloaded
      (`model` may then name the preset whose architecture they hold; default `longlive-1.3b`, or
      `longlive2-5b` when the Wan folder's config.json says "ti2v": Wan2.2-TI2V-5B + LongLive 2.0).
    """
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    if wan_dir is not None or longlive_dir is not None:
        if wan_dir is None:
            raise ValueError("wan_dir is required with longlive_dir (the VAE and text encoder come from it)")
        if model is not None:
            base = get_preset(str(model))
        elif ckpt.wan_model_type(Path(wan_dir) / layouts.WAN_CONFIG_FILE) == "ti2v":
            base = get_preset("longlive2-5b")  # a Wan2.2-TI2V folder: LongLive 2.0
        else:
            base = get_preset("longlive-1.3b")
        return _load_wan_layout(
            with_stream(base, stream),
            Path(wan_dir),
            Path(longlive_dir) if longlive_dir else None,
            device,
            dtype,
        )
    if model is None:
        model = DEFAULT_MODEL
    folder = resolve_model(model)
    if folder is not None:
        return _load_converted(folder, device, dtype, stream)
    try:
        config = get_preset(str(model))
    except KeyError:
        raise ValueError(
            f"{model!r} is neither a model name nor a folder; models: {', '.join(model_names())}"
        ) from None
    if config.name in WEIGHTS_REQUIRED:
        raise ckpt.CheckpointError(
            f"the {config.name} preset needs its weights: pass wan_dir= and longlive_dir=, or a converted "
            f"folder; {DOWNLOAD_HINT}"
        )
    return random_pipeline(with_stream(config, stream), device, dtype, init_seed)


def with_stream(config: PipelineConfig, stream: Mapping[str, Any] | None) -> PipelineConfig:
    """`config` with some `StreamConfig` fields replaced (None: unchanged)."""
    if not stream:
        return config
    known = {f.name for f in dataclasses.fields(config.stream)}
    unknown = sorted(set(stream) - known)
    if unknown:
        raise ValueError(f"unknown stream settings {unknown}; known: {', '.join(sorted(known))}")
    changed = dataclasses.replace(config, stream=dataclasses.replace(config.stream, **stream))
    changed.validate()
    return changed


def pipeline_from_state_dicts(
    config: PipelineConfig,
    states: Mapping[str, Mapping[str, torch.Tensor]],
    tokenizer_json: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Pipeline:
    """A pipeline from an in-memory config and state dicts (`states["dit"]`, `["vae"]`, `["t5"]`,
    native names, as a converted folder holds them): nothing is written to disk. Every state is
    checked key by key (`CheckpointError` naming the key and "<memory:dit>"); `tokenizer_json` is
    a tokenizer.json's text (None: the tiny test tokenizer)."""
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    config.validate()
    missing = sorted({"dit", "vae", "t5"} - set(states))
    if missing:
        raise ValueError(f"states needs 'dit', 'vae' and 't5'; missing {missing}")
    dit, vae, t5 = build_modules(config)
    for part, module in (("dit", dit), ("vae", vae), ("t5", t5)):
        ckpt.load_weights(module, states[part], f"<memory:{part}>", device, dtype)
    if tokenizer_json is None:
        tokenizer = TextTokenizer(build_tiny_tokenizer(), config.t5.text_len)
    else:
        tokenizer = TextTokenizer(Tokenizer.from_str(tokenizer_json), config.t5.text_len)
    return _assemble(config, dit, vae, t5, tokenizer, device, dtype)


def _assemble(
    config: PipelineConfig,
    dit: CausalWanDiT,
    vae: WanVAE,
    t5: UMT5Encoder,
    tokenizer: TextTokenizer,
    device: torch.device,
    dtype: torch.dtype,
) -> Pipeline:
    config.validate()
    for m in (dit, vae, t5):
        m.to(device)  # derived buffers (RoPE tables, latent statistics) follow the weights
    return Pipeline(config, dit, vae, TextEncoder(tokenizer, t5.eval()), device, dtype)


def random_pipeline(
    config: PipelineConfig,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    init_seed: int = 0,
) -> Pipeline:
    """Any config with random weights seeded by `init_seed` (presets without files, tests, speed
    benchmarks). The video's noise is seeded separately (`stream(seed=...)`)."""
    device = torch.device(device)
    dtype = dtype or default_dtype(device)
    dit, vae, t5 = build_modules(config)
    for i, m in enumerate((dit, vae, t5)):
        materialize(m, device, dtype, init_seed + i)
    tokenizer = TextTokenizer(build_tiny_tokenizer(), config.t5.text_len)
    return _assemble(config, dit, vae, t5, tokenizer, device, dtype)


def _load_converted(
    folder: Path, device: torch.device, dtype: torch.dtype, stream: Mapping[str, Any] | None = None
) -> Pipeline:
    config = with_stream(ckpt.read_converted_config(folder), stream)
    config.validate()
    dit, vae, t5 = build_modules(config)
    for part, module in (("dit", dit), ("vae", vae), ("t5", t5)):
        path = folder / ckpt.CONVERTED_FILES[part]
        ckpt.load_weights(module, ckpt.read_safetensors(path), path, device, dtype)
    tok_path = ckpt.require_file(folder / ckpt.CONVERTED_TOKENIZER)
    tokenizer = TextTokenizer.from_file(tok_path, config.t5.text_len)
    return _assemble(config, dit, vae, t5, tokenizer, device, dtype)


@dataclass
class WanLayout:
    """The Wan (+ LongLive) folders, read: the config, the three state dicts (memory-mapped), the
    files they came from, and the LoRA updates (checked against the DiT's shapes, not yet applied)."""

    config: PipelineConfig
    states: dict[str, ckpt.StateDict]
    paths: dict[str, Path]
    tokenizer_path: Path
    lora: list[LoraUpdate] = field(default_factory=list)


def read_wan_layout(base: PipelineConfig, wan_dir: Path, longlive_dir: Path | None) -> WanLayout:
    """Read the Wan (+ LongLive) folders. Every LoRA error names the key and lora.pt."""
    model_type = "ti2v" if base.is_v2 else "t2v"
    dit_cfg = ckpt.dit_config_from_wan(wan_dir / layouts.WAN_CONFIG_FILE, base.dit, model_type)
    config = dataclasses.replace(base, dit=dit_cfg)
    lora: list[LoraUpdate] = []
    vae_path = wan_dir / (layouts.WAN22_VAE_FILE if base.is_v2 else layouts.WAN_VAE_FILE)
    if base.is_v2:
        if longlive_dir is None:
            raise ckpt.CheckpointError(
                f"{base.name} needs the LongLive 2.0 generator: pass longlive_dir= (the folder with "
                f"{layouts.LONGLIVE2_GENERATOR_FILE}); {DOWNLOAD_HINT}"
            )
        dit_state, dit_path, lora_state, lora_file = ckpt.longlive2_generator(longlive_dir)
        if lora_state is not None:
            try:
                lora = lora_updates(dit_state, lora_state)
            except (KeyError, ValueError) as exc:
                raise ckpt.CheckpointError(f"{lora_file}: {exc}", path=lora_file) from exc
    elif longlive_dir is not None:
        # overwrites every DiT weight: Wan's DiT file is not read
        dit_state = ckpt.longlive_dit_state(longlive_dir)
        dit_path = longlive_dir / layouts.LONGLIVE_BASE_FILE
        lora_path = longlive_dir / layouts.LONGLIVE_LORA_FILE
        lora_state = ckpt.longlive_lora_state(longlive_dir)  # raises CheckpointError itself
        try:
            lora = lora_updates(dit_state, lora_state)
        except (KeyError, ValueError) as exc:  # lora_updates names the key; add the file
            raise ckpt.CheckpointError(f"{lora_path}: {exc}", path=lora_path) from exc
    else:
        dit_path = wan_dir / layouts.WAN_DIT_FILE
        dit_state = ckpt.wan_dit_state(wan_dir)
    states = {
        "dit": dit_state,
        "vae": ckpt.read_state_dict(vae_path),
        "t5": ckpt.read_state_dict(wan_dir / layouts.WAN_T5_FILE),
    }
    paths = {"dit": dit_path, "vae": vae_path, "t5": wan_dir / layouts.WAN_T5_FILE}
    tok_path = ckpt.require_file(wan_dir / layouts.WAN_TOKENIZER_FILE, "the umT5 tokenizer")
    return WanLayout(config, states, paths, tok_path, lora)


def _load_wan_layout(
    base: PipelineConfig, wan_dir: Path, longlive_dir: Path | None, device: torch.device, dtype: torch.dtype
) -> Pipeline:
    layout = read_wan_layout(base, wan_dir, longlive_dir)
    config = layout.config
    config.validate()
    dit, vae, t5 = build_modules(config)
    for part, module in (("dit", dit), ("vae", vae), ("t5", t5)):
        ckpt.load_weights(module, layout.states[part], layout.paths[part], device, dtype)
    # merged into the loaded parameters, on their device: no second copy of the DiT
    apply_lora_(dit.state_dict(), layout.lora)
    tokenizer = TextTokenizer.from_file(layout.tokenizer_path, config.t5.text_len)
    return _assemble(config, dit, vae, t5, tokenizer, device, dtype)
