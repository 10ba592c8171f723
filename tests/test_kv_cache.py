"""The frame-sink + rolling-window KV cache: cached generation == the same attention pattern uncached."""

from __future__ import annotations

import pytest
import torch

from longlive_runner.model.config import DiTConfig, StreamConfig
from longlive_runner.model.dit import CausalWanDiT, apply_rope

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
        dit.context_pass(clean[:, :, s : s + N], context, cache, s)


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

            dit.context_pass(clean[:, :, s : s + N], context, cache, s)
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


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v over [B, S, H, D] tensors, written out (no torch SDPA)."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) / q.shape[-1] ** 0.5
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.float()).to(q.dtype)


def block_kv(dit: CausalWanDiT, x: torch.Tensor, context: torch.Tensor, first: int, sees=None):
    """Run frames [first, first+n) at t=0 through the no-cache DiT (`forward_with_attention`).

    `sees(layer, k, v) -> (keys, values)` gives the keys/values the queries attend in each layer
    (default: the frames' own fresh k, v). Returns each layer's fresh post-RoPE (k, v) [B, n*T, H, D].
    """
    n = x.shape[2]
    fresh: list[tuple[torch.Tensor, torch.Tensor]] = []

    def attend(q, k, v):
        layer = len(fresh)
        fresh.append((k, v))
        keys, values = (k, v) if sees is None else sees(layer, k, v)
        return plain_attention(q, keys, values)

    with torch.no_grad():
        dit.forward_with_attention(
            x, torch.zeros(1, n), context, attend, torch.arange(first, first + n)[None]
        )
    return fresh


def recache_reference(
    dit, clean, ctx_old, ctx_new, s: int, global_sink: bool, queries_see_cache: bool = True
):
    """What the cache holds after a switch at frame s, from longlive-model-facts.md ("Prompt switching"),
    computed without KVCache: {frame: (k, v) [layers, B, T, H, D]} for every frame it holds.

    The re-cache re-encodes the newest n = min(12, s) clean frames at t=0 under the new prompt, at
    their own positions. In every layer they first write their K/V into the cache, then their queries
    attend to what the cache holds after the write:
    - global sink, s > 12: [old K/V of frames 0-2 (their first-block context pass, old prompt) |
      the re-encoded s-9 .. s-1]; frames s-12 .. s-10 are queries only;
    - otherwise (s <= 12, or no global sink): exactly the n re-encoded frames.
    `queries_see_cache=False` is the old, wrong reading (queries attend the n re-encoded frames).
    """
    n = min(CACHE, s)
    first = s - n
    keep_sink = global_sink and s > CACHE
    held: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    sees = None
    if keep_sink:
        sink = block_kv(dit, clean[:, :, :SINK], ctx_old, 0)
        for f in range(SINK):
            held[f] = tuple(torch.stack([kv[j][:, f * T : (f + 1) * T] for kv in sink]) for j in (0, 1))
        window = slice((n - WINDOW) * T, None)  # the last 9 re-encoded frames stay in the window

        def sees(layer, k, v):
            if not queries_see_cache:
                return k, v
            return torch.cat([sink[layer][0], k[:, window]], 1), torch.cat([sink[layer][1], v[:, window]], 1)

    fresh = block_kv(dit, clean[:, :, first:s], ctx_new, first, sees)
    for f in range(s - WINDOW if keep_sink else first, s):
        i = f - first
        held[f] = tuple(torch.stack([kv[j][:, i * T : (i + 1) * T] for kv in fresh]) for j in (0, 1))
    return held


def switch(dit, s: int, global_sink: bool):
    """Generate s frames under prompt A, re-cache under prompt B; the cache, its inputs and its old state."""
    clean, ctx_a, ctx_b = latents(s, seed=5), text(6), text(7)
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    with torch.no_grad():
        generate(dit, cache, clean, ctx_a, range(s // N))
        assert cache.has_text
        old = cache.k.clone(), cache.v.clone(), list(cache.slot_frame)
        first = s - min(CACHE, s)
        dit.recache(clean[:, :, first:], ctx_b, cache, first, global_sink=global_sink)
    return cache, (clean, ctx_a, ctx_b), old


def held_kv(cache, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
    slot = cache.slot(frame)
    assert slot >= 0 and cache.slot_frame[slot] == frame, f"the cache does not hold frame {frame}"
    return cache.k[:, :, slot * T : (slot + 1) * T], cache.v[:, :, slot * T : (slot + 1) * T]


@pytest.mark.parametrize("global_sink", [True, False], ids=["global_sink", "local_sink"])
@pytest.mark.parametrize("s", [9, 12, 15, 18, 24])
def test_recache_matches_the_reference(dit, s, global_sink):
    cache, (clean, ctx_a, ctx_b), (old_k, old_v, slots_before) = switch(dit, s, global_sink)
    want = recache_reference(dit, clean, ctx_a, ctx_b, s, global_sink)

    assert cache.frames_seen == s  # counters do not move
    assert not cache.has_text  # the next block encodes the new prompt
    held = sorted(f for f in cache.slot_frame if f >= 0)
    assert held == sorted(want), "the cache holds other frames than the reference"
    for f in held:
        got_k, got_v = held_kv(cache, f)
        torch.testing.assert_close(
            got_k, want[f][0], rtol=0, atol=1e-5, msg=lambda m, f=f: f"frame {f} K: {m}"
        )
        torch.testing.assert_close(
            got_v, want[f][1], rtol=0, atol=1e-5, msg=lambda m, f=f: f"frame {f} V: {m}"
        )
    if global_sink:
        assert cache.slot_frame == slots_before and cache.sink_first == 0
        if s > CACHE:  # the sink keeps the old K/V bit for bit
            assert torch.equal(cache.k[:, :, : SINK * T], old_k[:, :, : SINK * T])
            assert torch.equal(cache.v[:, :, : SINK * T], old_v[:, :, : SINK * T])
            assert held == [0, 1, 2, *range(s - WINDOW, s)]
    else:  # every re-encoded frame, laid out from slot 0: the first three are the new sink
        first = s - min(CACHE, s)
        assert cache.slot_frame[: min(CACHE, s)] == list(range(first, s)) and cache.sink_first == first

    # the cross-attention cache now holds the new prompt's K/V
    with torch.no_grad():
        dit.forward_cached(latents(N, 8), torch.full((1, N), 1000.0), ctx_b, cache, s)
        want_k, want_v = dit.blocks[1].cross_attn.kv(dit.text_embedding(ctx_b))
    torch.testing.assert_close(cache.text_k[1], want_k, rtol=0, atol=0)
    torch.testing.assert_close(cache.text_v[1], want_v, rtol=0, atol=0)


@pytest.mark.parametrize("s", [18, 24])
def test_the_reference_tells_the_old_recache_apart(dit, s):
    """The old re-cache (queries attend the re-encoded frames only) fails the reference; so does
    the other sink variant: the tolerance above separates all three."""
    cache, (clean, ctx_a, ctx_b), _ = switch(dit, s, global_sink=True)
    want = recache_reference(dit, clean, ctx_a, ctx_b, s, global_sink=True)
    old = recache_reference(dit, clean, ctx_a, ctx_b, s, global_sink=True, queries_see_cache=False)
    local = recache_reference(dit, clean, ctx_a, ctx_b, s, global_sink=False)
    window = range(s - WINDOW, s)
    # layer 0's K/V come before any attention; from layer 1 on they depend on what was attended
    old_gap = max((old[f][0][1:] - want[f][0][1:]).abs().max().item() for f in window)
    local_gap = max((local[f][0][1:] - want[f][0][1:]).abs().max().item() for f in window)
    ours = max((held_kv(cache, f)[0] - want[f][0]).abs().max().item() for f in window)
    print(
        f"s={s}: |ours - reference| {ours:.1e}, |old - reference| {old_gap:.1e}, |local - global| {local_gap:.1e}"
    )
    assert ours <= 1e-5
    assert old_gap > 100 * 1e-5 and local_gap > 100 * 1e-5


def test_after_a_local_sink_restart_the_window_rolls_on(dit):
    s = 18
    cache, (clean, ctx_a, ctx_b), _ = switch(dit, s, global_sink=False)
    assert cache.slot_frame == list(range(6, 18)) and cache.ring_origin == 9
    more = latents(3 * N, seed=11)
    with torch.no_grad():
        for b in range(3):
            start = s + b * N
            dit.forward_cached(
                more[:, :, b * N : (b + 1) * N], torch.full((1, N), 1000.0), ctx_b, cache, start
            )
            dit.context_pass(more[:, :, b * N : (b + 1) * N], ctx_b, cache, start)
    # the new sink (frames 6-8) stays; the window now holds the newest 9 frames
    assert sorted(f for f in cache.slot_frame) == [6, 7, 8, *range(27 - WINDOW, 27)]
    assert not cache.holds(3) and not cache.holds(9) and cache.holds(6) and cache.holds(26)


def test_rebase_rotates_the_window_keys(dit):
    """Past the RoPE table the cache moves non-pinned keys back: RoPE(p) then rotate(-D) == RoPE(p-D)."""
    cache = dit.new_cache(1, T, STREAM, "cpu", torch.float32)
    raw = torch.randn(
        CFG.num_layers, 1, CACHE * T, CFG.num_heads, CFG.head_dim, generator=torch.Generator().manual_seed(3)
    )
    frames = [0, 1, 2, 500, 501, 502, 503, 504, 505, 506, 507, 508]  # the sink + a window far out
    for i, f in enumerate(frames):
        cos, sin = dit.rope(f, 1, 1, 1)  # one token: time angles of f (grid position 0)
        cache.k[:, :, i * T : (i + 1) * T] = apply_rope(raw[:, :, i * T : (i + 1) * T], cos, sin)
    before = cache.k.clone()
    shift = 300
    cache.rebase(shift, dit._rotate_keys)
    assert torch.equal(cache.k[:, :, : SINK * T], before[:, :, : SINK * T])  # the global sink is pinned
    for i, f in enumerate(frames[SINK:], start=SINK):
        cos, sin = dit.rope(f - shift, 1, 1, 1)
        want = apply_rope(raw[:, :, i * T : (i + 1) * T], cos, sin)
        torch.testing.assert_close(cache.k[:, :, i * T : (i + 1) * T], want, rtol=0, atol=1e-5)
    assert cache.position_offset == shift and cache.position(510) == 210 and cache.position(1) == 1


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
