"""The frame-sink + rolling-window KV cache: cached generation == the same attention pattern uncached."""

from __future__ import annotations

import pytest
import torch

from longlive_runner.config import DiTConfig, StreamConfig
from longlive_runner.models.dit import CausalWanDiT, apply_rope

CFG = DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=16, freq_dim=32)
STREAM = StreamConfig(height=32, width=48)  # latent 4x6 -> T = 2*3 = 6 tokens per frame
N, SINK, CACHE = STREAM.frames_per_block, STREAM.sink_frames, STREAM.cache_frames
WINDOW = CACHE - SINK
H, W, T = 4, 6, 6


@pytest.fixture(scope="module")
def dit() -> CausalWanDiT:
    torch.manual_seed(0)
    model = CausalWanDiT(CFG).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # modulation tables and norms random too
            if "modulation" in name or "norm" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model


def latents(frames: int, seed: int) -> torch.Tensor:
    return torch.randn(1, CFG.in_dim, frames, H, W, generator=torch.Generator().manual_seed(seed))


def text(seed: int) -> torch.Tensor:
    return torch.randn(1, CFG.text_len, CFG.text_dim, generator=torch.Generator().manual_seed(seed))


def visible_mask(frames: int) -> torch.Tensor:
    """bool [F, F]: a query frame in block k sees the sink + the newest WINDOW frames up to its block's end."""
    mask = torch.zeros(frames, frames, dtype=torch.bool)
    for k in range(frames // N):
        end = (k + 1) * N
        mask[k * N : end, :SINK] = True
        mask[k * N : end, max(0, end - WINDOW) : end] = True
    return mask


def generate(dit: CausalWanDiT, cache, clean: torch.Tensor, context: torch.Tensor, blocks: range) -> None:
    """Blocks as the generator runs them: a noisy forward (overwritten later), then the context pass."""
    for b in blocks:
        s = b * N
        dit.forward_cached(latents(N, 1000 + b), torch.full((1, N), 1000.0), context, cache, s)
        dit.forward_cached(clean[:, :, s : s + N], torch.zeros(1, N), context, cache, s, return_output=False)


def test_cached_generation_equals_masked_full_forward(dit):
    blocks = 9  # the window first rolls at block 4 (frame 12)
    clean, context = latents(N * blocks, seed=1), text(2)
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    diffs = []
    with torch.no_grad():
        for b in range(blocks):
            s = b * N
            noisy, t = latents(N, 2000 + b), torch.full((1, N), 833.333)
            dit.forward_cached(latents(N, 3000 + b), torch.full((1, N), 1000.0), context, cache, s)
            v = dit.forward_cached(noisy, t, context, cache, s)  # rewrites the first step's K/V

            x_ref = torch.cat([clean[:, :, :s], noisy], dim=2)
            t_ref = torch.cat([torch.zeros(1, s), t], dim=1)
            v_ref = dit(x_ref, t_ref, context, frame_mask=visible_mask(s + N))[:, :, s:]
            diffs.append((v - v_ref).abs().max().item())

            dit.forward_cached(
                clean[:, :, s : s + N], torch.zeros(1, N), context, cache, s, return_output=False
            )
    print(f"max |cached - reference| per block: {[f'{d:.1e}' for d in diffs]}")
    assert max(diffs) <= 1e-4
    assert cache.frames_seen == N * blocks
    # the ring: slot of frame f >= SINK is SINK + (f - SINK) % WINDOW
    assert cache.slot_frame == [0, 1, 2, 21, 22, 23, 24, 25, 26, 18, 19, 20]


def test_the_window_really_drops_old_frames(dit):
    # Sanity check of the test above: past the roll, a full causal mask gives another answer.
    blocks = 6
    clean, context = latents(N * blocks, seed=1), text(2)
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    with torch.no_grad():
        generate(dit, cache, clean, context, range(blocks - 1))
        s = N * (blocks - 1)
        noisy, t = latents(N, 7), torch.full((1, N), 500.0)
        v = dit.forward_cached(noisy, t, context, cache, s)
        block_causal = torch.zeros(s + N, s + N, dtype=torch.bool)
        for k in range(blocks):
            block_causal[k * N : (k + 1) * N, : (k + 1) * N] = True
        x_ref = torch.cat([clean[:, :, :s], noisy], dim=2)
        t_ref = torch.cat([torch.zeros(1, s), t], dim=1)
        v_full = dit(x_ref, t_ref, context, frame_mask=block_causal)[:, :, s:]
    assert (v - v_full).abs().max() > 1e-3


def test_cache_memory_is_constant(dit):
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    k, v = cache.k, cache.v
    ptrs, size = (k.data_ptr(), v.data_ptr()), cache.nbytes()
    assert k.shape == (CFG.num_layers, 1, CACHE * T, CFG.num_heads, CFG.head_dim)
    blocks = 20
    clean, context = latents(N * blocks, seed=3), text(4)
    with torch.no_grad():
        generate(dit, cache, clean, context, range(blocks))
        dit.recache(clean[:, :, -CACHE:], text(5), cache, N * blocks - CACHE)
    assert cache.k is k and cache.v is v
    assert (cache.k.data_ptr(), cache.v.data_ptr()) == ptrs and cache.nbytes() == size
    assert cache.frames_seen == N * blocks
    keys, values = cache.layer(1)
    assert keys.data_ptr() == k[1].data_ptr() and values.shape == (1, CACHE * T, CFG.num_heads, CFG.head_dim)
    assert sorted(cache.slot_frame) == [0, 1, 2, *range(N * blocks - WINDOW, N * blocks)]


def reference_kv(dit: CausalWanDiT, x: torch.Tensor, context: torch.Tensor, first_frame: int):
    """Post-RoPE self-attention K and V [layers, B, n*T, H, D] of a plain forward at t=0."""
    captured: dict[str, list[torch.Tensor]] = {"k": [], "v": []}
    hooks = []
    for block in dit.blocks:
        hooks.append(block.self_attn.norm_k.register_forward_hook(lambda m, i, o: captured["k"].append(o)))
        hooks.append(block.self_attn.v.register_forward_hook(lambda m, i, o: captured["v"].append(o)))
    n = x.shape[2]
    try:
        with torch.no_grad():
            dit(x, torch.zeros(1, n), context, start_frame=first_frame)
    finally:
        for h in hooks:
            h.remove()
    rope = dit.rope(first_frame, n, H // 2, W // 2)
    heads = (CFG.num_heads, CFG.head_dim)
    k = torch.stack([apply_rope(k.unflatten(-1, heads), *rope) for k in captured["k"]])
    v = torch.stack([v.unflatten(-1, heads) for v in captured["v"]])
    return k, v


@pytest.mark.parametrize("s", [9, 12, 18, 24])
def test_recache_rewrites_what_the_cache_holds(dit, s):
    clean, ctx_a, ctx_b = latents(s, seed=5), text(6), text(7)
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    with torch.no_grad():
        generate(dit, cache, clean, ctx_a, range(s // N))
    assert cache.has_text
    old_k, old_v = cache.k.clone(), cache.v.clone()
    slots_before = list(cache.slot_frame)

    first = s - min(CACHE, s)
    with torch.no_grad():
        dit.recache(clean[:, :, first:], ctx_b, cache, first)
    ref_k, ref_v = reference_kv(dit, clean[:, :, first:], ctx_b, first)

    assert cache.frames_seen == s and cache.slot_frame == slots_before  # counters do not move
    assert not cache.has_text  # the next block encodes the new prompt
    for f in range(s):
        slot = cache.slot(f)
        if cache.slot_frame[slot] != f:
            continue
        got = cache.k[:, :, slot * T : (slot + 1) * T], cache.v[:, :, slot * T : (slot + 1) * T]
        old = old_k[:, :, slot * T : (slot + 1) * T], old_v[:, :, slot * T : (slot + 1) * T]
        if f < SINK and s > CACHE:
            # global sink: frames 0..2 keep their old K/V bit for bit
            assert torch.equal(got[0], old[0]) and torch.equal(got[1], old[1]), f"sink frame {f} changed"
        else:
            i = f - first
            want = ref_k[:, :, i * T : (i + 1) * T], ref_v[:, :, i * T : (i + 1) * T]
            assert f >= first
            torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-5)
            torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-5)
            assert (got[0] - old[0]).abs().max() > 1e-4, f"frame {f} was not re-encoded"
    if s > CACHE:
        # the re-encoded frames s-12..s-10 were queries only: the window holds exactly s-9..s-1
        assert sorted(f for f in cache.slot_frame if f >= SINK) == list(range(s - WINDOW, s))

    # the cross-attention cache now holds the new prompt's K/V
    with torch.no_grad():
        dit.forward_cached(latents(N, 8), torch.full((1, N), 1000.0), ctx_b, cache, s)
        want_k, want_v = dit.blocks[1].cross_attn.kv(dit.text_embedding(ctx_b))
    torch.testing.assert_close(cache.text_k[1], want_k, rtol=0, atol=0)
    torch.testing.assert_close(cache.text_v[1], want_v, rtol=0, atol=0)


def test_text_kv_is_reused_until_cleared(dit):
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    x, t = latents(N, 1), torch.full((1, N), 1000.0)
    with torch.no_grad():
        v_a = dit.forward_cached(x, t, text(1), cache, 0)
        k_a = cache.text_k[0]
        v_same = dit.forward_cached(x, t, text(2), cache, 0)  # context ignored: the cache holds prompt 1
        assert cache.text_k[0] is k_a
        cache.clear_text()
        v_b = dit.forward_cached(x, t, text(2), cache, 0)
    torch.testing.assert_close(v_same, v_a, rtol=0, atol=0)
    assert (v_b - v_a).abs().max() > 1e-3


def test_reset_and_bad_blocks(dit):
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    context, t = text(1), torch.zeros(1, N)
    with torch.no_grad():
        with pytest.raises(ValueError, match="has only seen 0 frames"):
            dit.forward_cached(latents(N, 1), t, context, cache, 3)
        generate(dit, cache, latents(6 * N, 2), context, range(6))
        with pytest.raises(ValueError, match="do not fit the window"):
            dit.forward_cached(latents(N, 1), t, context, cache, 3)  # frames 3..5 were evicted
        with pytest.raises(ValueError, match="never written"):
            dit.recache(latents(N, 1), context, cache, 18)
        with pytest.raises(ValueError, match="tokens per frame"):
            dit.forward_cached(latents(N, 1)[:, :, :, :2], t, context, cache, 18)
        cache.reset()
        assert cache.frames_seen == 0 and not cache.has_text and cache.layer(0)[0].shape[1] == 0
        dit.forward_cached(latents(N, 1), t, context, cache, 0)  # a new video starts at frame 0
    assert cache.frames_seen == N
