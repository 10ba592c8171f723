"""Hardening of the runner and the SDK: bad input, limits, slow and vanishing clients, model faults.

Two kinds of runner:

- `hardened`: a real `longlive-runner serve --model tiny --grace-period 0.5` process, shared by
  this module (fuzzing, limits, the grace period, the SDK's drop and reconnect; the last test
  kills it);
- in process: a `Runner` + `RunnerServer` on the tiny pipeline, where the model can be replaced
  by a fast stand-in (`FakeModel`: fresh random frames, any size, optionally held mid-block) or
  made to fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from _frames import take
from _poll import eventually
from _runner_process import RunnerProcess, start_runner
from longlive import (
    ConnectionClosedError,
    ErrorCode,
    Reactor,
    WebSocketTransport,
)
from longlive.protocol import DEFAULT_LIMITS, Limits
from longlive_runner import CheckpointError, load_pipeline
from longlive_runner.model.generator import Block
from longlive_runner.serving.hub import Runner
from longlive_runner.serving.server import RunnerServer

TIMEOUT = 60.0
COMMANDS = frozenset({"schedule_prompt", "remove_prompt", "start", "pause", "resume", "reset", "get_state"})
MAX_BYTES, MAX_CHARS, MAX_PROMPTS = 65536, 2000, 256  # the reference runner's defaults
MAX_FRAMES = DEFAULT_LIMITS.max_frames  # no length cap by default: the largest timestamp
A = "a red fox in the snow"
SEED = 7
#: Inputs thrown at the runner by the property-based test (raise it for a deeper search).
FUZZ_EXAMPLES = int(os.environ.get("LONGLIVE_FUZZ_EXAMPLES", "400"))


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hardened() -> Iterator[RunnerProcess]:
    with start_runner("--grace-period", "0.5") as runner:
        yield runner


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def two_blocks(url: str) -> tuple[np.ndarray, list[int]]:
    """A fresh run of prompt A with SEED: its first two blocks (21 frames) and their indexes."""
    async with Reactor(url, command_timeout=TIMEOUT) as reactor:
        await reactor.reset()
        await reactor.schedule_prompt(A, 0)
        await reactor.start(seed=SEED)
        frames = await take(reactor, 21)
        await reactor.reset()
    return np.stack([f.image for f in frames]), [f.index for f in frames]


class FakeModel:
    """Stands in for `VideoGenerator.generate_block`: fresh random frames (new memory every
    block, `height` x `width`), after `delay` seconds; block number `hold` (0-based) waits for
    `release`."""

    def __init__(
        self,
        runner: Runner,
        monkeypatch: pytest.MonkeyPatch,
        *,
        height: int = 64,
        width: int = 112,
        delay: float = 0.0,
        hold: int | None = None,
    ) -> None:
        self.gen = runner.generator
        self.shape = (height, width, 3)
        self.delay, self.hold = delay, hold
        self.entered, self.release = threading.Event(), threading.Event()
        self.rng = np.random.default_rng(0)
        self.blocks = 0
        monkeypatch.setattr(self.gen, "generate_block", self)

    def __call__(self, prompt: str) -> Block:
        s = self.gen.current_start_frame
        if self.hold is not None and s // 3 == self.hold:
            self.entered.set()
            assert self.release.wait(TIMEOUT)
        if self.delay:
            time.sleep(self.delay)
        frames = self.rng.integers(0, 256, (9 if s == 0 else 12, *self.shape), dtype=np.uint8)
        self.gen.current_start_frame = s + 3
        self.blocks += 1
        return Block(s, frames, prompt)


@pytest.fixture
async def served(tiny_pipe) -> AsyncIterator[tuple[Runner, str]]:
    """An in-process runner (grace period off) behind a websocket server: (runner, url)."""
    runner = Runner(tiny_pipe, limits=Limits(max_frames=600))
    await runner.start()
    server = RunnerServer(runner, close_timeout=1.0)
    await server.start("127.0.0.1", 0)
    try:
        yield runner, server.url
    finally:
        await server.close()
        await runner.close()


# ----------------------------------------------------------------------------------------------
# Bad input, property-based, against the live runner
# ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    kind: str
    payload: str | bytes
    binary: bool = False  # a binary WebSocket message (else text; bytes sent as a text frame)
    codes: frozenset[str] | None = None  # the expected command_error codes (None: any valid code)
    reply_id: str | None | bool = False  # the id the refusal must carry (None: none; False: unchecked)
    close: int | None = None  # the connection must be closed with this code instead


ANY = frozenset(ErrorCode.all())
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=25,
)
not_objects = json_values.filter(lambda v: not isinstance(v, dict))
not_int = json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
bad_timestamp = not_int | st.integers(max_value=-1) | st.integers(min_value=MAX_FRAMES + 1)
bad_prompt = (
    json_values.filter(lambda v: not isinstance(v, str))
    | st.text(" \t\n", max_size=20)  # empty or whitespace
    | st.integers(MAX_CHARS + 1, 20_000).map(lambda n: "p" * n)  # too long, still under the size limit
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
)
bad_ids = (
    json_values.filter(lambda v: v is not None and not isinstance(v, str))
    | st.just("")
    | st.integers(129, 1000).map(lambda n: "i" * n)
)


def is_command_type(value: Any) -> bool:
    return isinstance(value, str) and value in COMMANDS


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def valid_id(value: Any) -> bool:
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def object_case(obj: dict[str, Any]) -> Case:
    reply_id = obj.get("id") if valid_id(obj.get("id")) else None
    return Case("object", dumps(obj), reply_id=reply_id)


@st.composite
def bad_commands(draw: st.DrawFn) -> Case:
    """A known command whose fields are wrong; it has a valid id, so the refusal is a reply."""
    kind = draw(st.sampled_from(sorted(COMMANDS)))
    if kind == "schedule_prompt":
        data: Any = {}
        prompt = draw(st.one_of(st.just(A), bad_prompt, st.just(...)))
        timestamp = draw(st.one_of(st.integers(0, MAX_FRAMES), bad_timestamp, st.just(...)))
        if prompt is not ...:
            data["new_prompt"] = prompt
        if timestamp is not ...:
            data["timestamp"] = timestamp
        if (
            prompt == A
            and isinstance(timestamp, int)
            and not isinstance(timestamp, bool)
            and 0 <= timestamp <= MAX_FRAMES
        ):
            data["timestamp"] = -1 - timestamp  # keep it wrong
    elif kind == "remove_prompt":
        data = draw(st.one_of(st.just({}), bad_timestamp.map(lambda t: {"timestamp": t})))
    elif kind == "start":
        seed = draw(
            (not_int.filter(lambda v: v is not None)) | st.integers(max_value=-1) | st.integers(2**63)
        )
        data = {"seed": seed}
    else:
        data = draw(not_objects.filter(lambda v: v is not None))
    return Case("bad_command", dumps({"type": kind, "data": data, "id": "bad"}), reply_id="bad")


def junk_text(text: str) -> Case:
    return Case("junk_text", text)


def _not_a_command(text: str) -> bool:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(obj, dict) and is_command_type(obj.get("type")))


def deep(depth: int, where: str) -> Case:
    if where == "array":
        payload = "[" * depth + "]" * depth
    elif where == "object":
        payload = '{"a":' * depth + "1" + "}" * depth
    else:
        payload = '{"type":"start","id":"deep","data":{"seed":' + "[" * depth + "]" * depth + "}}"
    return Case("deep", payload)


def huge(n: int, char: str) -> Case:
    text = dumps({"type": "schedule_prompt", "id": "huge", "data": {"new_prompt": char * n, "timestamp": 0}})
    if len(text.encode()) > 4 * MAX_BYTES:
        return Case("oversized", text, close=1009)
    if len(text.encode()) > MAX_BYTES:  # too large to be read: refused without its id
        return Case("too_large", text, codes=frozenset({"message_too_large"}), reply_id=None)
    return Case("long_prompt", text, codes=frozenset({"prompt_too_long"}), reply_id="huge")


cases = st.one_of(
    st.binary(max_size=2000).map(
        lambda b: Case("binary", b, binary=True, codes=frozenset({"unexpected_binary"}), reply_id=None)
    ),
    st.text(max_size=300).filter(_not_a_command).map(junk_text),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")).filter(_not_a_command).map(junk_text),
    not_objects.map(
        lambda v: Case("json_value", dumps(v), codes=frozenset({"not_an_object"}), reply_id=None)
    ),
    st.dictionaries(st.sampled_from(["type", "data", "id"]) | st.text(max_size=8), json_values, max_size=5)
    .filter(lambda o: not is_command_type(o.get("type")))
    .map(object_case),
    st.builds(
        lambda t, d: Case(
            "unknown_type",
            dumps({"type": t, "data": d, "id": "unk"}),
            codes=frozenset({"unknown_type"}),
            reply_id="unk",
        ),
        st.text(max_size=60).filter(lambda t: t not in COMMANDS),
        st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    ),
    bad_commands(),
    st.builds(
        lambda t, i: Case(
            "bad_id", dumps({"type": t, "id": i}), codes=frozenset({"bad_field"}), reply_id=None
        ),
        st.sampled_from(sorted(COMMANDS)),
        bad_ids,
    ),
    st.builds(deep, st.integers(50, 30_000), st.sampled_from(["array", "object", "field"])).filter(
        lambda c: len(c.payload) <= MAX_BYTES
    ),
    st.builds(huge, st.integers(MAX_CHARS + 1, 4 * MAX_BYTES + 5000), st.sampled_from(["x", "é", "漢"])),
    st.binary(min_size=1, max_size=200).map(
        lambda b: Case("bad_utf8", b"\xff" + b, close=1007)  # never valid UTF-8: 0xff is no UTF-8 byte
    ),
)


class FuzzClient:
    """A bare synchronous websocket client that reopens itself after a close."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: Any = None
        self.n = 0
        self.open()

    def open(self) -> None:
        self.ws = sync_connect(
            self.url, open_timeout=TIMEOUT, max_size=None, proxy=None, compression=None, legacy=True
        )
        assert json.loads(self.ws.recv(TIMEOUT))["type"] == "hello"
        assert json.loads(self.ws.recv(TIMEOUT))["type"] == "state"

    def until_reply(self, id: str) -> list[dict[str, Any]]:
        out = []
        while True:
            message = self.ws.recv(TIMEOUT)
            assert isinstance(message, str), "no frame is sent while idle"
            msg = json.loads(message)
            out.append(msg)
            if msg.get("id") == id and msg["type"] in ("ack", "command_error"):
                return out

    def check(self, case: Case) -> None:
        self.n += 1
        self.ws.send(case.payload, text=not case.binary)
        if case.close is not None:
            with pytest.raises(ConnectionClosed):
                while True:
                    self.ws.recv(TIMEOUT)
            assert self.ws.close_code == case.close, (case.kind, self.ws.close_code)
            self.open()
            return
        sentinel = f"sentinel-{self.n}"
        self.ws.send(json.dumps({"type": "get_state", "id": sentinel}))
        got = self.until_reply(sentinel)
        assert got[-1]["type"] == "ack", got[-1]
        errors = [m for m in got[:-1] if m["type"] == "command_error"]
        assert len(errors) == 1 and len(got) == 2, (case.kind, case.payload[:200], got)
        error = errors[0]
        assert error["data"]["code"] in (case.codes or ANY), (case.kind, error)
        assert isinstance(error["data"]["reason"], str) and error["data"]["reason"]
        if case.reply_id is None:
            assert "id" not in error, (case.kind, error)
        elif case.reply_id is not False:
            assert error.get("id") == case.reply_id, (case.kind, error)

    def close(self) -> None:
        self.ws.close()


def test_bad_input_never_kills_the_session(hardened: RunnerProcess) -> None:
    before, before_index = asyncio.run(two_blocks(hardened.url))
    client = FuzzClient(hardened.url)
    # A known state the fuzzing must not change: two prompts scheduled, idle.
    client.ws.send(json.dumps({"type": "schedule_prompt", "data": {"new_prompt": A, "timestamp": 0}}))
    client.ws.send(json.dumps({"type": "schedule_prompt", "data": {"new_prompt": "later", "timestamp": 30}}))
    client.ws.send(json.dumps({"type": "get_state", "id": "before"}))
    state_before = client.until_reply("before")[-1]["data"]
    kinds: Counter[str] = Counter()
    started = time.monotonic()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def throw(case: Case) -> None:
        kinds[case.kind] += 1
        client.check(case)

    try:
        throw()
        client.ws.send(json.dumps({"type": "get_state", "id": "after"}))
        state_after = client.until_reply("after")[-1]["data"]
    finally:
        client.close()
    elapsed = time.monotonic() - started
    print(f"\nfuzz: {client.n} inputs tried in {elapsed:.1f} s: {dict(sorted(kinds.items()))}")
    assert client.n >= min(FUZZ_EXAMPLES, 300) and len(kinds) >= min(FUZZ_EXAMPLES // 30, 12)
    assert state_after == state_before  # nothing of it was applied
    assert hardened.proc.poll() is None and "Traceback" not in hardened.stderr

    # A valid client still generates, frame for frame, what it generated before.
    after, after_index = asyncio.run(two_blocks(hardened.url))
    assert before_index == after_index == list(range(21))
    np.testing.assert_array_equal(after, before)


# ----------------------------------------------------------------------------------------------
# Limits
# ----------------------------------------------------------------------------------------------
async def test_limits_are_announced_and_enforced(hardened: RunnerProcess) -> None:
    async with connect(hardened.url, open_timeout=TIMEOUT, proxy=None) as ws:
        hello = json.loads(await ws.recv())["data"]
        assert (hello["max_message_bytes"], hello["max_prompt_chars"], hello["max_scheduled_prompts"]) == (
            MAX_BYTES,
            MAX_CHARS,
            MAX_PROMPTS,
        )
        info = httpx.get(hardened.http_url + "/info", timeout=10).json()
        assert info["max_clients"] == 16 and info["max_queued_frames"] == 48

        async def ask(type: str, id: str, **data: Any) -> dict[str, Any]:
            await ws.send(json.dumps({"type": type, "data": data, "id": id}))
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                if msg.get("id") == id:
                    return msg

        await ask("reset", "r0")
        # Prompt length in tokens: accepted, with a warning (the tiny text encoder keeps 64 tokens).
        short = await ask("schedule_prompt", "short", new_prompt=A, timestamp=0)
        assert short["type"] == "ack" and short["data"]["warnings"] == []
        long = await ask("schedule_prompt", "long", new_prompt=" ".join(["snow"] * 200), timestamp=0)
        assert long["type"] == "ack"
        (warning,) = long["data"]["warnings"]
        assert warning["code"] == "prompt_truncated" and "64" in warning["message"]
        # Prompt length in characters: refused.
        assert (await ask("schedule_prompt", "chars", new_prompt="x" * MAX_CHARS, timestamp=0))[
            "type"
        ] == "ack"
        too_long = await ask("schedule_prompt", "chars2", new_prompt="x" * (MAX_CHARS + 1), timestamp=0)
        assert too_long["data"]["code"] == "prompt_too_long"
        # Scheduled prompts: 256 may wait; the 257th is refused, overwriting one is not.
        for t in range(1, MAX_PROMPTS):
            await ws.send(
                json.dumps({"type": "schedule_prompt", "data": {"new_prompt": f"p{t}", "timestamp": t}})
            )
        full = await ask("schedule_prompt", "full", new_prompt="one more", timestamp=MAX_PROMPTS)
        assert full["type"] == "command_error" and full["data"]["code"] == "too_many_prompts"
        assert (await ask("schedule_prompt", "over", new_prompt="again", timestamp=5))["type"] == "ack"
        state = await ask("get_state", "st")
        assert len(state["data"]["scheduled_prompts"]) == MAX_PROMPTS
        await ask("reset", "r1")


# ----------------------------------------------------------------------------------------------
# Slow and vanishing clients
# ----------------------------------------------------------------------------------------------
async def test_a_client_that_stops_reading_keeps_memory_bounded(served, monkeypatch) -> None:
    runner, url = served
    model = FakeModel(runner, monkeypatch, height=80, width=128, delay=0.005)  # 30 KB frames
    frame_bytes = 80 * 128 * 3
    # Reads nothing, ever: its websocket library stops reading the socket after one message.
    stalled = await connect(url, open_timeout=TIMEOUT, max_queue=1, compression=None, proxy=None)
    await eventually(lambda: len(runner.peers) == 1, "len(runner.peers) == 1", timeout=TIMEOUT)
    slow_peer = runner.peers[0]
    fast = Reactor(url, max_buffered_frames=0, command_timeout=TIMEOUT)
    received: list[int] = []
    fast.on_frame(lambda f: received.append(f.index))
    await fast.connect()
    await fast.schedule_prompt(A, 0)

    samples: list[tuple[int, int, int, int]] = []  # (blocks, queued frames, queued text bytes, rss)
    rss_at_20: list[int] = []

    async def sample() -> None:
        while True:
            samples.append((model.blocks, slow_peer.queued_frames, slow_peer.queued_text_chars, rss_bytes()))
            if model.blocks >= 20 and not rss_at_20:
                rss_at_20.append(rss_bytes())
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        await fast.start()
        await fast.wait_for("generation_finished", timeout=120)
    finally:
        sampler.cancel()
    blocks = model.blocks
    assert blocks == 200
    # The reader got every frame, in order, and the runner dropped none of them.
    assert received == list(range(9 + 199 * 12)) and fast.frames_dropped_by_runner == 0
    # The stalled client: frames were dropped for it, its queue never passed the cap.
    assert slow_peer.frames_dropped > 1000 and not slow_peer.closed
    peak_frames = max(s[1] for s in samples)
    peak_text = max(s[2] for s in samples)
    assert peak_frames <= runner.max_queued_frames and peak_frames * frame_bytes <= 48 * frame_bytes
    # Text is never dropped (progress and state of every block wait for it) but is capped:
    # past `max_queued_text_chars` the client is disconnected (1008). 200 blocks stay well under.
    assert peak_text <= runner.max_queued_text_chars // 16
    # 200 blocks are ~73 MB of frames; the process grew by far less than that.
    growth = max(s[3] for s in samples if s[0] >= 20) - rss_at_20[0]
    print(
        f"\nstalled client over {blocks} blocks: peak {peak_frames} queued frames "
        f"({peak_frames * frame_bytes / 2**20:.1f} MiB), {peak_text} B of text, "
        f"{slow_peer.frames_dropped} frames dropped; RSS growth after block 20: {growth / 2**20:.1f} MiB"
    )
    assert growth < 24 * 2**20
    await fast.close()
    stalled.transport.abort()  # a polite close would wait for the stalled reader


async def test_a_client_vanishing_mid_block_is_no_error_for_the_others(served, monkeypatch, caplog) -> None:
    runner, url = served
    model = FakeModel(runner, monkeypatch, hold=1)  # block 3 waits for `release`
    caplog.set_level(logging.INFO, logger="longlive_runner")
    keeper = Reactor(url, command_timeout=TIMEOUT)
    leaver = Reactor(url, command_timeout=TIMEOUT)
    await keeper.connect()
    await leaver.connect()
    aborted = await connect(url, open_timeout=TIMEOUT, proxy=None)
    await eventually(lambda: len(runner.peers) == 3, "len(runner.peers) == 3", timeout=TIMEOUT)
    events = keeper.messages()
    await keeper.schedule_prompt(A, 0)
    await keeper.start()
    assert len(await take(keeper, 9)) == 9
    await asyncio.to_thread(model.entered.wait, TIMEOUT)  # block 3 is being generated
    assert (await keeper.pause()).effective_frame == 6  # block 3 completes, nothing starts after it

    aborted.transport.abort()  # gone without a close frame
    await leaver.close()  # gone politely
    await eventually(lambda: len(runner.peers) == 1, "len(runner.peers) == 1", timeout=TIMEOUT)
    model.release.set()
    frames = await take(keeper, 12)  # block 3, complete
    assert [f.index for f in frames] == list(range(9, 21))
    await keeper.wait_for_frame(6, timeout=TIMEOUT)

    # A get_state's reply comes after everything the runner sent before it: read up to it.
    await keeper.get_state()
    seen: list[Any] = []

    async def read_to_the_reply() -> None:
        async for m in events:
            seen.append(m)
            if m.type == "ack" and m.command == "get_state":
                return

    await asyncio.wait_for(read_to_the_reply(), TIMEOUT)
    assert not [m for m in seen if m.type in ("error", "command_error", "frames_dropped")], seen
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert runner.session.phase == "paused" and runner.blocks_generated == model.blocks == 2
    await keeper.close()


async def test_the_session_pauses_without_clients_and_is_reset_after_the_grace_period(
    hardened: RunnerProcess,
) -> None:
    def info() -> dict[str, Any]:
        return httpx.get(hardened.http_url + "/info", timeout=10).json()

    async with Reactor(hardened.url, command_timeout=TIMEOUT) as reactor:
        await reactor.reset()
        await reactor.schedule_prompt(A, 0)
        await reactor.start(seed=SEED)
        await reactor.wait_for_frame(3, timeout=TIMEOUT)
        generation = reactor.generation
        connected = info()["blocks_generated"]

    def settled() -> bool:  # paused at once, reset after the 0.5 s grace period, nothing in flight
        now = info()
        return now["phase"] == "idle" and not now["generating"]

    await eventually(settled, "settled", timeout=TIMEOUT, step=0.1)
    reset = info()
    assert (reset["generation"], reset["current_start_frame"], reset["clients"]) == (generation + 1, 0, 0)
    # Paused when the client left: at most the block in flight (and one racing the close) after it.
    assert reset["blocks_generated"] - connected <= 2

    async with Reactor(hardened.url, command_timeout=TIMEOUT) as reactor:  # a fresh session
        assert not reactor.state.running and reactor.state.scheduled_prompts == {}
        await reactor.schedule_prompt(A, 0)
        await reactor.start(seed=SEED)
        frames = await take(reactor, 9)
        assert frames[0].index == 0 and frames[0].generation == generation + 1
        stop_at = (await reactor.pause()).effective_frame
        await reactor.wait_for_frame(stop_at, timeout=TIMEOUT)
        # Nothing was generated for no one: every block since the reset is one of this video's.
        assert info()["blocks_generated"] == reset["blocks_generated"] + stop_at // 3
        await reactor.reset()


# ----------------------------------------------------------------------------------------------
# Faults in the model
# ----------------------------------------------------------------------------------------------
async def test_out_of_memory_in_a_block_reaches_every_client_and_reset_recovers(
    served, tiny_pipe, monkeypatch
) -> None:
    runner, url = served
    gen = runner.generator
    reference = np.concatenate([b.frames for b in tiny_pipe.stream({0: A}, 6, seed=SEED)])
    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    decode = gen._decoder.decode
    calls = []

    def failing_decode(z: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 2:  # block 3: after the DiT wrote its K/V into the cache
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return decode(z)

    monkeypatch.setattr(gen._decoder, "decode", failing_decode)
    a = Reactor(url, command_timeout=TIMEOUT)
    b = Reactor(url, command_timeout=TIMEOUT)
    await a.connect()
    await b.connect()
    errors = {name: r.messages("error", "generation_finished") for name, r in (("a", a), ("b", b))}
    await a.schedule_prompt(A, 0)
    await a.start(seed=SEED)
    for stream in errors.values():
        error = await asyncio.wait_for(stream.__anext__(), TIMEOUT)
        finished = await asyncio.wait_for(stream.__anext__(), TIMEOUT)
        assert error.type == "error" and error.code == "generation_failed" and error.frame == 3
        assert "OutOfMemoryError" in error.message and "simulated" in error.message
        assert finished.reason == "error"
    await b.get_state()
    assert b.state.finished == "error" and not b.state.running

    # The generator was cleared (no half-written cache is kept); on CPU nothing to give back.
    assert gen.current_start_frame == 0 and gen.prompt is None and gen.finished is None
    assert gen._cache.frames_seen == 0 and gen._decoder.cache == {} and len(gen._recent) == 0
    assert emptied == []
    assert runner.session.phase == "finished" and not runner.generating

    # `reset` recovers: the same video as offline, frame for frame.
    monkeypatch.setattr(gen._decoder, "decode", decode)
    await b.reset()
    await b.schedule_prompt(A, 0)
    await b.start(seed=SEED)
    frames = await take(b, 21)
    np.testing.assert_array_equal(np.stack([f.image for f in frames]), reference)
    await a.close()
    await b.close()


async def test_a_model_fault_on_cuda_gives_the_cached_memory_back(tiny_pipe, monkeypatch) -> None:
    runner = Runner(tiny_pipe)
    emptied: list[int] = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    resets: list[Any] = []
    fake_gen = SimpleNamespace(reset=lambda seed=None: resets.append(seed))
    monkeypatch.setattr(runner, "pipe", SimpleNamespace(device=torch.device("cuda", 0)))
    runner._recover_generator(fake_gen)  # type: ignore[arg-type]
    assert resets == [None] and emptied == [1]


class _WritesAFile:
    """Unpickled with code execution allowed, this writes `path`: a stand-in for any payload."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.path)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize(
    "name",
    [
        "wan/Wan2.1_VAE.pth",
        "wan/models_t5_umt5-xxl-enc-bf16.pth",
        "ll/models/longlive_base.pt",
        "ll/models/lora.pt",
    ],
)
def test_no_pickled_weight_file_can_run_code(real_layout, tmp_path: Path, name: str) -> None:
    wan, ll = tmp_path / "wan", tmp_path / "ll"
    shutil.copytree(real_layout["wan"], wan)
    shutil.copytree(real_layout["longlive"], ll)
    sentinel, target = tmp_path / "pwned", tmp_path / name
    torch.save({"generator": {"x": _WritesAFile(sentinel)}}, target)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_pipeline("tiny", wan_dir=wan, longlive_dir=ll)
    assert info.value.path == str(target) and not sentinel.exists()
    torch.load(target, weights_only=False)  # the payload is real: unsafe loading runs it
    assert sentinel.read_text() == "pwned"


# ----------------------------------------------------------------------------------------------
# The SDK when the connection drops
# ----------------------------------------------------------------------------------------------
async def test_frames_end_with_a_typed_error_and_reconnect_resyncs(hardened: RunnerProcess) -> None:
    transports: list[WebSocketTransport] = []

    async def open_transport() -> WebSocketTransport:
        transports.append(await WebSocketTransport.connect(hardened.url))
        return transports[-1]

    reactor = Reactor(transport_factory=open_transport, command_timeout=TIMEOUT)
    other = Reactor(hardened.url, command_timeout=TIMEOUT)
    await reactor.connect()
    await other.connect()
    await reactor.reset()
    await reactor.schedule_prompt(A, 0)
    await reactor.start(seed=SEED)
    assert len(await take(reactor, 9)) == 9

    transports[-1].websocket.transport.abort()  # the network drops
    with pytest.raises(ConnectionClosedError):
        await take(reactor, 10_000)
    assert reactor.status == "disconnected"
    with pytest.raises(ConnectionClosedError):
        await reactor.get_state()

    # Meanwhile another client changes the session.
    generation = (await other.reset()).generation
    await other.schedule_prompt("a blue whale", 0)
    await other.schedule_prompt("a green forest", 9)

    await reactor.reconnect()
    assert reactor.connected and len(transports) == 2
    assert reactor.generation == generation and reactor.state.generation == generation
    assert reactor.state.scheduled_prompts == {0: "a blue whale", 9: "a green forest"}
    assert not reactor.state.running and reactor.current_start_frame == 0
    await reactor.start(seed=SEED)
    frames = await take(reactor, 9)
    assert [f.index for f in frames] == list(range(9)) and {f.generation for f in frames} == {generation}
    await reactor.reset()
    await other.close()
    await reactor.close()


# Keep last: it kills the module's runner.
async def test_a_runner_that_vanishes_ends_frames_with_a_typed_error(hardened: RunnerProcess) -> None:
    reactor = Reactor(hardened.url, command_timeout=TIMEOUT)
    await reactor.connect()
    await reactor.reset()
    await reactor.schedule_prompt(A, 0)
    await reactor.start()
    assert len(await take(reactor, 9)) == 9
    hardened.proc.send_signal(signal.SIGKILL)  # no close frame, no goodbye
    with pytest.raises(ConnectionClosedError):
        await take(reactor, 10_000)
    assert reactor.status == "disconnected"
    with pytest.raises(ConnectionClosedError):
        await reactor.schedule_prompt(A, 3)
    with pytest.raises(ConnectionClosedError, match="cannot connect"):
        await reactor.reconnect()
    await reactor.close()
