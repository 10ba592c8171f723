"""longlive_runner: the reference LongLive model runner (torch).

Names are imported lazily, so the torch-free parts (the session state machine) load without torch.
"""

from __future__ import annotations

import warnings
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model.checkpoints import CheckpointError
    from .model.config import PRESETS, PipelineConfig, get_preset
    from .model.generator import (
        Block,
        FrameLimitReached,
        ModelCall,
        NoiseSource,
        PromptEmbedding,
        VideoGenerator,
    )
    from .model.pipeline import Pipeline, load_pipeline

_EXPORTS = {
    "PRESETS": "model.config",
    "PipelineConfig": "model.config",
    "get_preset": "model.config",
    "CheckpointError": "model.checkpoints",
    "Block": "model.generator",
    "FrameLimitReached": "model.generator",
    "ModelCall": "model.generator",
    "VideoGenerator": "model.generator",
    "PromptEmbedding": "model.generator",
    "NoiseSource": "model.generator",
    "Pipeline": "model.pipeline",
    "load_pipeline": "model.pipeline",
}

__all__ = [
    "PRESETS",
    "Block",
    "CheckpointError",
    "FrameLimitReached",
    "ModelCall",
    "NoiseSource",
    "Pipeline",
    "PipelineConfig",
    "PromptEmbedding",
    "VideoGenerator",
    "get_preset",
    "load_pipeline",
]


#: Old names: still importable, with a DeprecationWarning naming the new one.
_RENAMED = {"GenerationFinished": "FrameLimitReached"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(
            f"longlive_runner.{name} is now longlive_runner.{new} ({name} is the protocol's message, "
            "longlive.GenerationFinished)",
            DeprecationWarning,
            stacklevel=2,
        )
        name = new
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'longlive_runner' has no attribute {name!r}")
    return getattr(import_module(f".{module}", __name__), name)
