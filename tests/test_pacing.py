"""Real-time pacing: the I/O-free `Pacer`, then the hub generating at video speed (tiny model)."""

from __future__ import annotations

import asyncio
import json

import pytest

from longlive_runner.serving.hub import Runner
from longlive_runner.serving.pacing import Pacer

FPS = 16


def test_a_fast_model_waits_to_stay_within_the_lead() -> None:
    p = Pacer(FPS, lead_frames=24)
    assert p.wait(0.0, 9) == 0  # nothing played yet: the first block goes at once
    p.block_done(1.0, 9)  # playback starts with the first frames
    assert p.wait(1.0, 12) == 0  # 9 + 12 <= 24 ahead
    p.block_done(1.1, 21)
    # 21 + 12 = 33 frames: 9 over the lead, due once 9 frames have played (0.5625 s after 1.0).
    assert p.wait(1.1, 12) == pytest.approx((33 - 24 - 1.6) / FPS)
    assert p.wait(1.0 + 9 / FPS, 12) == 0
    assert p.lead(1.0 + 9 / FPS) == pytest.approx(12)
    # In steady state: a block starts every 12 frames' time, the lead stays within 24.
    now, generated = 1.0 + 9 / FPS, 21
    for _ in range(50):
        now += p.wait(now, 12)
        assert p.wait(now, 12) == 0
        now += 0.05  # the model: 50 ms a block, 15x faster than real time
        generated += 12
        p.block_done(now, generated)
        assert 12 - 1e-9 <= p.lead(now) <= 24 + 1e-9
    assert p.stalls == 0
    assert generated - p.due(now) <= 24


def test_a_slow_model_never_waits_and_its_stalls_restart_the_clock() -> None:
    p = Pacer(FPS, lead_frames=24)
    p.block_done(0.0, 9)
    now, generated = 0.0, 9
    for _ in range(10):  # 1.5 s a block of 0.75 s: slower than real time
        now += 1.5
        assert p.wait(now, 12) == 0
        generated += 12
        p.block_done(now, generated)
        assert p.lead(now) == pytest.approx(12)  # playback goes on from the new frames
    assert p.stalls == 10


def test_after_a_pause_generation_does_not_race_ahead() -> None:
    p = Pacer(FPS, lead_frames=24)
    p.block_done(0.0, 9)
    p.block_done(0.1, 21)
    # paused for 60 s: playback ran dry long ago; the next block starts at once ...
    assert p.wait(60.0, 12) == 0
    p.block_done(60.2, 33)
    # ... and the clock restarted from it: at most the lead ahead again, not 60 s of catch-up.
    assert p.lead(60.2) == pytest.approx(12)
    assert p.wait(60.2, 12) == 0
    p.block_done(60.3, 45)
    assert p.wait(60.3, 12) > 0


def test_fast_pace_never_waits_and_reset_starts_over() -> None:
    p = Pacer(FPS, lead_frames=None)
    assert not p.paced
    for i in range(20):
        p.block_done(i * 0.01, 9 + 12 * i)
        assert p.wait(i * 0.01, 12) == 0
    p = Pacer(FPS, lead_frames=24)
    p.block_done(0.0, 9)
    p.block_done(0.0, 21)
    assert p.wait(0.0, 12) > 0
    p.reset()
    assert p.generated == 0 and p.wait(0.0, 9) == 0
    with pytest.raises(ValueError):
        Pacer(0, 24)
    with pytest.raises(ValueError):
        Pacer(FPS, 0)


async def _run_for(runner: Runner, seconds: float) -> tuple[int, float]:
    """Start a video on `runner`; (video frames received, seconds since the first frame) after
    `seconds` of playback."""
    conn = runner.connect_local()
    await conn.send_text(json.dumps({"type": "schedule_prompt", "data": {"new_prompt": "a", "timestamp": 0}}))
    await conn.send_text(json.dumps({"type": "start", "data": {}}))
    loop = asyncio.get_running_loop()
    frames, first = 0, None
    while True:
        item = await asyncio.wait_for(conn.recv(), 60)
        if isinstance(item, tuple):
            frames += 1
            first = loop.time() if first is None else first
        if first is not None and loop.time() - first >= seconds:
            break
    elapsed = loop.time() - first
    await conn.close()
    return frames, elapsed


async def test_the_realtime_runner_stays_within_its_lead_of_playback(tiny_pipe) -> None:
    async with Runner(tiny_pipe, pace="realtime", grace_period=None) as runner:
        assert runner.info()["pace"] == "realtime" and runner.info()["lead_frames"] == 24
        frames, elapsed = await _run_for(runner, 2.0)
    # At most the lead (2 blocks) and the block in flight ahead of playback, however fast the model.
    assert frames <= elapsed * 16 + 24 + 12, (frames, elapsed)
    assert runner.pacer.lead_frames == 24


async def test_the_fast_runner_does_not_wait(tiny_pipe) -> None:
    async with Runner(tiny_pipe, grace_period=None) as runner:
        assert runner.info()["pace"] == "fast" and runner.info()["lead_frames"] is None
        assert runner.pacer.wait(0.0, 12) == 0
    with pytest.raises(ValueError, match="pace must be one of realtime, fast"):
        Runner(tiny_pipe, pace="slow")
