"""Reading weights from the layouts users have on disk, with precise errors.

Three layouts are understood (see docs/weights.md):

* a **Wan folder** (`Wan2.1-T2V-1.3B/`): `config.json`, `diffusion_pytorch_model.safetensors`,
  `Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`, `google/umt5-xxl/tokenizer.json`;
* a **LongLive folder**: `models/longlive_base.pt` (`{"generator": {"model.<wan name>": ...}}`) and
  `models/lora.pt` (`{"generator_lora": {PEFT names}}`), merged into the DiT once at load;
* a **LongLive 2.0 folder** (`LongLive-2.0-5B/`, next to a `Wan2.2-TI2V-5B/` Wan folder whose VAE
  is `Wan2.2_VAE.pth`): `model_bf16.pt` (`{"generator": {"model.<wan name>": ...}, "merged_lora":
  true}`); a generator saved without its LoRA merged (`merged_lora` false or absent) takes it from
  its own `generator_lora` entry or from `lora.pt` next to it (PEFT names, rank = alpha = 128);
* our **converted folder**: `config.json` (a `PipelineConfig`), `dit.safetensors`,
  `vae.safetensors`, `t5.safetensors`, `tokenizer.json`, memory-mapped at load.

Pickles are only ever read with `torch.load(..., weights_only=True)`: a pickle that would run code
is refused.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import DiTConfig, PipelineConfig
from .layouts import (
    LONGLIVE2_GENERATOR_FILE,
    LONGLIVE2_LORA_FILE,
    LONGLIVE_BASE_FILE,
    LONGLIVE_LORA_FILE,
    WAN_DIT_FILE,
)

StateDict = dict[str, torch.Tensor]


CONVERTED_FILES = {"dit": "dit.safetensors", "vae": "vae.safetensors", "t5": "t5.safetensors"}
CONVERTED_TOKENIZER = "tokenizer.json"
CONVERTED_CONFIG = "config.json"


class CheckpointError(ValueError):
    """A weight file is missing, unreadable, unsafe, or does not match the model."""

    def __init__(self, message: str, *, path: str | Path | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path = str(path) if path is not None else None
        self.key = key


# --- reading files ----------------------------------------------------------------------------
def require_file(path: Path, hint: str = "") -> Path:
    if not path.is_file():
        raise CheckpointError(f"missing weight file: {path}" + (f" ({hint})" if hint else ""), path=path)
    return path


def read_safetensors(path: str | Path) -> StateDict:
    """Memory-mapped read of a safetensors file."""
    path = require_file(Path(path))
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}", path=path
        ) from exc


def read_pickle(path: str | Path) -> object:
    """A torch pickle, loaded without ever executing code from the file."""
    path = require_file(Path(path))
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the pickle holds objects other than tensors and plain containers "
            f"(loading it would execute code): {str(exc).splitlines()[0]}",
            path=path,
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): {exc}", path=path
        ) from exc


def read_state_dict(path: str | Path) -> StateDict:
    """A flat {name: tensor} mapping from a .safetensors or a .pt/.pth file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    obj = read_pickle(path)
    return as_state_dict(obj, path)


def as_state_dict(obj: object, path: Path, entry: str | None = None) -> StateDict:
    if entry is not None:
        if not isinstance(obj, Mapping) or entry not in obj:
            keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{path}: expected an entry {entry!r}, found {keys}", path=path, key=entry)
        obj = obj[entry]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of names to tensors", path=path)
    return dict(obj)


def strip_prefix(state: StateDict, prefix: str, path: Path) -> StateDict:
    bad = [k for k in state if not k.startswith(prefix)]
    if bad:
        raise CheckpointError(
            f"{path}: key {bad[0]!r} lacks the expected prefix {prefix!r}", path=path, key=bad[0]
        )
    return {k[len(prefix) :]: v for k, v in state.items()}


# --- checking and loading into modules --------------------------------------------------------
def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Fail with the first missing, unexpected or mis-shaped key, naming it and the file."""
    expected = module.state_dict(keep_vars=True)
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: missing key {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            path=path,
            key=missing[0],
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"{path}: unexpected key {unexpected[0]!r}"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""),
            path=path,
            key=unexpected[0],
        )
    for k, ref in expected.items():
        if tuple(state[k].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: key {k!r} has shape {tuple(state[k].shape)}, the model expects {tuple(ref.shape)}",
                path=path,
                key=k,
            )


def load_weights(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    device: torch.device,
    dtype: torch.dtype,
) -> None:
    """Check `state` against `module`, then move it in (assigning, so no second copy is made)."""
    check_state_dict(module, state, path)
    converted = {
        k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state.items()
    }
    module.load_state_dict(converted, strict=True, assign=True)


# --- layouts ----------------------------------------------------------------------------------
def wan_model_type(path: Path) -> str:
    """The `model_type` of a Wan `config.json` ("t2v" for Wan2.1-T2V, "ti2v" for Wan2.2-TI2V)."""
    return str(_read_json(require_file(path)).get("model_type", "t2v"))


def _read_json(path: Path) -> dict[str, object]:
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON: {exc}", path=path) from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object", path=path)
    return raw


def dit_config_from_wan(path: Path, base: DiTConfig, model_type: str = "t2v") -> DiTConfig:
    """The DiT fields of a Wan `config.json`, on top of `base` for what it does not state;
    `model_type` is the kind the preset expects ("t2v" for 1.0, "ti2v" for 2.0)."""
    path = require_file(path)
    raw: dict[str, Any] = dict(_read_json(path))
    if raw.get("model_type", "t2v") != model_type:
        hint = {"t2v": "longlive-1.3b", "ti2v": "longlive2-5b"}.get(str(raw.get("model_type")))
        raise CheckpointError(
            f"{path}: model_type {raw['model_type']!r} is not the {model_type!r} Wan model this preset "
            "is built on" + (f" (that folder is for --model {hint})" if hint else ""),
            path=path,
        )
    fields: dict[str, Any] = {
        k: raw[k]
        for k in (
            "dim",
            "ffn_dim",
            "num_heads",
            "num_layers",
            "in_dim",
            "out_dim",
            "text_len",
            "freq_dim",
            "eps",
        )
        if k in raw
    }
    return DiTConfig(**{**base.__dict__, **fields})


def wan_dit_state(wan_dir: Path) -> StateDict:
    return read_safetensors(wan_dir / WAN_DIT_FILE)


def longlive_dit_state(longlive_dir: Path) -> StateDict:
    path = require_file(longlive_dir / LONGLIVE_BASE_FILE, "the LongLive base generator")
    return strip_prefix(as_state_dict(read_pickle(path), path, "generator"), "model.", path)


def longlive2_generator(longlive_dir: Path) -> tuple[StateDict, Path, StateDict | None, Path | None]:
    """LongLive 2.0's generator: (DiT state, its file, the LoRA state or None when merged, its file)."""
    path = require_file(longlive_dir / LONGLIVE2_GENERATOR_FILE, "the LongLive 2.0 generator")
    obj = read_pickle(path)
    dit = strip_prefix(as_state_dict(obj, path, "generator"), "model.", path)
    if isinstance(obj, Mapping) and obj.get("merged_lora") is True:
        return dit, path, None, None
    if isinstance(obj, Mapping) and "generator_lora" in obj:
        return dit, path, as_state_dict(obj, path, "generator_lora"), path
    lora_path = require_file(
        longlive_dir / LONGLIVE2_LORA_FILE,
        f"{path.name} is not marked merged_lora, so its LoRA is needed (a generator_lora entry or this file)",
    )
    lora_obj = read_pickle(lora_path)
    entry = "generator_lora" if isinstance(lora_obj, Mapping) and "generator_lora" in lora_obj else None
    return dit, path, as_state_dict(lora_obj, lora_path, entry), lora_path


def longlive_lora_state(longlive_dir: Path) -> StateDict:
    path = require_file(longlive_dir / LONGLIVE_LORA_FILE, "the LongLive LoRA")
    return as_state_dict(read_pickle(path), path, "generator_lora")


def read_converted_config(folder: Path) -> PipelineConfig:
    path = require_file(folder / CONVERTED_CONFIG)
    try:
        return PipelineConfig.load(path)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a longlive pipeline config: {exc}", path=path) from exc


def save_converted(
    folder: Path, config: PipelineConfig, states: Mapping[str, StateDict], tokenizer_json: str
) -> None:
    """Write our converted folder (the fastest layout to load)."""
    folder.mkdir(parents=True, exist_ok=True)
    for part, name in CONVERTED_FILES.items():
        save_file({k: v.contiguous() for k, v in states[part].items()}, str(folder / name))
    (folder / CONVERTED_TOKENIZER).write_text(tokenizer_json)
    config.save(folder / CONVERTED_CONFIG)
