"""The few-step flow-matching schedule LongLive samples with.

The trained step list (e.g. [1000, 750, 500, 250]) is warped by the shift used in training,
sigma' = shift * sigma / (1 + (shift - 1) * sigma), so the timesteps actually fed to the DiT are
fractional ([1000, 937.5, 833.33.., 625] for shift 5). They must stay fractional: rounding them
changes the output.
"""

from __future__ import annotations

from .config import StreamConfig


def shift_sigma(sigma: float, shift: float) -> float:
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def denoising_sigmas(stream: StreamConfig) -> list[float]:
    """Warped noise levels in (0, 1], one per denoising step, highest first."""
    n = float(stream.num_train_timesteps)
    return [shift_sigma(t / n, stream.shift) for t in stream.denoising_steps]


def denoising_timesteps(stream: StreamConfig) -> list[float]:
    """The timesteps fed to the DiT's time embedding (sigma * num_train_timesteps)."""
    return [s * stream.num_train_timesteps for s in denoising_sigmas(stream)]
