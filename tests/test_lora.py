"""Merging PEFT LoRA weights into the DiT: merged model == base model + unmerged LoRA branches."""

from __future__ import annotations

import pytest
import torch

from longlive_runner.model.config import DiTConfig
from longlive_runner.model.dit import CausalWanDiT
from longlive_runner.model.lora import merge_lora

CFG = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16, freq_dim=32)
MODULES = [f"{a}.{p}" for a in ("self_attn", "cross_attn") for p in "qkvo"] + ["ffn.0", "ffn.2"]
RANK = 4


def peft_lora(model: CausalWanDiT, seed: int = 0) -> dict[str, torch.Tensor]:
    """LoRA pairs on every Linear of every block, PEFT-named as in LongLive's lora.pt."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for n in range(CFG.num_layers):
        for module in MODULES:
            out_f, in_f = model.get_submodule(f"blocks.{n}.{module}").weight.shape
            prefix = f"base_model.model.blocks.{n}.{module}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(RANK, in_f, generator=g) / in_f**0.5
            state[f"{prefix}.lora_B.weight"] = 0.3 * torch.randn(out_f, RANK, generator=g) / RANK**0.5
    return state


def inputs():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(1, CFG.in_dim, 3, 4, 6, generator=g),
        torch.tensor([[1000.0, 937.5, 833.3]]),
        torch.randn(1, CFG.text_len, CFG.text_dim, generator=g),
    )


@pytest.mark.parametrize("alpha", [None, 8.0])
def test_merged_equals_unmerged_forward(alpha):
    torch.manual_seed(0)
    model = CausalWanDiT(CFG).eval()
    lora = peft_lora(model)
    scale = 1.0 if alpha is None else alpha / RANK
    x, t, context = inputs()

    # Unmerged: every targeted Linear adds scale * x @ A.T @ B.T to its output.
    hooks = []
    for key in lora:
        if key.endswith("lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            a, b = lora[key], lora[key.replace("lora_A", "lora_B")]
            hooks.append(
                model.get_submodule(module).register_forward_hook(
                    lambda m, i, o, a=a, b=b: o + scale * (i[0] @ a.T) @ b.T
                )
            )
    with torch.no_grad():
        unmerged = model(x, t, context)
        for h in hooks:
            h.remove()
        base = model(x, t, context)

    merged_state = merge_lora(model.state_dict(), lora, alpha=alpha)
    assert set(merged_state) == set(model.state_dict())
    model.load_state_dict(merged_state)
    with torch.no_grad():
        merged = model(x, t, context)

    assert (unmerged - base).abs().max() > 1e-2  # the LoRA matters
    diff = (merged - unmerged).abs().max().item()
    print(f"merged vs unmerged: max diff {diff:.2e}")
    assert diff <= 1e-4


def test_merge_keeps_dtype_and_untouched_entries():
    model = CausalWanDiT(CFG).to(torch.bfloat16)
    state = model.state_dict()
    lora = {k: v for k, v in peft_lora(model).items() if ".blocks.0.ffn.0." in k}
    merged = merge_lora(state, lora, rank=RANK)
    assert merged["blocks.0.ffn.0.weight"].dtype == torch.bfloat16
    want = (
        state["blocks.0.ffn.0.weight"].float()
        + lora["base_model.model.blocks.0.ffn.0.lora_B.weight"]
        @ lora["base_model.model.blocks.0.ffn.0.lora_A.weight"]
    )
    torch.testing.assert_close(merged["blocks.0.ffn.0.weight"], want.to(torch.bfloat16), rtol=0, atol=0)
    assert merged["blocks.0.ffn.2.weight"] is state["blocks.0.ffn.2.weight"]
    assert state["blocks.0.ffn.0.weight"] is not merged["blocks.0.ffn.0.weight"]  # input not mutated


def test_errors_name_the_key():
    model = CausalWanDiT(CFG)
    state, lora = model.state_dict(), peft_lora(model)
    a_key = "base_model.model.blocks.1.self_attn.k.lora_A.weight"
    b_key = a_key.replace("lora_A", "lora_B")

    missing = {k: v for k, v in lora.items() if k != b_key}
    with pytest.raises(KeyError, match="blocks.1.self_attn.k.lora_B.weight is missing"):
        merge_lora(state, missing)

    stray = dict(lora)
    stray["base_model.model.blocks.9.ffn.0.lora_A.weight"] = torch.zeros(RANK, 64)
    stray["base_model.model.blocks.9.ffn.0.lora_B.weight"] = torch.zeros(128, RANK)
    with pytest.raises(KeyError, match="blocks.9.ffn.0.weight"):
        merge_lora(state, stray)

    bad_shape = {**lora, b_key: torch.zeros(64, RANK + 1)}
    with pytest.raises(ValueError, match="blocks.1.self_attn.k.weight"):
        merge_lora(state, bad_shape)

    with pytest.raises(KeyError, match="optimizer_state"):
        merge_lora(state, {**lora, "optimizer_state": torch.zeros(1)})

    with pytest.raises(ValueError, match="rank 4, expected 256"):
        merge_lora(state, lora, rank=256)
