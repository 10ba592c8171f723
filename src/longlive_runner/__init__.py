"""longlive_runner: the reference LongLive model runner (torch).

Names are imported lazily, so the torch-free parts (the session state machine) load without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoints import CheckpointError
    from .config import PRESETS, PipelineConfig, get_preset
    from .generator import Block, GenerationFinished, NoiseSource, PromptEmbedding, VideoGenerator
    from .pipeline import Pipeline, load_pipeline

_EXPORTS = {
    "PRESETS": "config",
    "PipelineConfig": "config",
    "get_preset": "config",
    "CheckpointError": "checkpoints",
    "Block": "generator",
    "GenerationFinished": "generator",
    "VideoGenerator": "generator",
    "PromptEmbedding": "generator",
    "NoiseSource": "generator",
    "Pipeline": "pipeline",
    "load_pipeline": "pipeline",
}

__all__ = [
    "PRESETS",
    "Block",
    "CheckpointError",
    "GenerationFinished",
    "NoiseSource",
    "Pipeline",
    "PipelineConfig",
    "PromptEmbedding",
    "VideoGenerator",
    "get_preset",
    "load_pipeline",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'longlive_runner' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
