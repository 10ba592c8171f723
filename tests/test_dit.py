"""CausalWanDiT against diffusers' WanTransformer3DModel (an independent Wan implementation)."""

from __future__ import annotations

import pytest
import torch

from longlive_runner.model.config import DiTConfig, StreamConfig
from longlive_runner.model.dit import CausalWanDiT

CFG = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16, freq_dim=32)
STREAM = StreamConfig(height=64, width=112)


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (norm weights around 1), so no term of the model hides."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif "modulation" in name:
                p.copy_(0.3 * noise)
            else:
                p.copy_(noise / p[0].numel() ** 0.5 if p.ndim > 1 else 0.1 * noise)


def diffusers_twin(model: CausalWanDiT):
    """A WanTransformer3DModel holding our weights, converted by diffusers' own converter."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    cfg = model.cfg
    ref = WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
        rope_max_seq_len=cfg.rope_max_positions,
    )
    converted = convert_wan_transformer_to_diffusers(dict(model.state_dict()))
    ref.load_state_dict(converted, strict=True)
    return ref.eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    model = CausalWanDiT(CFG).eval()
    randomise(model)
    return model, diffusers_twin(model)


def inputs(frames: int = 3, h: int = 8, w: int = 14):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, CFG.in_dim, frames, h, w, generator=g)
    context = torch.randn(1, CFG.text_len, CFG.text_dim, generator=g)
    context[:, 10:] = 0  # padded text slots are zero and still attended
    return x, context


def test_first_block_matches_diffusers(models):
    model, ref = models
    x, context = inputs()
    t = torch.full((1, 3), 937.5)  # fractional, as the warped schedule produces
    with torch.no_grad():
        expected = ref(x, t[:, 0], context, return_dict=False)[0]
        ours = model(x, t, context)
        cache = model.new_cache(1, 4 * 7, STREAM, "cpu", torch.float32)
        cached = model.forward_cached(x, t, context, cache, start_frame=0)
    assert expected.shape == ours.shape == cached.shape == x.shape
    scale = expected.abs().max().item()
    diff_nocache = (ours - expected).abs().max().item()
    diff_cached = (cached - expected).abs().max().item()
    print(f"|v| max {scale:.3f}; max diff no-cache {diff_nocache:.2e}, cached {diff_cached:.2e}")
    assert scale > 0.1
    assert diff_nocache <= 1e-4
    assert diff_cached <= 1e-4


def test_per_frame_timesteps_match_diffusers(models):
    # diffusers takes one timestep per token (its Wan2.2 path); ours per frame, expanded per token.
    model, ref = models
    x, context = inputs(frames=3, h=4, w=6)
    t = torch.tensor([[1000.0, 833.333, 0.0]])
    tokens_per_frame = 2 * 3
    with torch.no_grad():
        expected = ref(x, t.repeat_interleave(tokens_per_frame, dim=1), context, return_dict=False)[0]
        ours = model(x, t, context)
    diff = (ours - expected).abs().max().item()
    print(f"per-frame timesteps: max diff {diff:.2e}")
    assert diff <= 1e-4
    # and the timesteps really are per frame: changing one frame's t changes the output
    with torch.no_grad():
        other = model(x, torch.tensor([[1000.0, 833.333, 250.0]]), context)
    assert (other - ours).abs().max() > 1e-3


def test_frame_mask_and_start_frame(models):
    model, _ = models
    x, context = inputs(frames=4, h=4, w=6)
    t = torch.full((1, 4), 500.0)
    with torch.no_grad():
        full = model(x, t, context)
        all_true = model(x, t, context, frame_mask=torch.ones(4, 4, dtype=torch.bool))
        causal = model(x, t, context, frame_mask=torch.ones(4, 4, dtype=torch.bool).tril())
        shifted = model(x, t, context, start_frame=5)
        first_only = model(x[:, :, :1], t[:, :1], context)
    torch.testing.assert_close(all_true, full, rtol=0, atol=1e-5)
    # under a causal mask frame 0 sees only itself
    torch.testing.assert_close(causal[:, :, :1], first_only, rtol=0, atol=1e-5)
    assert (causal[:, :, 1:] - full[:, :, 1:]).abs().max() > 1e-3
    # RoPE only sees relative positions: shifting every frame by the same offset changes nothing
    # (absolute positions matter once cached keys from other frames join; see test_kv_cache.py)
    torch.testing.assert_close(shifted, full, rtol=0, atol=1e-5)


def test_forward_with_attention_is_forward_with_any_pattern_and_positions(models):
    """The training entry point: per-sample RoPE positions and a caller's attention callable."""
    from longlive_runner.model.dit import attention

    model, _ = models
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, CFG.in_dim, 4, 4, 6, generator=g)
    t = torch.rand(2, 4, generator=g) * 1000
    context = torch.randn(2, CFG.text_len, CFG.text_dim, generator=g)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    token_mask = causal.repeat_interleave(6, 0).repeat_interleave(6, 1)  # 2x3 tokens per frame (patch 1x2x2)
    with torch.no_grad():
        ref = model(x, t, context, frame_mask=causal)
        got = model.forward_with_attention(
            x, t, context, lambda q, k, v: attention(q, k, v, token_mask), torch.arange(4).expand(2, 4)
        )
        # sample 1's frames at 7, 8, 20, 21: a gap, as in a long video whose middle was evicted
        positions = torch.tensor([[0, 1, 2, 3], [7, 8, 20, 21]])
        gapped = model.forward_with_attention(x, t, context, lambda q, k, v: attention(q, k, v), positions)
        plain = model.forward_with_attention(
            x, t, context, lambda q, k, v: attention(q, k, v), positions[:1].expand(2, 4)
        )
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(gapped[:1], plain[:1], rtol=0, atol=0)  # sample 0: same positions
    assert (gapped[1:] - plain[1:]).abs().max() > 1e-3  # sample 1: the gap is seen (relative offsets change)
    # rope_at places each sample's frames exactly where rope(start_frame) would
    cos, sin = model.rope_at(torch.tensor([[7, 8], [20, 21]]), 2, 3)
    for b, start in enumerate((7, 20)):
        ref_cos, ref_sin = model.rope(start, 2, 2, 3)
        assert torch.equal(cos[b], ref_cos) and torch.equal(sin[b], ref_sin)
    with pytest.raises(ValueError, match="positions must be"):
        model.forward_with_attention(x, t, context, lambda q, k, v: attention(q, k, v), torch.arange(3)[None])
    with pytest.raises(ValueError, match="positions must lie"):
        model.rope_at(torch.tensor([[CFG.rope_max_positions]]), 4, 6)


def test_rejects_bad_shapes(models):
    model, _ = models
    x, context = inputs(frames=3, h=4, w=6)
    with pytest.raises(ValueError, match=r"t must be \[B, F\]"):
        model(x, torch.zeros(1, 2), context)
    with pytest.raises(ValueError, match="RoPE positions"):
        model(x, torch.zeros(1, 3), context, start_frame=CFG.rope_max_positions - 2)
    with pytest.raises(ValueError, match="frame_mask"):
        model(x, torch.zeros(1, 3), context, frame_mask=torch.ones(2, 2, dtype=torch.bool))


def test_rope_tables_survive_dtype_casts():
    model = CausalWanDiT(CFG)
    table = model.rope_freqs.clone()
    assert table.dtype == torch.float32 and table.shape == (2, CFG.rope_max_positions, CFG.head_dim // 2)
    model.to(torch.bfloat16)
    assert model.rope_freqs.dtype == torch.float32
    assert torch.equal(model.rope_freqs, table)
    assert "rope_freqs" not in model.state_dict()
    # loaders build on "meta" and then materialise the weights: the tables must come out real
    with torch.device("meta"):
        lazy = CausalWanDiT(CFG)
    lazy.to_empty(device="cpu")
    assert torch.equal(lazy.rope_freqs, table)


def test_parameter_count_of_the_real_model():
    with torch.device("meta"):
        model = CausalWanDiT(DiTConfig())
    assert sum(p.numel() for p in model.parameters()) == 1_418_996_800
    keys = set(model.state_dict())
    assert {
        "blocks.29.modulation",
        "head.modulation",
        "time_projection.1.weight",
        "blocks.0.norm3.bias",
    } <= keys
    assert model.blocks[0].modulation.shape == (1, 6, 1536)
    assert not any("norm1" in k or "norm2" in k for k in keys)
