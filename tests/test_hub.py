"""The runner hub through its in-process transport (`Runner.connect_local()`), tiny model."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from _poll import eventually
from longlive.errors import ConnectionClosedError
from longlive.protocol import FrameHeader, Limits
from longlive_runner.serving.hub import LocalConnection, Runner

A, B = "a red fox in the snow", "a blue whale in the sea"
SEED = 5
TIMEOUT = 60.0  # per message: a tiny block takes well under a second, even on a loaded CI box

Item = dict[str, Any] | tuple[FrameHeader, np.ndarray]


# --- helpers -----------------------------------------------------------------------------------------
async def recv(conn: LocalConnection, timeout: float = TIMEOUT) -> Item:
    item = await asyncio.wait_for(conn.recv(), timeout)
    return json.loads(item) if isinstance(item, str) else item


async def until(conn: LocalConnection, pred: Callable[[Item], bool], timeout: float = TIMEOUT) -> list[Item]:
    """Every item received up to and including the first one matching `pred`."""
    items: list[Item] = []
    while True:
        item = await recv(conn, timeout)
        items.append(item)
        if pred(item):
            return items


async def send(conn: LocalConnection, type: str, id: str | None = None, **data: Any) -> None:
    msg: dict[str, Any] = {"type": type, "data": data}
    if id is not None:
        msg["id"] = id
    await conn.send_text(json.dumps(msg))


async def greeted(conn: LocalConnection) -> LocalConnection:
    assert (await recv(conn))["type"] == "hello"
    assert (await recv(conn))["type"] == "state"
    return conn


def is_type(item: Item, type: str, **data: Any) -> bool:
    return (
        isinstance(item, dict)
        and item["type"] == type
        and all(item["data"].get(k) == v for k, v in data.items())
    )


def is_reply(item: Item, id: str) -> bool:
    return isinstance(item, dict) and item.get("id") == id


def frames_of(items: list[Item]) -> list[tuple[FrameHeader, np.ndarray]]:
    return [i for i in items if isinstance(i, tuple)]


def texts_of(items: list[Item], type: str) -> list[dict[str, Any]]:
    return [i for i in items if is_type(i, type)]


def one_reply(items: list[Item], id: str) -> dict[str, Any]:
    replies = [i for i in items if is_reply(i, id)]
    assert len(replies) == 1, items
    return replies[0]  # type: ignore[return-value]


class Gate:
    """Holds the generator's `call`-th block (1-based) until `release` is set."""

    def __init__(self, runner: Runner, monkeypatch: pytest.MonkeyPatch, call: int) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0
        original = runner.generator.generate_block

        def gated(prompt: str):
            self.calls += 1
            if self.calls == call:
                self.entered.set()
                assert self.release.wait(TIMEOUT)
            return original(prompt)

        monkeypatch.setattr(runner.generator, "generate_block", gated)

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, TIMEOUT)


@pytest.fixture(scope="module")
def reference(tiny_pipe) -> np.ndarray:
    """The offline video of the schedule {0: A, 3: B}, seed SEED: 4 blocks, 45 frames."""
    return np.concatenate([b.frames for b in tiny_pipe.stream({0: A, 3: B}, 12, seed=SEED)])


# --- tests -------------------------------------------------------------------------------------------
async def test_connect_sends_hello_then_state(tiny_pipe) -> None:
    async with Runner(tiny_pipe) as runner:
        conn = runner.connect_local()
        hello, state = await recv(conn), await recv(conn)
        assert hello["type"] == "hello" and state["type"] == "state"
        h = hello["data"]
        assert (h["protocol_version"], h["model"], h["height"], h["width"]) == (1, "longlive", 64, 112)
        assert (h["video_frames_first_block"], h["video_frames_per_block"]) == (9, 12)
        assert state["data"]["running"] is False and state["data"]["generation"] == 0
        thread = runner.generation_thread
        assert thread is not None and thread.is_alive() and thread is not threading.current_thread()
        await conn.close()
        with pytest.raises(ConnectionClosedError):
            await conn.recv()
    assert not thread.is_alive()  # close() ends the generation thread


async def test_a_run_streams_blocks_pauses_resumes_and_matches_offline(tiny_pipe, reference) -> None:
    async with Runner(tiny_pipe, limits=Limits(max_frames=12)) as runner:
        conn = await greeted(runner.connect_local())
        await send(conn, "schedule_prompt", "a", new_prompt=A, timestamp=0)
        await send(conn, "schedule_prompt", "b", new_prompt=B, timestamp=3)
        await send(conn, "start", "go", seed=SEED)
        items = await until(conn, lambda i: is_type(i, "progress", current_start_frame=6))
        assert one_reply(items, "go")["data"] == {"command": "start", "generation": 0, "seed": SEED}

        # Block 6 is being generated: pause lets it finish, and nothing starts after it.
        await send(conn, "pause", "p")
        items += await until(conn, lambda i: is_reply(i, "p"))
        assert one_reply(items, "p")["data"]["effective_frame"] == 9
        items += await until(conn, lambda i: is_type(i, "state", paused=True, current_start_frame=9))
        assert not runner.generating and runner.session.in_progress is None

        await send(conn, "resume", "r")
        items += await until(conn, lambda i: is_type(i, "generation_finished"))
        items += await until(conn, lambda i: is_type(i, "state"))
        assert one_reply(items, "r")["data"]["current_start_frame"] == 9
        assert texts_of(items, "generation_finished")[0]["data"]["reason"] == "max_frames"
        assert items[-1]["data"]["finished"] == "max_frames"  # type: ignore[index]

    frames = frames_of(items)
    headers = [h for h, _ in frames]
    assert [h.video_frame for h in headers] == list(range(45))
    sizes = {s: sum(h.block_start_frame == s for h in headers) for s in (0, 3, 6, 9)}
    assert sizes == {0: 9, 3: 12, 6: 12, 9: 12}
    assert all(h.frames_in_block == sizes[h.block_start_frame] and h.generation == 0 for h in headers)
    assert all(
        rgb.shape == (64, 112, 3) and rgb.dtype == np.uint8 and not rgb.flags.writeable for _, rgb in frames
    )
    # Seeded, paused and resumed: the same video, frame for frame, as the offline generator.
    np.testing.assert_array_equal(np.stack([rgb for _, rgb in frames]), reference)

    # progress 0, 3, 6, 9, 12; each after every frame of the block before it and before the next block.
    progress = [(n, i) for n, i in enumerate(items) if is_type(i, "progress")]
    assert [i["data"]["current_start_frame"] for _, i in progress] == [0, 3, 6, 9, 12]  # type: ignore[index]
    for pos, msg in progress:
        sent = frames_of(items[:pos])
        assert len(sent) == msg["data"]["video_frame"]  # type: ignore[index]
    # The switch to B is announced after block 3's frames, before its progress.
    (switch,) = texts_of(items, "prompt_switched")
    assert switch["data"] == {
        "frame": 3,
        "video_frame": 9,
        "new_prompt": B,
        "previous_prompt": A,
        "generation": 0,
    }
    at = items.index(switch)
    assert frames_of(items[:at])[-1][0].video_frame == 20 and is_type(
        items[at + 1], "progress", current_start_frame=6
    )


async def test_reset_drops_the_block_in_progress_and_queued_frames(tiny_pipe, reference, monkeypatch) -> None:
    async with Runner(tiny_pipe, limits=Limits(max_frames=6)) as runner:
        gate = Gate(runner, monkeypatch, call=2)  # hold block 3 of the first run
        conn = await greeted(runner.connect_local())
        idle = runner.connect_local()  # connected, never reads until the end
        await send(conn, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(conn, "start", seed=SEED)
        await until(conn, lambda i: is_type(i, "progress", current_start_frame=3))
        await gate.wait_entered()

        # The loop never waits for torch: commands are answered while block 3 is held.
        assert runner.generating
        await send(conn, "get_state", "s")
        assert (await until(conn, lambda i: is_reply(i, "s")))[-1]["data"]["current_start_frame"] == 3  # type: ignore[index]
        assert idle.queued_frames == 9

        await send(conn, "reset", "x")
        acked = await until(conn, lambda i: is_reply(i, "x"))
        assert acked[-1]["data"] == {"command": "reset", "generation": 1}  # type: ignore[index]
        assert idle.queued_frames == 0  # stale frames are not delivered late

        await send(conn, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(conn, "schedule_prompt", new_prompt=B, timestamp=3)
        await send(conn, "start", seed=SEED)
        gate.release.set()
        after = await until(conn, lambda i: is_type(i, "generation_finished", reason="max_frames"))
        # `idle` read nothing: each `state` superseded the one before it, so it gets the last one only.
        late = await until(idle, lambda i: is_type(i, "state", finished="max_frames"))
        assert len(texts_of(late, "state")) == 1 and idle.peer.states_superseded > 5

    # After the reset's ack: its own `generation_finished` (reason "reset", old generation), then
    # only generation 1. Nothing of block 3 of the first run was ever sent.
    for items in (after, late):
        cut = next(n for n, i in enumerate(items) if is_type(i, "generation_finished", reason="reset"))
        assert not frames_of(items[:cut]) and not texts_of(items[:cut], "prompt_switched")
        assert all(m["data"]["current_start_frame"] <= 3 for m in texts_of(items[:cut], "progress"))
        for kind in ("state", "progress", "prompt_switched", "generation_finished"):
            rest = texts_of(items[cut + 1 :], kind)
            assert rest and all(m["data"]["generation"] == 1 for m in rest), kind
    for items in (after, late):
        assert [h.generation for h, _ in frames_of(items)] == [1] * 21
        np.testing.assert_array_equal(np.stack([rgb for _, rgb in frames_of(items)]), reference[:21])
    for items in (after, late):
        assert [m["data"]["reason"] for m in texts_of(items, "generation_finished")] == [
            "reset",
            "max_frames",
        ]


async def test_replies_go_to_the_sender_broadcasts_to_everyone(tiny_pipe) -> None:
    async with Runner(tiny_pipe) as runner:
        a, b = await greeted(runner.connect_local()), await greeted(runner.connect_local())

        await send(a, "schedule_prompt", "s1", new_prompt=A, timestamp=0)
        assert [m["type"] for m in [await recv(a), await recv(a)]] == ["ack", "state"]  # type: ignore[index]
        assert (await recv(b))["type"] == "state" and b.peer.queued_texts == 0  # type: ignore[index]

        # A malformed message never kills the session; without a readable id the refusal is broadcast.
        await b.send_text("{not json")
        for conn in (a, b):
            err = await recv(conn)
            assert err["type"] == "command_error" and err["data"]["code"] == "bad_json" and "id" not in err  # type: ignore[index]
        await send(b, "start", "bad", seed=-1)
        err = await recv(b)
        assert (err["id"], err["data"]["code"]) == ("bad", "bad_field") and a.peer.queued_texts == 0  # type: ignore[index]
        await a.send_bytes(b"\x00\x01")
        for conn in (a, b):
            assert (await recv(conn))["data"]["code"] == "unexpected_binary"  # type: ignore[index]

        await send(b, "get_state", "g")
        state = await recv(b)
        assert state["id"] == "g" and state["data"]["scheduled_prompts"] == {"0": A}  # type: ignore[index]
        assert len(runner.peers) == 2
        await a.close()
        assert len(runner.peers) == 1
        with pytest.raises(ConnectionClosedError):
            await a.send_text('{"type": "get_state"}')


async def test_a_slow_peer_loses_oldest_frames_and_never_slows_the_others(tiny_pipe) -> None:
    async with Runner(tiny_pipe, limits=Limits(max_frames=6), max_queued_frames=12) as runner:
        fast = await greeted(runner.connect_local())
        slow = runner.connect_local()  # reads nothing while the video is generated
        await send(fast, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(fast, "start")
        got = await until(fast, lambda i: is_type(i, "generation_finished"))
        assert len(frames_of(got)) == 21 and fast.frames_dropped == 0
        assert slow.queued_frames == 12 and slow.frames_dropped == 9

        late = await until(slow, lambda i: is_type(i, "generation_finished"))
    (dropped,) = texts_of(late, "frames_dropped")
    assert dropped["data"] == {"count": 9, "total": 9}
    # Reported where the gap is: after the messages queued before the dropped frames.
    at = late.index(dropped)
    assert not frames_of(late[:at]) and is_type(late[at + 1], "progress", current_start_frame=3)
    assert [h.video_frame for h, _ in frames_of(late)] == list(range(9, 21))
    # Every text message reached the slow peer too, in the same order, but `state` snapshots that a
    # newer one superseded while unsent.
    texts = [m for m in late if isinstance(m, dict) and m["type"] not in ("hello", "frames_dropped")]
    sent = [m for m in got if isinstance(m, dict)]
    assert [m for m in texts if m["type"] != "state"] == [m for m in sent if m["type"] != "state"]
    assert all(m in sent for m in texts if m["type"] == "state") and slow.peer.states_superseded > 0


async def test_a_peer_that_never_reads_is_disconnected_before_text_piles_up(tiny_pipe) -> None:
    async with Runner(tiny_pipe, max_queued_text_chars=4000) as runner:
        reader = await greeted(runner.connect_local())
        silent = runner.connect_local()
        for _ in range(60):
            await send(reader, "warp")  # refused without an id: a command_error broadcast, ~100 bytes
            assert (await recv(reader))["type"] == "command_error"  # type: ignore[index]
        assert silent.closed and silent.close_code == 1008
        with pytest.raises(ConnectionClosedError) as exc:
            await silent.recv()
        assert exc.value.code == 1008 and "too slow" in exc.value.reason
        assert runner.peers == [reader.peer]


async def test_state_snapshots_never_pile_up_for_a_peer_that_does_not_read(tiny_pipe) -> None:
    async with Runner(tiny_pipe, max_queued_text_chars=4000) as runner:
        reader = await greeted(runner.connect_local())
        silent = runner.connect_local()
        for n in range(200):  # 200 state broadcasts of ~230 bytes: 11x the text cap
            await send(reader, "schedule_prompt", new_prompt=f"prompt {n}", timestamp=0)
            assert (await recv(reader))["type"] == "state"  # type: ignore[index]
        # Each newer snapshot replaced the unsent one: one state waits (after hello), nothing piled up.
        assert not silent.closed and silent.peer.queued_texts == 2 and silent.peer.states_superseded == 200
        assert (await recv(silent))["type"] == "hello"  # type: ignore[index]
        state = await recv(silent)
        assert state["data"]["scheduled_prompts"] == {"0": "prompt 199"}  # type: ignore[index]
        assert silent.peer.queued_text_chars == 0 and silent.peer.get_nowait() is None


async def test_max_peers_refuses_with_a_clear_reason(tiny_pipe) -> None:
    async with Runner(tiny_pipe, max_peers=1) as runner:
        first = await greeted(runner.connect_local())
        refused = runner.connect_local()
        with pytest.raises(ConnectionClosedError) as exc:
            await refused.recv()
        assert exc.value.code == 1013 and "too many clients" in exc.value.reason
        await first.close()
        await greeted(runner.connect_local())


async def test_a_model_fault_is_broadcast_and_reset_recovers(tiny_pipe, reference, monkeypatch) -> None:
    async with Runner(tiny_pipe, limits=Limits(max_frames=3)) as runner:
        a, b = await greeted(runner.connect_local()), await greeted(runner.connect_local())

        def boom(prompt: str):
            raise RuntimeError("CUDA out of memory (simulated)")

        monkeypatch.setattr(runner.generator, "generate_block", boom)
        await send(a, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(a, "start", seed=SEED)
        for conn in (a, b):
            items = await until(conn, lambda i: is_type(i, "state", finished="error"))
            (error,) = texts_of(items, "error")
            assert error["data"]["code"] == "generation_failed" and error["data"]["frame"] == 0
            assert "simulated" in error["data"]["message"]
            assert texts_of(items, "generation_finished")[0]["data"]["reason"] == "error"
            assert not frames_of(items)

        await send(a, "start", "again")
        assert (await until(a, lambda i: is_reply(i, "again")))[-1]["data"]["code"] == "finished"  # type: ignore[index]
        monkeypatch.undo()
        await send(a, "reset", "r")
        await send(a, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(a, "start", seed=SEED)
        items = await until(a, lambda i: is_type(i, "generation_finished"))
        assert texts_of(items, "generation_finished")[-1]["data"]["reason"] == "max_frames"
        np.testing.assert_array_equal(np.stack([rgb for _, rgb in frames_of(items)]), reference[:9])


async def test_the_session_pauses_at_once_when_the_last_client_leaves(tiny_pipe) -> None:
    """No one watches: the block in flight completes, nothing more is generated; a client that
    comes back within the grace period finds the video paused where it was and may resume."""
    async with Runner(tiny_pipe, grace_period=60.0) as runner:
        conn = await greeted(runner.connect_local())
        await send(conn, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(conn, "start", "go")
        await until(conn, lambda i: is_reply(i, "go"))
        await conn.close()
        assert runner.session.phase == "paused"  # at once, not after the grace period
        await eventually(lambda: not runner.generating, "the block in flight completes")
        blocks = runner.blocks_generated
        assert blocks <= 1
        # The loop plans the next block in the same step that finishes one: it has decided, and
        # planned nothing. Nothing is generated for no one: see the frames after `resume` below.
        assert runner.session.in_progress is None and runner.session.current_start_frame == 3 * blocks

        again = runner.connect_local()
        assert (await recv(again))["type"] == "hello"
        state = await recv(again)
        assert state["data"]["running"] and state["data"]["paused"]  # type: ignore[index]
        await send(again, "start", "s")
        refused = (await until(again, lambda i: is_reply(i, "s")))[-1]
        assert refused["data"]["code"] == "already_running"  # type: ignore[index]
        assert "call resume() to continue or reset() to start over" in refused["data"]["reason"]  # type: ignore[index]
        await send(again, "resume", "r")
        assert not frames_of(await until(again, lambda i: is_reply(i, "r")))
        header, _ = (await until(again, lambda i: isinstance(i, tuple)))[-1]  # frames again ...
        assert header.block_start_frame == 3 * blocks  # ... from where it paused: none in between
        await again.close()


async def test_the_session_is_reset_after_the_grace_period(tiny_pipe) -> None:
    async with Runner(tiny_pipe, grace_period=0.3) as runner:
        conn = await greeted(runner.connect_local())
        await send(conn, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(conn, "schedule_prompt", new_prompt=B, timestamp=9)
        await send(conn, "start", "go")
        await until(conn, lambda i: is_reply(i, "go"))
        generation = runner.session.generation
        await conn.close()
        assert runner.session.phase == "paused"
        await eventually(lambda: runner.session.phase == "idle", "the session is reset after 0.3 s")
        # A new client finds a fresh session: idle, no prompts, a new generation.
        assert runner.session.schedule == {}
        assert runner.session.generation == generation + 1
        fresh = runner.connect_local()
        assert (await recv(fresh))["type"] == "hello"
        state = (await recv(fresh))["data"]
        assert not state["running"] and state["scheduled_prompts"] == {}  # type: ignore[index]
        await send(fresh, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(fresh, "start", "go")
        await until(fresh, lambda i: is_reply(i, "go") and i["type"] == "ack")  # type: ignore[index]
        await until(fresh, lambda i: isinstance(i, tuple))
        # A client that only scheduled (never started) leaves a schedule: reset after the period too.
        await send(fresh, "reset")
        await send(fresh, "schedule_prompt", new_prompt=A, timestamp=0)
        await until(fresh, lambda i: is_type(i, "state") and i["data"]["scheduled_prompts"] != {})  # type: ignore[index]
        await fresh.close()
        await eventually(lambda: runner.session.schedule == {}, "the schedule is reset after 0.3 s")


async def test_without_a_grace_period_the_paused_session_waits_forever(tiny_pipe) -> None:
    async with Runner(tiny_pipe, grace_period=None) as runner:
        conn = await greeted(runner.connect_local())
        await send(conn, "schedule_prompt", new_prompt=A, timestamp=0)
        await send(conn, "start", "go")
        await until(conn, lambda i: is_reply(i, "go"))
        await conn.close()
        assert runner.session.phase == "paused" and runner.session.schedule == {0: A}
        assert not runner.reset_scheduled  # no reset is scheduled, ever
