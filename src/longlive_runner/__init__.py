"""longlive_runner: the reference LongLive model runner (torch)."""

from .checkpoints import CheckpointError
from .config import PRESETS, PipelineConfig, get_preset
from .generator import Block, GenerationFinished, VideoGenerator
from .pipeline import Pipeline, load_pipeline

__all__ = [
    "PRESETS",
    "Block",
    "CheckpointError",
    "GenerationFinished",
    "Pipeline",
    "PipelineConfig",
    "VideoGenerator",
    "get_preset",
    "load_pipeline",
]
