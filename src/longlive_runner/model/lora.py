"""Merging PEFT LoRA weights into the DiT's Linear weights, once, at load time.

LongLive ships its LoRA as PEFT names (`lora.pt`, entry "generator_lora"):

    base_model.model.blocks.N.<module>.lora_A.weight   [r, in]
    base_model.model.blocks.N.<module>.lora_B.weight   [out, r]

and each pair is folded into `blocks.N.<module>.weight` [out, in] as W += (alpha / r) * B @ A.
A merged model runs exactly like the base model: no extra matmuls at inference.

The loader merges in place, into the weights already loaded on their device (the GPU when there
is one), one layer at a time: peak memory stays at the model's size plus one layer's float32 update.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<half>[AB])\.weight$")


@dataclass(frozen=True)
class LoraUpdate:
    """One validated pair: `target` += scale * b @ a."""

    target: str  # e.g. "blocks.0.ffn.0.weight"
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]
    scale: float


def lora_updates(
    weights: Mapping[str, torch.Tensor],
    lora_state: Mapping[str, torch.Tensor],
    alpha: float | None = None,
    rank: int | None = None,
) -> list[LoraUpdate]:
    """Pair and check every LoRA entry against `weights` (only shapes are read), changing nothing.

    `alpha` defaults to the rank (scale 1.0); `rank`, when given, must equal each pair's rank.
    Raises KeyError / ValueError naming the offending key for unknown keys, a pair missing a
    half, a module the model does not have, or shapes that do not fit.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in lora_state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            unknown.append(key)
            continue
        pairs.setdefault(m["module"], {})[m["half"]] = tensor
    if unknown:
        shown = ", ".join(sorted(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        raise KeyError(f"{len(unknown)} LoRA keys are not PEFT lora_A/lora_B weights: {shown}")

    updates = []
    for module, halves in sorted(pairs.items()):
        for half in "AB":
            if half not in halves:
                other = "B" if half == "A" else "A"
                raise KeyError(
                    f"LoRA pair incomplete: base_model.model.{module}.lora_{half}.weight is missing "
                    f"(found lora_{other})"
                )
        target = f"{module}.weight"
        if target not in weights:
            raise KeyError(f"LoRA targets {target!r}, which the model does not have")
        w, a, b = weights[target], halves["A"], halves["B"]
        if a.ndim != 2 or b.ndim != 2 or w.ndim != 2:
            raise ValueError(
                f"LoRA for {target}: expected 2-D tensors, got A {tuple(a.shape)}, B {tuple(b.shape)}, "
                f"W {tuple(w.shape)}"
            )
        r = a.shape[0]
        if b.shape[1] != r or a.shape[1] != w.shape[1] or b.shape[0] != w.shape[0]:
            raise ValueError(
                f"LoRA shapes do not fit {target} {tuple(w.shape)}: "
                f"lora_A {tuple(a.shape)} (want [r, {w.shape[1]}]), lora_B {tuple(b.shape)} (want [{w.shape[0]}, r])"
            )
        if rank is not None and rank != r:
            raise ValueError(f"LoRA for {target} has rank {r}, expected {rank}")
        updates.append(LoraUpdate(target, a, b, (r if alpha is None else alpha) / r))
    return updates


@torch.no_grad()
def apply_lora_(weights: Mapping[str, torch.Tensor], updates: list[LoraUpdate]) -> None:
    """Add each update to its weight in place, in float32 on the weight's device, rounded once to
    the weight's dtype. `weights` may be a module's state_dict() (its parameters)."""
    for u in updates:
        w = weights[u.target]
        delta = u.b.to(w.device, torch.float32) @ u.a.to(w.device, torch.float32)  # [out, in]
        if w.dtype == torch.float32:
            w.add_(delta, alpha=u.scale)
        else:
            w.copy_(delta.mul_(u.scale).add_(w))


def merge_lora(
    dit_state: Mapping[str, torch.Tensor],
    lora_state: Mapping[str, torch.Tensor],
    alpha: float | None = None,
    rank: int | None = None,
) -> dict[str, torch.Tensor]:
    """A copy of `dit_state` with every LoRA pair merged in (the input is not modified; entries
    without a LoRA are shared). See `lora_updates` for the arguments and errors."""
    updates = lora_updates(dit_state, lora_state, alpha, rank)
    merged = dict(dit_state)
    for u in updates:
        merged[u.target] = merged[u.target].clone()
    apply_lora_(merged, updates)
    return merged
