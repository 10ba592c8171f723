"""`longlive-runner serve` as a real process, spoken to by a bare `websockets` client.

The client below uses nothing of the SDK: JSON by hand and binary frames parsed with `struct`
exactly as docs/protocol.md section 4 describes them, to prove the document is enough.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from _runner_process import RunnerProcess, run_serve

TIMEOUT = 60.0
HEADER = struct.Struct("<4sBBHIIIHHHH")  # docs/protocol.md, section 4


def parse_frame(data: bytes) -> dict[str, Any]:
    magic, version, fmt, header_size, generation, video_frame, block_start, index, n, h, w = (
        HEADER.unpack_from(data)
    )
    assert (magic, version, fmt, header_size) == (b"LLVF", 1, 1, 28)
    assert len(data) == header_size + h * w * 3 and index < n
    pixels = np.frombuffer(data, np.uint8, offset=header_size).reshape(h, w, 3)
    return {
        "type": "<frame>",
        "generation": generation,
        "video_frame": video_frame,
        "block_start_frame": block_start,
        "index_in_block": index,
        "frames_in_block": n,
        "pixels": pixels,
    }


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    return json.loads(message) if isinstance(message, str) else parse_frame(message)


async def until(ws: ClientConnection, type: str, **data: Any) -> list[dict[str, Any]]:
    """Messages up to and including the first of `type` whose data holds `data` (or whose id is `id`)."""
    want_id = data.pop("id", None)
    out = []
    while True:
        msg = await recv(ws)
        out.append(msg)
        if msg["type"] == type and (want_id is None or msg.get("id") == want_id):
            if all(msg.get("data", {}).get(k) == v for k, v in data.items()):
                return out


async def command(ws: ClientConnection, type: str, id: str | None = None, **data: Any) -> None:
    msg: dict[str, Any] = {"type": type, "data": data}
    if id is not None:
        msg["id"] = id
    await ws.send(json.dumps(msg))


async def open_client(url: str, **kwargs: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect, check `hello` and return it; the `state` snapshot that follows is consumed."""
    ws = await connect(url, open_timeout=TIMEOUT, **kwargs)
    hello = await recv(ws)
    assert hello["type"] == "hello" and hello["data"]["protocol_version"] == 1
    assert (await recv(ws))["type"] == "state"
    return ws, hello["data"]


async def fresh_session(ws: ClientConnection) -> None:
    await command(ws, "reset", "fresh")
    await until(ws, "ack", id="fresh")
    await until(ws, "state")


def test_health_and_info(runner_process: RunnerProcess) -> None:
    health = httpx.get(runner_process.http_url + "/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["content-type"] == "application/json"
    info = httpx.get(runner_process.http_url + "/info", timeout=10).json()
    assert info["protocol_version"] == 1 and info["model"] == "longlive" and info["preset"] == "tiny"
    assert (info["height"], info["width"], info["video_frames_first_block"]) == (64, 112, 9)
    assert info["max_clients"] == 16 and info["device"] == "cpu"
    assert runner_process.model == "tiny"


async def test_a_bare_client_generates_a_video(runner_url: str) -> None:
    ws, hello = await open_client(runner_url)
    async with ws:
        await fresh_session(ws)
        await command(ws, "schedule_prompt", "p0", new_prompt="a red fox in snow", timestamp=0)
        await ws.send("{this is not json")  # refused, and the connection carries on
        await command(ws, "schedule_prompt", "p1", new_prompt="the fox runs", timestamp=3)
        await command(ws, "start", "go", seed=3)
        got = await until(ws, "progress", current_start_frame=6)

        await command(ws, "reset", "stop")
        after_reset = await until(ws, "ack", id="stop")
        generation = after_reset[-1]["data"]["generation"]
        await command(ws, "get_state", "st")
        rest = await until(ws, "ack", id="st")

    acks = {m["id"]: m["data"] for m in got if m["type"] == "ack"}
    assert acks["p0"]["effective_frame"] == 0 and acks["p1"]["effective_frame"] == 3
    assert acks["go"] == {"command": "start", "generation": generation - 1, "seed": 3}
    (refusal,) = [m for m in got if m["type"] == "command_error"]
    assert refusal["data"]["code"] == "bad_json" and "id" not in refusal

    frames = [m for m in got if m["type"] == "<frame>"]
    assert [f["video_frame"] for f in frames] == list(range(21))
    assert [f["frames_in_block"] for f in frames] == [9] * 9 + [12] * 12
    assert [f["block_start_frame"] for f in frames] == [0] * 9 + [3] * 12
    assert all(f["pixels"].shape == (hello["height"], hello["width"], 3) for f in frames)
    assert len({f["pixels"].tobytes() for f in frames}) > 1  # a video, not one image
    order = [m["type"] if m["type"] != "progress" else m["data"]["current_start_frame"] for m in got]
    assert order.index(3) > max(
        i for i, m in enumerate(got) if m["type"] == "<frame>" and m["block_start_frame"] == 0
    )
    assert order.index(6) > max(i for i, m in enumerate(got) if m["type"] == "<frame>")
    switched = next(m for m in got if m["type"] == "prompt_switched")["data"]
    assert (switched["frame"], switched["new_prompt"]) == (3, "the fox runs")

    # After the reset's ack nothing of the old run arrives.
    assert not [m for m in rest if m["type"] in ("<frame>", "progress")]
    assert rest[-1]["data"]["running"] is False and rest[-1]["data"]["generation"] == generation


async def test_two_clients_share_one_session(runner_url: str) -> None:
    (a, _), (b, _) = await open_client(runner_url), await open_client(runner_url)
    async with a, b:
        await fresh_session(a)
        await until(b, "state")  # the reset's broadcast
        await command(a, "schedule_prompt", "s", new_prompt="two watchers", timestamp=0)
        seen_a = await until(a, "state")
        seen_b = await until(b, "state")
        assert [m["type"] for m in seen_a] == ["ack", "state"] and [m["type"] for m in seen_b] == ["state"]

        await command(b, "start", "go")  # either client drives the shared session
        got_b = await until(b, "progress", current_start_frame=3)
        got_a = await until(a, "progress", current_start_frame=3)
        await command(a, "reset")
        await until(b, "generation_finished", reason="reset")

    frames_a = [m["pixels"].tobytes() for m in got_a if m["type"] == "<frame>"]
    frames_b = [m["pixels"].tobytes() for m in got_b if m["type"] == "<frame>"]
    assert len(frames_a) == 9 and frames_a == frames_b
    assert [m for m in got_a if m["type"] == "ack"] == []  # the start's ack went to b only
    assert [m["id"] for m in got_b if m["type"] == "ack"] == ["go"]


async def test_bad_input_gets_refusals_and_the_connection_carries_on(runner_url: str) -> None:
    ws, hello = await open_client(runner_url)
    async with ws:
        await ws.send(b"\x00binary")
        assert (await until(ws, "command_error"))[-1]["data"]["code"] == "unexpected_binary"
        await ws.send(
            json.dumps({"type": "schedule_prompt", "id": "big", "data": {"new_prompt": "x" * 70000}})
        )
        refusal = (await until(ws, "command_error"))[-1]  # too large to be read: no id, broadcast
        assert refusal["data"]["code"] == "message_too_large" and "id" not in refusal
        await command(ws, "warp", "w")
        assert (await until(ws, "command_error", id="w"))[-1]["data"]["code"] == "unknown_type"
        await command(ws, "get_state", "alive")
        assert (await until(ws, "ack", id="alive"))[-1]["data"]["command"] == "get_state"

        # Far over the limit: the runner closes with 1009 instead of reading it.
        await ws.send("x" * (hello["max_message_bytes"] * 4 + 1))
        with pytest.raises(ConnectionClosed):
            await until(ws, "never")
        assert ws.close_code == 1009


async def test_max_clients_refuses_with_a_reason(runner_url: str) -> None:
    # From two loopback addresses: one address may hold 8 connections (--max-clients-per-address).
    clients = [await open_client(runner_url, local_addr=(f"127.0.0.{1 + n % 2}", 0)) for n in range(16)]
    try:
        async with connect(runner_url, open_timeout=TIMEOUT, local_addr=("127.0.0.3", 0)) as extra:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(extra.recv(), TIMEOUT)
            assert extra.close_code == 1013 and "too many clients" in (extra.close_reason or "")
    finally:
        for ws, _ in clients:
            await ws.close()


def test_port_in_use_exits_2_with_one_clear_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_serve("--model", "tiny", "--port", str(port))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0] and str(port) in lines[0], proc.stderr


# Keep last: it stops the module's runner.
async def test_sigterm_closes_clients_with_1001_and_exits_0(runner_process: RunnerProcess) -> None:
    ws, _ = await open_client(runner_process.url)
    async with ws:
        status = await asyncio.to_thread(runner_process.stop)
        with pytest.raises(ConnectionClosed):
            await until(ws, "never")
    assert status == 0 and ws.close_code == 1001
    assert "shutting down" in runner_process.stderr and "Traceback" not in runner_process.stderr
