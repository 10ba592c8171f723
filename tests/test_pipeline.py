"""The block loop on the tiny preset: frame counts, determinism, prompt switches, limits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from _fresh_python import fresh_python
from longlive_runner import FrameLimitReached, load_pipeline
from longlive_runner.model.config import get_preset
from longlive_runner.model.scheduler import denoising_sigmas, denoising_timesteps


def test_warped_timesteps_match_the_published_schedule():
    stream = get_preset("longlive-1.3b").stream
    assert denoising_timesteps(stream) == pytest.approx([1000.0, 937.5, 833.3333333, 625.0])
    assert denoising_sigmas(stream) == pytest.approx([1.0, 0.9375, 0.8333333, 0.625])


def test_frame_counts_and_pixels(tiny_pipe):
    cfg = tiny_pipe.config
    blocks = list(tiny_pipe.stream({0: "a red circle"}, num_frames=9, seed=0))
    assert [b.start_frame for b in blocks] == [0, 3, 6]
    assert [b.num_frames for b in blocks] == [9, 12, 12]
    for b in blocks:
        assert b.frames.dtype == np.uint8
        assert b.frames.shape[1:] == (cfg.height, cfg.width, 3)
    # Random weights still decode to a non-constant picture.
    assert blocks[-1].frames[..., 0].std() > 1.0


def test_same_seed_same_video_other_seed_other_video(tiny_pipe):
    a = [b.frames for b in tiny_pipe.stream({0: "a red circle"}, 6, seed=3)]
    b = [b.frames for b in tiny_pipe.stream({0: "a red circle"}, 6, seed=3)]
    c = [b.frames for b in tiny_pipe.stream({0: "a red circle"}, 6, seed=4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_prompt_switch_happens_at_the_block_boundary(tiny_pipe):
    calls_before = tiny_pipe.text_encoder.calls
    schedule = {0: "a red circle zz", 7: "a blue square zz", 12: "a blue square zz"}
    blocks = list(tiny_pipe.stream(schedule, num_frames=18, seed=0))
    # 7 is inside the block [6, 9): the prompt for a block is the one at the largest timestamp <= its start.
    assert [b.prompt for b in blocks] == ["a red circle zz"] * 3 + ["a blue square zz"] * 3
    assert [b.switched for b in blocks] == [False, False, False, True, False, False]
    assert blocks[3].previous_prompt == "a red circle zz"
    # The encoder runs once per distinct prompt text.
    assert tiny_pipe.text_encoder.calls - calls_before == 2


def test_switch_changes_the_video_only_from_the_switch_on(tiny_pipe):
    same = list(tiny_pipe.stream({0: "a red circle"}, 12, seed=0))
    switched = list(tiny_pipe.stream({0: "a red circle", 6: "a green triangle"}, 12, seed=0))
    for i in range(2):
        assert np.array_equal(same[i].frames, switched[i].frames)
    assert not np.array_equal(same[2].frames, switched[2].frames)


def test_recache_runs_once_per_switch(tiny_pipe):
    gen = tiny_pipe.generator(seed=0)
    for prompt in ["one", "one", "two", "two", "three"]:
        gen.generate_block(prompt)
    assert gen.recache_count == 2


def test_reset_gives_the_same_video_as_a_fresh_generator(tiny_pipe):
    gen = tiny_pipe.generator(seed=5)
    first = [gen.generate_block("a cat").frames for _ in range(3)]
    gen.generate_block("a dog")
    gen.reset()
    again = [gen.generate_block("a cat").frames for _ in range(3)]
    assert all(np.array_equal(x, y) for x, y in zip(first, again))


def test_generation_ends_cleanly_at_the_user_limit():
    base = get_preset("tiny")
    cfg = dataclasses.replace(base, stream=dataclasses.replace(base.stream, max_latent_frames=9))
    from longlive_runner.model import pipeline as pl

    pipe = pl.random_pipeline(cfg, pl.torch.device("cpu"), pl.torch.float32, init_seed=0)
    gen = pipe.generator()
    starts = []
    while gen.finished is None:
        starts.append(gen.generate_block("x").start_frame)
    assert starts == [0, 3, 6] and gen.finished == "max_frames"
    with pytest.raises(FrameLimitReached) as info:
        gen.generate_block("x")
    assert info.value.reason == "max_frames"


def tiny_with(**fields):
    """The tiny preset with other DiT / stream numbers (random weights from the same seed)."""
    from longlive_runner.model import pipeline as pl

    base = get_preset("tiny")
    dit = {k: v for k, v in fields.items() if k in {f.name for f in dataclasses.fields(base.dit)}}
    stream = {k: v for k, v in fields.items() if k not in dit}
    cfg = dataclasses.replace(
        base, dit=dataclasses.replace(base.dit, **dit), stream=dataclasses.replace(base.stream, **stream)
    )
    return pl.random_pipeline(cfg, pl.torch.device("cpu"), pl.torch.float32, init_seed=0)


def test_no_length_cap_generation_runs_past_the_rope_table(tiny_pipe):
    """A 24-position RoPE table (a config field; LongLive's is 1024): up to its end the video is
    exactly the one with the full table (absolute positions, as LongLive); past it generation goes
    on, the window re-based, with the same cache buffers; switches work there too."""
    short = tiny_with(rope_max_positions=24)
    assert short.config.stream.max_latent_frames is None
    schedule = {0: "a red circle", 30: "a blue square", 45: "a green triangle"}
    ref = {b.start_frame: b.frames for b in tiny_pipe.stream(schedule, 24, seed=2)}
    gen = short.generator(seed=2)
    buffers = gen.cache.k.data_ptr(), gen.cache.v.data_ptr()
    starts, positions = [], []
    prompts = sorted(schedule)
    while gen.current_start_frame < 54:  # 18 blocks, the table ends at frame 24
        s = gen.current_start_frame
        block = gen.generate_block(schedule[max(t for t in prompts if t <= s)])
        starts.append(block.start_frame)
        positions.append(gen.cache.position(s))
        if s < 24:
            assert np.array_equal(block.frames, ref[s]), f"block {s} differs before the table's end"
        assert np.isfinite(block.frames).all() and block.frames.std() > 1.0
    assert starts == list(range(0, 54, 3)) and gen.finished is None and gen.recache_count == 2
    assert max(positions) + 3 <= 24 and gen.cache.position_offset > 0
    assert (gen.cache.k.data_ptr(), gen.cache.v.data_ptr()) == buffers  # flat memory
    assert positions[:8] == list(range(0, 24, 3))  # exact positions up to the table's end


def test_rebasing_a_local_sink_changes_nothing():
    """With `global_sink = false`, after a switch at s > 12 no key is pinned: a re-base shifts every
    held key alike, and RoPE attention only sees differences of positions, so the video past the
    table is the one a long table gives (to float rounding): the rotation is right in the live path."""
    import torch

    schedule = {0: "a red circle", 15: "a blue square"}  # the switch restarts the sink at frames 3-5
    long = tiny_with(global_sink=False)
    short = tiny_with(global_sink=False, rope_max_positions=24)
    ref = [b.latents for b in long.stream(schedule, 45, seed=4)]  # two re-bases: at frames 24 and 36
    gen = short.generator(seed=4)
    for i, want in enumerate(ref):
        got = gen.generate_block(schedule[max(t for t in schedule if t <= 3 * i)]).latents
        assert got is not None and want is not None
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4, msg=lambda m, i=i: f"block {i}: {m}")
    assert gen.cache.position_offset > 0 and not gen.cache.sink_pinned


def test_research_hooks(tiny_pipe):
    """Block.latents, a pluggable noise source (initial + 3 re-noise draws per block, in order) and
    precomputed text features standing in for a prompt."""
    import torch

    from longlive_runner import PromptEmbedding

    seeded = list(tiny_pipe.stream({0: "a red circle"}, 6, seed=7))
    assert seeded[0].latents is not None and seeded[0].latents.shape[2] == 3

    # the same draws handed in by a callable reproduce the seeded video bit for bit
    draws: list[tuple[int, ...]] = []
    g = torch.Generator().manual_seed(7)

    def noise(shape: tuple[int, ...]) -> torch.Tensor:
        draws.append(shape)
        return torch.randn(shape, generator=g)

    custom = list(tiny_pipe.stream({0: "a red circle"}, 6, noise=noise))
    assert len(draws) == 2 * 4  # per block: the initial noise + 3 re-noise draws
    for a, b in zip(seeded, custom):
        assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    # a generator object works too; zero noise gives another video
    from_gen = list(tiny_pipe.stream({0: "a red circle"}, 6, noise=torch.Generator().manual_seed(7)))
    assert torch.equal(from_gen[1].latents, seeded[1].latents)
    zeros = list(tiny_pipe.stream({0: "a red circle"}, 6, noise=lambda shape: torch.zeros(shape)))
    assert not torch.equal(zeros[1].latents, seeded[1].latents)

    # text features in place of the prompt: the encoder is bypassed, the video is the same
    feats = tiny_pipe.text_encoder.encode("a red circle")[0]
    calls = tiny_pipe.text_encoder.calls
    n_real = int((feats.abs().sum(-1) > 0).sum())  # the rows past the prompt's tokens are zero
    assert 0 < n_real < feats.shape[0]
    emb = PromptEmbedding(feats[:n_real], label="red circle, 5 rows")  # padded back with zeros
    embedded = list(tiny_pipe.stream({0: emb}, 6, seed=7))
    assert tiny_pipe.text_encoder.calls == calls and str(embedded[0].prompt) == "red circle, 5 rows"
    assert all(torch.equal(a.latents, b.latents) for a, b in zip(seeded, embedded))
    with pytest.raises(ValueError, match="PromptEmbedding.features"):
        tiny_pipe.generator().generate_block(PromptEmbedding(torch.zeros(3, 7)))
    with pytest.raises(ValueError, match="noise source returned"):
        tiny_pipe.generator(noise=lambda shape: torch.zeros(2)).generate_block("x")


def test_stream_needs_a_prompt_at_zero(tiny_pipe):
    with pytest.raises(ValueError, match="frame 0"):
        next(tiny_pipe.stream({3: "late"}, 6))


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="models"):
        load_pipeline("no-such-model")


def test_real_preset_without_weights_says_how_to_get_them():
    from longlive_runner import CheckpointError

    with pytest.raises(CheckpointError, match="download"):
        load_pipeline("longlive-1.3b")


def test_building_on_meta_runs_no_random_init() -> None:
    """Loaders build the models on the meta device. A random op on a meta tensor runs torch's
    Python reference kernels, whose first use imports torch._dynamo (~800 modules, 2-3 s per
    process), so the models must not init on meta. Checked in a fresh interpreter."""
    code = (
        "import sys, torch\n"
        "from longlive_runner.model.config import get_preset\n"
        "from longlive_runner.model.pipeline import build_modules\n"
        "for name in ('longlive-1.3b', 'tiny'):\n"
        "    dit, vae, t5 = build_modules(get_preset(name))\n"
        "    assert next(dit.parameters()).is_meta and next(t5.parameters()).is_meta\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'sympy'))))\n"
    )
    assert fresh_python(code) == "[]"


def test_the_old_name_of_frame_limit_reached_still_imports_with_a_warning() -> None:
    import longlive_runner

    with pytest.warns(DeprecationWarning, match="FrameLimitReached"):
        old = longlive_runner.GenerationFinished
    assert old is FrameLimitReached
