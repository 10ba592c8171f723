"""LongLive 2.0 (Wan2.2-TI2V-5B) through the shared DiT, KV cache, sampler and block loop.

Written from the facts in docs/architecture.md ("LongLive 2.0") and the reference's behaviour as
described there, not from our cache code: the shot-sink tests replay the reference's ordered
buffer (roll, float, join the prefix) chunk by chunk and compare the frames it holds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from longlive_runner.model.config import SHOT_PREFIX, PipelineConfig, get_preset
from longlive_runner.model.dit import CausalWanDiT
from longlive_runner.model.kv_cache import KVCache
from longlive_runner.model.scheduler import FlowUniPC, unipc_schedule
from test_dit import diffusers_twin, randomise

# A Wan2.2 TI2V-like DiT at tiny sizes: 48 latent channels in and out, patch (1, 2, 2).
CFG2 = dataclasses.replace(get_preset("tiny2").dit, text_len=16)  # the tiny2 preset's DiT, 16 text slots
CHUNK = 8  # latent frames per chunk
H, W = 4, 6  # latent grid -> 2 x 3 = 6 tokens per frame
TOKENS = (H // 2) * (W // 2)


@pytest.fixture(scope="module")
def dit2() -> CausalWanDiT:
    torch.manual_seed(0)
    model = CausalWanDiT(CFG2).eval()
    randomise(model, seed=3)
    return model


def chunk_inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 48, CHUNK, H, W, generator=g)
    context = torch.randn(1, CFG2.text_len, CFG2.text_dim, generator=g)
    context[:, 9:] = 0
    return x, context


def stream2(**overrides) -> PipelineConfig:
    base = get_preset("tiny2")
    return dataclasses.replace(base, stream=dataclasses.replace(base.stream, **overrides))


# --- config -------------------------------------------------------------------------------------
def test_the_5b_preset_has_the_published_sizes():
    cfg = get_preset("longlive2-5b")
    cfg.validate()
    d, s = cfg.dit, cfg.stream
    assert (d.dim, d.ffn_dim, d.num_heads, d.head_dim, d.num_layers) == (3072, 14336, 24, 128, 30)
    assert (d.in_dim, d.out_dim, d.patch_size, d.text_len, d.text_dim) == (48, 48, (1, 2, 2), 512, 4096)
    assert (cfg.height, cfg.width, cfg.fps, cfg.latent_height, cfg.latent_width) == (704, 1280, 24, 44, 80)
    assert cfg.tokens_per_frame == 880 and s.frames_per_block == 8
    assert (s.sink_frames, s.cache_frames, s.shot_rope_offset, s.shot_prefix) == (8, 32, 8, SHOT_PREFIX)
    assert cfg.family == "longlive-2.0" and cfg.is_v2 and not get_preset("longlive-1.3b").is_v2
    with torch.device("meta"):
        model = CausalWanDiT(d)
    assert sum(p.numel() for p in model.parameters()) == 4_999_787_712
    assert model.head.head.weight.shape == (192, 3072)
    # one KV cache: 30 layers x 32 frames x 880 tokens x 3072 x (k, v) in bf16
    kv = 2 * 30 * 32 * 880 * 3072 * 2
    assert round(kv / 2**30, 2) == 9.67


def test_info_prints_the_sizes_and_one_kv_cache():
    from longlive_runner.cli import describe

    info = describe(get_preset("longlive2-5b"))
    assert info["family"] == "longlive-2.0" and info["tokens_per_latent_frame"] == 880
    assert info["dit_parameters"] == 4_999_787_712
    assert info["memory_gb"]["dit_bf16"] == 10.0 and info["memory_gb"]["kv_cache_bf16_gib"] == 9.668
    assert (info["video_frames_first_block"], info["video_frames_per_block"]) == (29, 32)


def test_config_round_trips_and_rejects_bad_settings():
    cfg = get_preset("tiny2")
    again = PipelineConfig.from_dict(cfg.to_dict())
    assert again == cfg
    for bad, match in (
        ({"sampler": "euler"}, "sampler"),
        ({"prompt_switch": "maybe"}, "prompt_switch"),
        ({"shot_prefix": None}, "shot_prefix"),
        ({"unipc_steps": 0}, "unipc_steps"),
    ):
        with pytest.raises(ValueError, match=match):
            stream2(**bad).validate()
    with pytest.raises(ValueError, match="family"):
        dataclasses.replace(cfg, family="longlive-3").validate()


# --- DiT ----------------------------------------------------------------------------------------
def test_first_chunk_matches_diffusers_wan22(dit2):
    """A first chunk (8 latent frames, per-frame timesteps) against WanTransformer3DModel with a
    Wan2.2 TI2V-like config (48 channels), which takes one timestep per token."""
    ref = diffusers_twin(dit2)
    x, context = chunk_inputs()
    t = torch.tensor([[999.0, 999.0, 937.0, 937.0, 833.0, 833.0, 624.0, 0.0]])
    stream = get_preset("tiny2").stream
    with torch.no_grad():
        expected = ref(x, t.repeat_interleave(TOKENS, dim=1), context, return_dict=False)[0]
        ours = dit2(x, t, context)
        cache = dit2.new_cache(1, TOKENS, stream, "cpu", torch.float32)
        cached = dit2.forward_cached(x, t, context, cache, start_frame=0)
    scale = expected.abs().max().item()
    diff = max((ours - expected).abs().max().item(), (cached - expected).abs().max().item())
    print(f"Wan2.2-like first chunk: |v| max {scale:.3f}, max diff {diff:.2e}")
    assert expected.shape == x.shape and scale > 0.1
    assert diff <= 1e-4


def block_causal_attend(chunks: int):
    """attend(q, k, v) for a teacher-forced sequence of whole chunks: chunk i sees chunks 0..i."""

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        frame_chunk = torch.arange(chunks).repeat_interleave(CHUNK * TOKENS)
        mask = frame_chunk[:, None] >= frame_chunk[None, :]
        out = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )
        return out.transpose(1, 2)

    return attend


def test_rope_offset_moves_new_chunks_and_keeps_cached_keys(dit2):
    """The shot offset: queries and keys of the chunks written while it is set sit at position +
    offset; the keys already cached keep theirs. Checked against a teacher-forced forward over
    [chunk A clean at t=0 | chunk B] with per-frame RoPE positions [0..7 | 8+o .. 15+o]."""
    stream = get_preset("tiny2").stream
    a, context = chunk_inputs(1)
    b, _ = chunk_inputs(2)
    t_b = torch.full((1, CHUNK), 833.0)
    outputs = []
    for offset in (0, 8, 24):
        cache = dit2.new_cache(1, TOKENS, stream, "cpu", torch.float32)
        dit2.context_pass(a, context, cache, 0)
        keys_a = cache.k[:, :, : CHUNK * TOKENS].clone()
        cache.rope_offset = offset
        got = dit2.forward_cached(b, t_b, context, cache, CHUNK)
        assert torch.equal(cache.k[:, :, : CHUNK * TOKENS], keys_a)  # cached keys keep their positions
        x = torch.cat([a, b], dim=2)
        t = torch.cat([torch.zeros(1, CHUNK), t_b], dim=1)
        positions = torch.cat([torch.arange(CHUNK), torch.arange(CHUNK, 2 * CHUNK) + offset])[None]
        with torch.no_grad():
            want = dit2.forward_with_attention(x, t, context, block_causal_attend(2), positions)[:, :, CHUNK:]
        diff = (got - want).abs().max().item()
        print(f"rope offset {offset}: max diff {diff:.2e}")
        assert diff <= 1e-4
        outputs.append(got)
    assert (outputs[1] - outputs[0]).abs().max() > 1e-3  # the offset changes the chunk


def test_rope_grid_is_built_once_per_block(dit2):
    stream = get_preset("tiny2").stream
    x, context = chunk_inputs()
    cache = dit2.new_cache(1, TOKENS, stream, "cpu", torch.float32)
    built = []
    original = dit2._grid_rope

    def counting(*args):
        built.append(args[1:])
        return original(*args)

    dit2._grid_rope = counting  # type: ignore[method-assign]
    try:
        for _ in range(4):
            dit2.forward_cached(x, torch.full((1, CHUNK), 937.0), context, cache, 0)
        dit2.context_pass(x, context, cache, 0)
        runs = cache.begin_block(0, CHUNK)
        assert cache.begin_block(0, CHUNK) is runs  # the block's slots are worked out once
    finally:
        del dit2._grid_rope
    assert len(built) == 1


# --- KV cache: the shot sink, replayed against the reference's ordered buffer ---------------------
class ReferenceBuffer:
    """LongLive 2.0's cache as its code describes it: an ordered buffer of chunks, rolled by
    evicting right after the protected prefix (the global sink, plus the pinned shot sink once
    it sits right after it); a floating pinned chunk shifts left with each roll."""

    def __init__(self, capacity_chunks: int) -> None:
        self.cap = capacity_chunks
        self.buf: list[int] = []
        self.pinned: int | None = None  # index in buf

    def write(self, chunk: int) -> None:  # the chunk's first forward
        if len(self.buf) == self.cap:
            joined = self.pinned == 1
            protect = 2 if joined else 1
            del self.buf[protect]
            if self.pinned is not None and not joined:
                self.pinned -= 1  # floating: it moves with the roll
        self.buf.append(chunk)

    def clean_recache(self) -> None:  # shot_clean_recache before the clean pass
        chunk = self.buf[-1]
        self.buf = [self.buf[0], chunk]
        self.pinned = None

    def pin(self) -> None:
        self.pinned = len(self.buf) - 1

    def frames(self) -> set[int]:
        return {c * CHUNK + i for c in self.buf for i in range(CHUNK)}


def held(cache: KVCache) -> set[int]:
    valid = cache.slot_frame[: cache.valid_frames]
    assert all(f >= 0 for f in valid), "attention would read a slot that holds no frame"
    return set(valid)


def run_shots(shots: set[int], chunks: int, recache: bool = False) -> list[tuple[set[int], set[int], int]]:
    cache = KVCache(1, 1, 1, 1, 2, sink_frames=CHUNK, cache_frames=4 * CHUNK)
    ref = ReferenceBuffer(4)
    out = []
    for c in range(chunks):
        for _ in range(5):  # 4 denoising forwards + the clean pass claim the same slots
            cache.begin_block(c * CHUNK, CHUNK)
        ref.write(c)
        if c in shots and recache:
            cache.drop_window()
            cache.begin_block(c * CHUNK, CHUNK)
            ref.clean_recache()
        if c in shots:
            cache.pin(c * CHUNK, CHUNK)
            ref.pin()
        out.append((held(cache), ref.frames(), len(ref.buf)))
    return out


def frames_of(*chunks: int) -> set[int]:
    return {c * CHUNK + i for c in chunks for i in range(CHUNK)}


def test_shot_sink_pins_floats_joins_the_prefix_and_repins():
    steps = run_shots(shots={5, 11}, chunks=18)
    for c, (ours, ref, _) in enumerate(steps):
        assert ours == ref, f"chunk {c}: ours {sorted(ours)} != reference {sorted(ref)}"
    # the facts, spelled out: no shot -> [chunk 0 | 3 newest]
    assert steps[4][0] == frames_of(0, 2, 3, 4)
    # pinned at chunk 5; it floats (6, 7) until it sits right after the global sink, then stays
    assert steps[5][0] == frames_of(0, 3, 4, 5)
    assert steps[6][0] == frames_of(0, 4, 5, 6)
    assert steps[7][0] == frames_of(0, 5, 6, 7)
    assert steps[9][0] == frames_of(0, 5, 8, 9)  # steady state: [chunk 0 | shot sink | 2 newest]
    # a new shot at 11 re-pins; the old shot sink (5) rolls out next
    assert steps[11][0] == frames_of(0, 5, 10, 11)
    assert steps[12][0] == frames_of(0, 10, 11, 12)
    assert steps[17][0] == frames_of(0, 11, 16, 17)


def test_shot_sink_right_after_the_global_sink_and_back_to_back_shots():
    for shots in ({1}, {1, 2}, {3, 4, 5}, {2, 4, 6, 8}, set(range(1, 12))):
        for c, (ours, ref, _) in enumerate(run_shots(shots, chunks=14)):
            assert ours == ref, f"shots {sorted(shots)}, chunk {c}"


def test_shot_clean_recache_drops_the_window_to_the_global_sink():
    steps = run_shots(shots={6, 9}, chunks=14, recache=True)
    for c, (ours, ref, _) in enumerate(steps):
        assert ours == ref, f"chunk {c}"
    assert steps[6][0] == frames_of(0, 6)  # the clean pass sees the global sink and itself only
    assert steps[7][0] == frames_of(0, 6, 7)
    assert steps[8][0] == frames_of(0, 6, 7, 8)
    assert steps[10][0] == frames_of(0, 9, 10)


def test_pin_and_drop_refuse_what_the_cache_cannot_do():
    cache = KVCache(1, 1, 1, 1, 2, sink_frames=CHUNK, cache_frames=4 * CHUNK)
    cache.begin_block(0, CHUNK)
    with pytest.raises(ValueError, match="not all held"):
        cache.pin(CHUNK, CHUNK)
    cache.begin_block(CHUNK, CHUNK)
    cache.pin(CHUNK, CHUNK)
    assert cache.pinned == (CHUNK, CHUNK)
    cache.drop_window()
    assert cache.pinned is None and held(cache) == frames_of(0)


# --- sampler ------------------------------------------------------------------------------------
def test_unipc_schedule_is_the_published_one():
    timesteps, sigmas = unipc_schedule(4, 5.0)
    assert timesteps == [999, 937, 833, 624]
    assert sigmas == pytest.approx([0.9998, 0.93727, 0.83306, 0.62469, 0.0], abs=2e-5)
    assert unipc_schedule(2, 5.0)[0] == [999, 833]


@pytest.mark.parametrize("steps", [4, 2, 6])
def test_unipc_steps_match_diffusers(steps):
    """FlowUniPC against diffusers' own UniPCMultistepScheduler (flow sigmas, flow_shift 5, bh2,
    order 2, x0 prediction, lower order final, corrector on), fed the same unshifted levels."""
    from diffusers import UniPCMultistepScheduler

    ref = UniPCMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=5.0,
        predict_x0=True,
        solver_type="bh2",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    ref.set_timesteps(sigmas=np.linspace(0.999, 0.0, steps + 1)[:-1].copy())
    ours = FlowUniPC(steps, 5.0)
    assert ours.timesteps == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 48, 8, 4, 6, generator=g)
    mix = torch.randn(48, 48, generator=g) * 0.2
    x_ref = x.clone()

    def flow(sample: torch.Tensor, timestep: float) -> torch.Tensor:  # a stand-in DiT: any smooth map
        return torch.einsum("oc,bcfhw->bofhw", mix, sample) * (1 + timestep / 1000) + 0.1 * sample.tanh()

    for timestep in ref.timesteps:
        x = ours.step(flow(x, float(timestep)), x)
        x_ref = ref.step(flow(x_ref, float(timestep)), timestep, x_ref).prev_sample
        diff = (x - x_ref).abs().max().item()
        assert diff <= 1e-5 * max(1.0, x_ref.abs().max().item()), f"t={int(timestep)}: {diff:.2e}"
    with pytest.raises(RuntimeError, match="steps are done"):
        ours.step(x, x)


# --- the block loop on tiny2 ---------------------------------------------------------------------
def latents_pipe(config: PipelineConfig | None = None):
    """A 2.0 config with seeded random weights (tiny2 unless given)."""
    from longlive_runner.model.pipeline import random_pipeline

    return random_pipeline(config or get_preset("tiny2"), "cpu", torch.float32, init_seed=0)


@pytest.fixture(scope="module")
def pipe2():
    return latents_pipe()


def run(pipe, prompts, seed=0, noise=None, **kw):
    gen = pipe.generator(seed=seed, noise=noise, decode=False)
    return gen, [gen.generate_block(p, **kw) for p in prompts]


def test_a_chunk_is_four_unipc_forwards_and_one_clean_pass(pipe2):
    dit = pipe2.dit
    calls: list[tuple[str, list[float]]] = []
    fwd, ctx = dit.forward_cached, dit.context_pass

    def forward_cached(x, t, context, cache, start_frame):
        calls.append(("denoise", t[0].unique().tolist()))
        return fwd(x, t, context, cache, start_frame)

    def context_pass(x, context, cache, start_frame):
        calls.append(("clean", [0.0]))
        return ctx(x, context, cache, start_frame)

    draws = []

    def noise(shape):
        draws.append(shape)
        return torch.randn(shape, generator=torch.Generator().manual_seed(len(draws)))

    dit.forward_cached, dit.context_pass = forward_cached, context_pass  # type: ignore[method-assign]
    try:
        gen, blocks = run(pipe2, ["a red circle"] * 2, noise=noise)
    finally:
        del dit.forward_cached, dit.context_pass
    per_chunk = [
        ("denoise", [999.0]),
        ("denoise", [937.0]),
        ("denoise", [833.0]),
        ("denoise", [624.0]),
        ("clean", [0.0]),
    ]
    assert calls == per_chunk * 2
    assert draws == [(1, 48, 8, 4, 8)] * 2  # only the initial noise of each chunk
    assert [b.start_frame for b in blocks] == [0, 8]
    assert blocks[1].latents is not None and blocks[1].latents.shape == (1, 48, 8, 4, 8)
    assert blocks[1].frames.shape == (0, 64, 128, 3)  # latents only: nothing decoded
    assert gen.frames_generated == 16


def test_every_model_call_can_be_traced(pipe2, tiny_pipe):
    from longlive_runner import ModelCall

    calls: list[ModelCall] = []
    gen = pipe2.generator(decode=False)
    gen.trace = calls.append
    block = gen.generate_block("a cat")
    assert [(c.kind, c.timestep, c.start_frame) for c in calls] == [
        ("denoise", 999.0, 0), ("denoise", 937.0, 0), ("denoise", 833.0, 0), ("denoise", 624.0, 0), ("clean", 0.0, 0)
    ]  # fmt: skip
    assert all(c.out is not None and c.out.shape == c.x.shape for c in calls[:4]) and calls[4].out is None
    assert torch.equal(calls[4].x, block.latents) and calls[0].context.shape == (1, 64, 32)
    # 1.0: the re-cache on a prompt switch is traced too, before the block's steps
    calls.clear()
    g1 = tiny_pipe.generator()
    g1.trace = calls.append
    g1.generate_block("a cat")
    g1.generate_block("a dog")
    kinds = [c.kind for c in calls]
    assert kinds == ["denoise"] * 4 + ["clean"] + ["recache"] + ["denoise"] * 4 + ["clean"]
    assert calls[5].start_frame == 0 and calls[5].x.shape[2] == 3 and calls[0].timestep == 1000.0


def test_same_seed_same_latents(pipe2):
    a = [b.latents for b in run(pipe2, ["a cat"] * 3, seed=5)[1]]
    b = [b.latents for b in run(pipe2, ["a cat"] * 3, seed=5)[1]]
    c = [b.latents for b in run(pipe2, ["a cat"] * 3, seed=6)[1]]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[2], c[2])


def test_a_prefixed_prompt_begins_a_shot(pipe2):
    plain = ["a cat on a sofa"] * 6
    shot = [*plain[:3], SHOT_PREFIX + "a dog in a park", "a dog in a park", "a dog in a park"]
    gen_a, a = run(pipe2, plain)
    gen_b, b = run(pipe2, shot)
    assert [x.new_shot for x in b] == [False, False, False, True, False, False]
    assert [x.shot for x in b] == [0, 0, 0, 1, 1, 1]
    assert gen_b.cache.pinned == (24, 8) and gen_b.cache.rope_offset == 8
    assert gen_a.cache.pinned is None and gen_a.cache.rope_offset == 0
    assert gen_b.recache_count == 0
    for i in range(3):
        assert torch.equal(a[i].latents, b[i].latents)
    assert not torch.equal(a[3].latents, b[3].latents)
    # the prefix on the very first chunk begins no shot (there is nothing before it)
    _, first = run(pipe2, [SHOT_PREFIX + "a dog"])
    assert not first[0].new_shot and first[0].shot == 0


def test_a_shot_prompt_in_force_for_several_chunks_is_one_shot(pipe2):
    _, a = run(pipe2, ["a cat", "a cat", SHOT_PREFIX + "a dog", SHOT_PREFIX + "a dog", SHOT_PREFIX + "a dog"])
    _, b = run(pipe2, ["a cat", "a cat", SHOT_PREFIX + "a dog", "a dog", "a dog"])
    assert [x.new_shot for x in a] == [x.new_shot for x in b] == [False, False, True, False, False]
    assert [x.shot for x in a] == [0, 0, 1, 1, 1]
    # the shot's later chunks are conditioned on the prompt without the prefix
    assert all(torch.equal(x.latents, y.latents) for x, y in zip(a, b))


def test_end_to_end_video_on_tiny2():
    from longlive_runner import load_pipeline

    pipe = load_pipeline("tiny2")
    blocks = list(pipe.stream({0: "a red circle", 16: SHOT_PREFIX + "a blue square"}, 24, seed=1))
    assert [(b.start_frame, b.num_frames, b.new_shot) for b in blocks] == [
        (0, 29, False),
        (8, 32, False),
        (16, 32, True),
    ]
    assert blocks[2].frames.shape == (32, 64, 128, 3) and blocks[2].frames.dtype == np.uint8
    assert blocks[2].frames.std() > 1.0
    # decoding streams chunk by chunk: the frames equal the whole-clip decode of the latents
    latents = torch.cat([b.latents for b in blocks], dim=2)
    whole = pipe.vae.decode(latents)
    from longlive_runner.model.vae import to_uint8

    assert np.array_equal(np.concatenate([b.frames for b in blocks]), to_uint8(whole))
    # or every chunk as a clip start: 29 video frames each, as the hosted longlive-v2 counts them
    gen = pipe.generator(seed=1, clip_start=True)
    assert [gen.generate_block("a red circle").num_frames for _ in range(2)] == [29, 29]


def test_a_plain_prompt_change_only_changes_the_cross_attention(pipe2):
    gen, blocks = run(pipe2, ["a cat"] * 2 + ["a dog"] * 2)
    _, same = run(pipe2, ["a cat"] * 4)
    assert [b.switched for b in blocks] == [False, False, True, False]
    assert gen.recache_count == 0 and gen.shot_index == 0 and gen.cache.pinned is None
    assert torch.equal(blocks[1].latents, same[1].latents)
    assert not torch.equal(blocks[2].latents, same[2].latents)
    # the K/V of the frames before the change were not rewritten: the same held frames as before
    assert sorted(held(gen.cache)) == list(range(32))


def test_shot_with_clean_recache_and_a_forced_shot(pipe2):
    pipe = latents_pipe(stream2(shot_clean_recache=True))
    gen, blocks = run(pipe, ["a cat"] * 5 + [SHOT_PREFIX + "a dog"])
    assert held(gen.cache) == frames_of(0, 5) and gen.cache.pinned == (40, 8)
    _, keep = run(latents_pipe(), ["a cat"] * 5 + [SHOT_PREFIX + "a dog"])
    assert torch.equal(blocks[5].latents, keep[5].latents)  # the drop comes after the denoising
    gen.generate_block("a dog")
    assert held(gen.cache) == frames_of(0, 5, 6)
    gen2, _ = run(pipe, ["a cat"] * 5 + ["a dog"])  # no shot: no drop
    assert held(gen2.cache) == frames_of(0, 3, 4, 5) and gen2.cache.pinned is None
    # a shot can be forced for a prompt without the prefix (e.g. a PromptEmbedding)
    g = pipe2.generator(decode=False)
    g.generate_block("a cat")
    assert g.generate_block("a dog", new_shot=True).new_shot and g.cache.pinned == (8, 8)


def test_prompt_embeddings_are_compared_by_content(pipe2):
    from longlive_runner import PromptEmbedding

    feats = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    gen = pipe2.generator(decode=False)
    gen.generate_block(PromptEmbedding(feats, "one"))
    same = gen.generate_block(PromptEmbedding(feats.clone(), "two"))
    other = gen.generate_block(PromptEmbedding(feats + 1.0, "three"))
    assert not same.switched and other.switched


def test_a_scene_cut_purges_the_memory_like_a_fresh_run(pipe2):
    draws = {"n": 0}

    def noise(shape):  # chunk i of each scene gets the same noise
        draws["n"] += 1
        return torch.randn(shape, generator=torch.Generator().manual_seed(draws["n"] % 3))

    gen = pipe2.generator(decode=False, noise=noise)
    first = [gen.generate_block("a cat") for _ in range(3)]
    cut = [gen.generate_block("a red car", scene_cut=True), gen.generate_block("a red car")]
    assert [b.scene for b in first + cut] == [0, 0, 0, 1, 1]
    assert cut[0].scene_cut and cut[0].start_frame == 0 and cut[1].start_frame == 8
    assert gen.frames_generated == 40 and gen.scene_index == 1
    draws["n"] = 0
    fresh = pipe2.generator(decode=False, noise=noise)
    f0 = fresh.generate_block("a red car")
    draws["n"] = 3
    gen2 = pipe2.generator(decode=False, noise=noise)
    for _ in range(2):
        gen2.generate_block("a cat")
    draws["n"] = 3  # the cut's chunk draws seed 1, as the fresh run's chunk 0 did
    c0 = gen2.generate_block("a red car", scene_cut=True)
    assert torch.equal(c0.latents, f0.latents)
    assert held(gen2.cache) == frames_of(0) and gen2.cache.rope_offset == 0 and gen2.shot_index == 0


def test_one_point_zero_models_refuse_shots_and_cuts(tiny_pipe):
    gen = tiny_pipe.generator()
    with pytest.raises(ValueError, match="no shots or scene cuts"):
        gen.generate_block("a cat", scene_cut=True)
    with pytest.raises(ValueError, match="no shots or scene cuts"):
        gen.generate_block("a cat", new_shot=True)
    # and a 1.0 prompt that happens to start with the 2.0 prefix is just a prompt
    gen.generate_block("a cat")
    assert not gen.generate_block(SHOT_PREFIX + "a dog").new_shot


def test_generation_continues_flat_past_many_shots_and_the_rope_table():
    """64 RoPE positions (the least the 32-frame cache allows), 30 chunks (240 latent frames) and a
    shot every 3 chunks (offsets up to 72): the cache is re-based, never reallocated, holds at most
    32 frames, and every chunk stays finite."""
    base = stream2()
    config = dataclasses.replace(base, dit=dataclasses.replace(base.dit, rope_max_positions=64))
    pipe = latents_pipe(config)
    gen = pipe.generator(decode=False)
    k_ptr, v_ptr, nbytes = gen.cache.k.data_ptr(), gen.cache.v.data_ptr(), gen.cache.nbytes()
    for c in range(30):
        prompt = SHOT_PREFIX + f"shot {c // 3}" if c % 3 == 0 and c else f"shot {c // 3}"
        block = gen.generate_block(prompt)
        assert block.latents is not None and torch.isfinite(block.latents).all()
        assert gen.cache.valid_frames <= 32 and len(gen.cache._slot_of) <= 32
        assert gen.cache.position(block.start_frame) + gen.cache.rope_offset + 8 <= 64
        if c % 3 == 0 and c:
            assert block.new_shot and gen.cache.pinned == (8 * c, 8)
    assert gen.shot_index == 9 and gen.cache.rope_offset == 72 and gen.cache.position_offset > 0
    assert (gen.cache.k.data_ptr(), gen.cache.v.data_ptr(), gen.cache.nbytes()) == (k_ptr, v_ptr, nbytes)
    assert held(gen.cache) == frames_of(0, 27, 28, 29)


# --- weights: the merged generator file and an unmerged LoRA -------------------------------------
def write_wan22_layout(root, pipe, generator: dict, lora_file: dict | None = None):
    """tiny2's weights laid out as Wan2.2-TI2V-5B/ + LongLive-2.0-5B/ are downloaded."""
    import json

    from longlive_runner.model.tokenizer import build_tiny_tokenizer

    wan, ll = root / "Wan2.2-TI2V-5B", root / "LongLive-2.0-5B"
    (wan / "google" / "umt5-xxl").mkdir(parents=True)
    ll.mkdir()
    d = pipe.config.dit
    (wan / "config.json").write_text(json.dumps({
        "_class_name": "WanModel", "model_type": "ti2v", "dim": d.dim, "ffn_dim": d.ffn_dim,
        "num_heads": d.num_heads, "num_layers": d.num_layers, "in_dim": d.in_dim, "out_dim": d.out_dim,
        "text_len": d.text_len, "freq_dim": d.freq_dim, "eps": d.eps,
    }))  # fmt: skip
    torch.save(pipe.vae.state_dict(), wan / "Wan2.2_VAE.pth")
    torch.save(pipe.text_encoder.model.state_dict(), wan / "models_t5_umt5-xxl-enc-bf16.pth")
    (wan / "google" / "umt5-xxl" / "tokenizer.json").write_text(build_tiny_tokenizer().to_str())
    torch.save(generator, ll / "model_bf16.pt")
    if lora_file is not None:
        torch.save(lora_file, ll / "lora.pt")
    return wan, ll


def peft_lora(dit_state: dict[str, torch.Tensor], layers: int, rank: int = 128) -> dict[str, torch.Tensor]:
    """A rank-128 PEFT LoRA on every Linear of every block (alpha 128: scale 1), as LongLive 2.0 trains it."""
    g = torch.Generator().manual_seed(7)
    modules = [f"{a}.{b}" for a in ("self_attn", "cross_attn") for b in "qkvo"] + ["ffn.0", "ffn.2"]
    lora = {}
    for n in range(layers):
        for mod in modules:
            out_f, in_f = dit_state[f"blocks.{n}.{mod}.weight"].shape
            lora[f"base_model.model.blocks.{n}.{mod}.lora_A.weight"] = (
                torch.randn(rank, in_f, generator=g) * 0.02
            )
            lora[f"base_model.model.blocks.{n}.{mod}.lora_B.weight"] = (
                torch.randn(out_f, rank, generator=g) * 0.02
            )
    return lora


def test_merged_and_unmerged_generators_load_into_the_same_dit(tmp_path):
    from longlive_runner import load_pipeline
    from longlive_runner.model.checkpoints import CheckpointError, wan_model_type

    pipe = latents_pipe()
    base = {k: v.clone() for k, v in pipe.dit.state_dict().items()}
    lora = peft_lora(base, pipe.config.dit.num_layers)
    assert len(lora) == 2 * 10 * pipe.config.dit.num_layers
    merged = dict(base)
    for key, a in lora.items():
        if ".lora_A." in key:
            target = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            merged[target] = base[target] + lora[key.replace("lora_A", "lora_B")] @ a
    as_file = lambda state: {f"model.{k}": v for k, v in state.items()}  # noqa: E731

    # the release file: LoRA merged, marked so
    wan, ll = write_wan22_layout(
        tmp_path / "merged",
        pipe,
        {"generator": as_file(merged), "merged_lora": True, "checkpoint_format": "x"},
    )
    a = load_pipeline("tiny2", wan_dir=wan, longlive_dir=ll)
    assert a.config.family == "longlive-2.0" and a.config.name == "tiny2"
    assert wan_model_type(wan / "config.json") == "ti2v"  # with no model named, it picks longlive2-5b
    for k, v in merged.items():
        assert torch.equal(a.dit.state_dict()[k], v), k
    # the base generator with its LoRA unmerged, in lora.pt: merged once at load
    wan, ll = write_wan22_layout(
        tmp_path / "unmerged", pipe, {"generator": as_file(base)}, {"generator_lora": lora}
    )
    b = load_pipeline("tiny2", wan_dir=wan, longlive_dir=ll)
    for k, v in merged.items():
        assert torch.allclose(b.dit.state_dict()[k], v, atol=1e-6), k
    # ... or inside the generator file itself
    wan, ll = write_wan22_layout(
        tmp_path / "inside", pipe, {"generator": as_file(base), "generator_lora": lora, "merged_lora": False}
    )
    c = load_pipeline("tiny2", wan_dir=wan, longlive_dir=ll)
    assert all(torch.allclose(c.dit.state_dict()[k], v, atol=1e-6) for k, v in merged.items())
    # the three give the same chunk
    outs = [p.generator(decode=False).generate_block("a cat").latents for p in (a, b, c)]
    assert (outs[0] - outs[1]).abs().max() < 1e-4 and (outs[0] - outs[2]).abs().max() < 1e-4
    # an unmerged generator without any LoRA is refused, naming what is missing
    wan, ll = write_wan22_layout(tmp_path / "nolora", pipe, {"generator": as_file(base)})
    with pytest.raises(CheckpointError, match="lora.pt"):
        load_pipeline("tiny2", wan_dir=wan, longlive_dir=ll)
    # a 2.0 folder asked for as a 1.0 model says which preset it is for
    with pytest.raises(CheckpointError, match="longlive2-5b"):
        load_pipeline("tiny", wan_dir=wan, longlive_dir=ll)
    with pytest.raises(CheckpointError, match="longlive_dir"):
        load_pipeline("tiny2", wan_dir=wan)


def test_stream_settings_at_load_time_and_a_pipeline_from_memory(pipe2):
    from longlive_runner import load_pipeline
    from longlive_runner.model.checkpoints import CheckpointError
    from longlive_runner.model.pipeline import pipeline_from_state_dicts

    recache = load_pipeline("tiny2", stream={"shot_clean_recache": True})
    assert recache.config.stream.shot_clean_recache and not pipe2.config.stream.shot_clean_recache
    assert not load_pipeline("tiny", stream={"global_sink": False}).config.stream.global_sink
    with pytest.raises(ValueError, match="unknown stream settings"):
        load_pipeline("tiny2", stream={"global_snk": False})
    with pytest.raises(ValueError, match="sampler"):
        load_pipeline("tiny2", stream={"sampler": "euler"})
    # the same weights handed over in memory: the same chunk, no folder written
    states = {
        "dit": pipe2.dit.state_dict(),
        "vae": pipe2.vae.state_dict(),
        "t5": pipe2.text_encoder.model.state_dict(),
    }
    again = pipeline_from_state_dicts(pipe2.config, states)
    a = pipe2.generator(decode=False).generate_block("a cat").latents
    b = again.generator(decode=False).generate_block("a cat").latents
    assert torch.equal(a, b)
    bad = dict(states, dit={k: v for k, v in states["dit"].items() if k != "head.head.weight"})
    with pytest.raises(CheckpointError, match=r"<memory:dit>: missing key 'head.head.weight'"):
        pipeline_from_state_dicts(pipe2.config, bad)


def test_convert_a_longlive2_layout_and_load_it(tmp_path):
    from longlive_runner import load_pipeline
    from longlive_runner.cli import main

    pipe = latents_pipe()
    base = {f"model.{k}": v.clone() for k, v in pipe.dit.state_dict().items()}
    wan, ll = write_wan22_layout(tmp_path, pipe, {"generator": base, "merged_lora": True})
    out = tmp_path / "tiny2-converted"
    rc = main(["convert", "--model", "tiny2", "--wan-dir", str(wan), "--longlive-dir", str(ll),
               "--out", str(out), "--dtype", "fp32", "--quiet"])  # fmt: skip
    assert rc == 0
    loaded = load_pipeline(out)
    assert loaded.config.family == "longlive-2.0" and loaded.config.stream == pipe.config.stream
    a = pipe.generator(decode=False).generate_block("a cat").latents
    b = loaded.generator(decode=False).generate_block("a cat").latents
    assert torch.equal(a, b)
