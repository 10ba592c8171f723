"""Test helper shared by the VAE suites: a VAE with every parameter random, seeded."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def random_weights(build: Callable[[], M], seed: int) -> M:
    """`build()` under `torch.manual_seed(seed)`, then every parameter random: RMS gammas around 1,
    small biases, conv weights scaled to unit-variance outputs (zero-initialised projections too)."""
    torch.manual_seed(seed)
    module = build().eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            else:  # conv weights [out, in, ...]
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
    return module
