"""The block loop on the tiny preset: frame counts, determinism, prompt switches, limits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from _fresh_python import fresh_python
from longlive_runner import GenerationFinished, load_pipeline
from longlive_runner.config import get_preset
from longlive_runner.scheduler import denoising_sigmas, denoising_timesteps


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


def test_generation_ends_cleanly_at_the_rope_limit():
    base = get_preset("tiny")
    cfg = dataclasses.replace(base, stream=dataclasses.replace(base.stream, max_latent_frames=9))
    from longlive_runner import pipeline as pl

    pipe = pl.random_pipeline(cfg, pl.torch.device("cpu"), pl.torch.float32, seed=0)
    gen = pipe.generator()
    starts = []
    while gen.finished is None:
        starts.append(gen.generate_block("x").start_frame)
    assert starts == [0, 3, 6] and gen.finished == "max_frames"
    with pytest.raises(GenerationFinished) as info:
        gen.generate_block("x")
    assert info.value.reason == "max_frames"


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
        "from longlive_runner.config import get_preset\n"
        "from longlive_runner.pipeline import build_modules\n"
        "for name in ('longlive-1.3b', 'tiny'):\n"
        "    dit, vae, t5 = build_modules(get_preset(name))\n"
        "    assert next(dit.parameters()).is_meta and next(t5.parameters()).is_meta\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'sympy'))))\n"
    )
    assert fresh_python(code) == "[]"
