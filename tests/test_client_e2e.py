"""The client end to end against the tiny model, over both transports with ONE test suite.

- "websocket": `longlive-runner serve --model tiny` as a real subprocess (the shared
  `runner_url` fixture, one runner for this module; every test starts with a `reset`);
- "local": `Reactor.local(...)`, the runner in this process (a second client attaches to the
  same `Runner`);
- "cluster": `longlive-runner cluster --workers 2 --model demo` on a local Ray cluster
  (tests/_cluster_process.py, skipped without Ray): the first client of a test gets a session of
  its own, the others join it by id (`Reactor(url, session=...)`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from _frames import take
from _runner_process import runner_options
from longlive import (
    CommandError,
    ConnectionClosedError,
    Progress,
    PromptSwitched,
    Reactor,
    latent_to_video_frame,
)

pytestmark = pytest.mark.slow

OpenClient = Callable[..., Awaitable[Reactor]]
FIRST, LATER = 9, 12  # video frames of the first block and of every later one


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------
#: The "websocket" transport's runner: `runner_process` / `runner_url` (tests/_runner_process.py).
RUNNER_OPTIONS = runner_options("--device", "cpu", "--grace-period", "off", env={"OMP_NUM_THREADS": "1"})


#: The model each transport's runner serves.
PRESETS = {"websocket": "tiny", "local": "tiny", "cluster": "demo"}


@pytest.fixture(params=["websocket", "local", "cluster"])
async def open_client(request: pytest.FixtureRequest) -> AsyncIterator[OpenClient]:
    """`await open_client(**reactor_options)`: a connected client of a clean session.

    Every client of one test talks to the same runner (so two of them share one session).
    """
    clients: list[Reactor] = []
    kind = request.param

    async def open_one(**options: Any) -> Reactor:
        options.setdefault("command_timeout", 20.0)
        if kind == "websocket":
            reactor = Reactor(request.getfixturevalue("runner_url"), **options)
        elif kind == "cluster":  # a session of its own for the test; its other clients join it
            session = clients[0].session_id if clients else None
            options.setdefault("queue_timeout", 60.0)  # an earlier test's session may linger
            reactor = Reactor(request.getfixturevalue("cluster_url"), session=session, **options)
        elif not clients:
            reactor = Reactor.local(pipeline=request.getfixturevalue("tiny_pipe"), **options)
        else:
            reactor = Reactor.local(runner=clients[0].runner, **options)
        clients.append(reactor)
        await reactor.connect()
        if len(clients) == 1:
            await reactor.reset()  # a clean session (the websocket runner is shared by the module)
        return reactor

    open_one.kind = kind  # type: ignore[attr-defined]
    yield open_one
    for reactor in reversed(clients):  # the first local client owns the runner: it closes last
        if reactor.connected:
            try:
                await reactor.reset()
            except Exception:
                pass
        await reactor.close()


# ----------------------------------------------------------------------------------------------
# The shared suite
# ----------------------------------------------------------------------------------------------
async def test_two_prompts_frames_progress_and_switch(open_client: OpenClient) -> None:
    reactor = await open_client()
    assert reactor.hello.model == "longlive" and reactor.hello.frames_per_block == 3
    assert reactor.hello.preset == PRESETS[open_client.kind]  # type: ignore[attr-defined]
    progress: list[int] = []
    switches: list[PromptSwitched] = []
    reactor.on_progress(lambda p: progress.append(p.current_start_frame))

    @reactor.on("prompt_switched")
    async def switched(msg: PromptSwitched) -> None:
        switches.append(msg)

    first = await reactor.schedule_prompt("a red circle", timestamp=0)
    second = await reactor.schedule_prompt("a blue square", timestamp=6)
    assert (first.effective_frame, second.effective_frame, second.effective_video_frame) == (0, 6, 21)
    assert reactor.state.scheduled_prompts == {0: "a red circle", 6: "a blue square"}
    await reactor.start()

    frames = await take(reactor, FIRST + 3 * LATER)  # blocks 0, 3, 6, 9
    await reactor.pause()
    assert [f.index for f in frames] == list(range(len(frames))), "no frame lost or reordered"
    per_block = Counter(f.start_frame for f in frames)
    assert per_block == {0: FIRST, 3: LATER, 6: LATER, 9: LATER}
    assert all(f.frames_in_block == per_block[f.start_frame] for f in frames)
    h, w = reactor.hello.height, reactor.hello.width
    assert frames[0].image.shape == (h, w, 3) and frames[0].image.dtype.name == "uint8"
    await reactor.wait_for_frame(12)
    assert progress[:5] == [0, 3, 6, 9, 12]
    assert len(switches) == 1
    sw = switches[0]
    assert (sw.frame, sw.video_frame, sw.new_prompt, sw.previous_prompt) == (
        6,
        21,
        "a blue square",
        "a red circle",
    )
    assert reactor.frames_dropped == 0


async def test_pause_and_resume(open_client: OpenClient) -> None:
    reactor = await open_client()
    # Frames and replies in the order the runner sent them (sync callbacks run in the reader).
    log: list[tuple[str, Any]] = []
    reactor.on_frame(lambda f: log.append(("frame", f.start_frame)))
    reactor.on("ack", lambda a: log.append(("ack", a.command)))
    await reactor.schedule_prompt("a red circle", 0)
    await reactor.start()
    await reactor.wait_for_frame(3, timeout=30)
    stop_at = (await reactor.pause()).effective_frame
    assert reactor.state.paused and reactor.state.running
    await reactor.wait_for_frame(stop_at, timeout=30)  # the block in flight completed
    with pytest.raises(CommandError) as info:
        await reactor.pause()
    assert info.value.code == "already_paused"
    # Nothing may be generated while paused. The runner plans its next block as soon as it sent
    # a block's progress, so by now it has decided; had it started block `stop_at`, that block
    # would be decided and a prompt at `stop_at` re-keyed past it.
    probe = await reactor.schedule_prompt("a red circle", stop_at)
    assert (probe.timestamp, probe.effective_frame, probe.rekeyed) == (stop_at, stop_at, False)
    assert (await reactor.resume()).current_start_frame == stop_at  # no block completed either
    assert not reactor.state.paused
    assert await reactor.wait_for_frame(stop_at + 6, timeout=30) >= stop_at + 6
    # And none was sent: every frame before resume's reply is from before the pause point; the
    # first after it starts the block at `stop_at`.
    resumed = log.index(("ack", "resume"))
    before = [s for kind, s in log[:resumed] if kind == "frame"]
    after = [s for kind, s in log[resumed:] if kind == "frame"]
    assert max(before) < stop_at and after[0] == stop_at


async def test_reset_leaves_no_old_frames(open_client: OpenClient) -> None:
    reactor = await open_client(max_buffered_frames=200)
    await reactor.schedule_prompt("a red circle", 0)
    await reactor.start()
    await reactor.wait_for_frame(9, timeout=30)  # frames are buffered, unread
    assert reactor.frames_buffered > 0
    old = reactor.generation
    new = (await reactor.reset()).generation
    assert new == old + 1 == reactor.generation
    assert reactor.frames_buffered == 0
    state = reactor.state
    assert (state.running, state.current_start_frame, state.scheduled_prompts) == (False, 0, {})
    await reactor.schedule_prompt("a blue square", 0)
    await reactor.start()
    # A block of the old video that was in flight must not show up. The runner finishes it before
    # it starts the new video, so any of its frames that got through would be read here first.
    frames = await take(reactor, FIRST)
    assert [f.index for f in frames] == list(range(FIRST))
    assert {f.generation for f in frames} == {new}


async def test_remove_prompt_and_refusals(open_client: OpenClient) -> None:
    reactor = await open_client()
    with pytest.raises(CommandError) as info:
        await reactor.start()
    assert info.value.code == "no_initial_prompt" and info.value.command == "start"
    await reactor.schedule_prompt("a red circle", 0)
    await reactor.schedule_prompt("a blue square", 300)
    removed = await reactor.remove_prompt(300)
    assert (removed.timestamp, removed.removed_prompt) == (300, "a blue square")
    assert reactor.state.scheduled_prompts == {0: "a red circle"}
    with pytest.raises(CommandError) as info:
        await reactor.remove_prompt(300)
    assert info.value.code == "no_such_prompt"
    with pytest.raises(CommandError) as info:
        await reactor.schedule_prompt("   ", 3)
    assert info.value.code == "empty_prompt"
    with pytest.raises(CommandError) as info:
        await reactor.schedule_prompt("x", reactor.hello.max_frames + 1)  # past the announced limit
    assert info.value.code == "bad_timestamp"
    with pytest.raises(CommandError) as info:
        await reactor.resume()
    assert info.value.code == "not_running"
    await reactor.start()
    with pytest.raises(CommandError) as info:
        await reactor.start()
    assert info.value.code == "already_running"
    with pytest.raises(CommandError) as info:
        await reactor.remove_prompt(0)
    assert info.value.code == "already_applied"
    with pytest.raises(CommandError) as info:
        await reactor.send_message("teleport", {})
    assert info.value.code == "unknown_type"


async def test_two_clients_share_one_session(open_client: OpenClient) -> None:
    alice = await open_client()
    bob = await open_client()
    bob_progress: list[Progress] = []
    bob.on_progress(bob_progress.append)
    bob_sees = asyncio.create_task(
        bob.wait_for("state", lambda s: s.scheduled_prompts == {0: "a red circle"}, timeout=10)
    )
    await asyncio.sleep(0)
    await alice.schedule_prompt("a red circle", 0)
    await bob_sees  # broadcasts reach every client
    await bob.start()  # either client may drive the shared session
    alice_frames, bob_frames = await asyncio.gather(take(alice, FIRST + LATER), take(bob, FIRST + LATER))
    assert [f.index for f in alice_frames] == [f.index for f in bob_frames] == list(range(FIRST + LATER))
    for a, b in zip(alice_frames, bob_frames, strict=True):
        assert (a.image == b.image).all()
    await alice.pause()
    assert bob_progress[0].current_start_frame == 0
    with pytest.raises(CommandError) as info:  # the refusal goes to bob only, as a reply
        await bob.pause()
    assert info.value.code == "already_paused"


async def test_record_mp4(open_client: OpenClient, tmp_path: Path) -> None:
    from longlive.video import read_video

    reactor = await open_client()
    await reactor.schedule_prompt("a red circle", 0)
    path = tmp_path / "clip.mp4"
    saving = asyncio.create_task(reactor.save_mp4(path, until=9, timeout=30))
    await asyncio.sleep(0)
    await reactor.start()
    rec = await saving
    await reactor.pause()
    expected = latent_to_video_frame(9)  # 9 + 12 + 12 = 33
    assert rec.frames_written == expected
    video = read_video(path)
    assert video.shape == (expected, reactor.hello.height, reactor.hello.width, 3)


async def test_reconnect_resyncs_state(open_client: OpenClient) -> None:
    reactor = await open_client()
    await reactor.schedule_prompt("a red circle", 0)
    await reactor.schedule_prompt("a blue square", 9)
    await reactor.reconnect()
    assert reactor.connected
    assert reactor.state.scheduled_prompts == {0: "a red circle", 9: "a blue square"}
    await reactor.start()
    frames = await take(reactor, FIRST)
    assert [f.index for f in frames] == list(range(FIRST))


# ----------------------------------------------------------------------------------------------
# One transport only
# ----------------------------------------------------------------------------------------------
async def test_local_loads_the_model_itself_and_drop_is_typed() -> None:
    async with Reactor.local(model="tiny", device="cpu") as reactor:
        assert reactor.hello.height == 64 and reactor.hello.width == 112
        await reactor.schedule_prompt("a red circle", 0)
        await reactor.start()
        assert len(await take(reactor, FIRST)) == FIRST
        await reactor.runner.close()  # the runner goes away under the client
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(_drain(reactor), 30)
        assert info.value.code == 1001
        assert reactor.status == "disconnected"


async def _drain(reactor: Reactor) -> None:
    async for _ in reactor.frames():
        pass


def test_health_endpoint(runner_url: str) -> None:
    health = httpx.get(runner_url.replace("ws://", "http://") + "/health", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
