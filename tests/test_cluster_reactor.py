"""Reactor's local-mode routes on the cluster gateway, with in-process workers and real HTTP
(no Ray, no WebRTC connection): a session per `POST /start_session` on a free worker, its
director key as `session_id`, signalling forwarded to the worker's own Reactor routes, 503 while
no worker is free, the per-address cap, and the ends of a session (DELETE, no connection)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

pytest.importorskip("aiortc", reason="the webrtc extra is not installed")

from _poll import eventually  # noqa: E402
from longlive_runner.serving.cluster.gateway import Gateway, GatewayServer, LocalWorkerHandle  # noqa: E402
from longlive_runner.serving.cluster.worker import SessionWorker  # noqa: E402

ICE = "stun:192.0.2.1:3478"  # a documentation address: never contacted (no connection is made)
HEADERS = {"Reactor-API-Version": "1", "Reactor-WebRTC-Version": "1.0"}


class Front:
    def __init__(self, gateway: Gateway, server: GatewayServer, workers: list[SessionWorker]) -> None:
        self.gateway, self.server, self.workers = gateway, server, workers
        self.http = "http" + server.url[2:].rstrip("/")

    async def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            content = b"" if body is None else json.dumps(body).encode()
            return await client.request(
                method, self.http + path, content=content, headers=HEADERS, timeout=10
            )


@pytest.fixture
async def front_factory(pipes: list[Any]) -> AsyncIterator[Callable[..., Any]]:
    fronts: list[Front] = []

    async def make(n: int = 2, **options: Any) -> Front:
        options.setdefault("grace_period", 0.0)
        workers = [
            SessionWorker(
                pipeline=pipes[i],
                host="127.0.0.1",
                runner_options={"max_peers": 4},
                webrtc={"ice_servers": [ICE], "max_connections": 4},
            )
            for i in range(n)
        ]
        gateway = Gateway([LocalWorkerHandle(w) for w in workers], check_timeout=2.0, **options)
        server = GatewayServer(gateway, height=64, width=112, reactor=True)
        await gateway.start()
        await server.start("127.0.0.1", 0)
        await gateway.wait_ready(timeout=30)
        front = Front(gateway, server, workers)
        fronts.append(front)
        return front

    yield make
    for front in fronts:
        await front.server.close()
        await front.gateway.close()
        for w in front.workers:
            await w.shutdown()


async def test_each_start_session_gets_its_own_worker_and_signalling_is_forwarded(front_factory: Any) -> None:
    front = await front_factory(2)
    a, b = await front.call("POST", "/start_session", {}), await front.call("POST", "/start_session", {})
    assert a.status_code == b.status_code == 200
    da, db = a.json(), b.json()
    ka, kb = da["session_id"], db["session_id"]
    assert ka != kb and len(ka) == len(kb) == 16  # director keys (96 random bits), not the labels
    assert da["state"] == "ACTIVE" and da["selected_transport"] == {"protocol": "webrtc", "version": "1.0"}
    assert da["capabilities"]["tracks"] == [{"name": "main_video", "kind": "video", "direction": "recvonly"}]
    # One session per worker, each known there by the gateway's label, never by the client's key
    # (labels count up per process: other tests' gateways may have used s1 and s2).
    labels = {w._session_id for w in front.workers}
    assert len(labels) == 2 and all(label is not None and label.startswith("s") for label in labels)
    assert not labels & {ka, kb}

    # Every worker busy: a clear 503 the clients surface, with Retry-After; nothing is queued.
    busy = await front.call("POST", "/start_session", {})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert "every worker is busy" in busy.json()["detail"] and front.gateway.scheduler.queue_length == 0

    # The session routes and the signalling of one session reach its own worker.
    got = await front.call("GET", f"/sessions/{ka}")
    assert got.status_code == 200 and got.json()["session_id"] == ka
    ice = await front.call("GET", f"/sessions/{ka}/transport/webrtc/ice_servers")
    assert ice.json() == {"ice_servers": [{"uris": [ICE]}]}
    reg = await front.call("POST", f"/sessions/{ka}/transport/webrtc/connections", {})
    assert reg.status_code == 201
    cid = reg.json()["connection_id"]
    pending = await front.call("GET", f"/sessions/{ka}/transport/webrtc/connections/{cid}/sdp_params")
    assert (
        pending.status_code == 409 and "has no offer yet" in pending.json()["detail"]
    )  # the worker's answer
    junk = await front.call(
        "POST", f"/sessions/{ka}/transport/webrtc/connections/{cid}/sdp_params", {"sdp_offer": "x"}
    )
    assert junk.status_code == 400 and "not an SDP" in junk.json()["detail"]
    flat = await front.call("GET", f"/sessions/{kb}/transport/webrtc/sdp_params")
    assert flat.status_code == 404 and "no offer" in flat.json()["detail"]
    cands = {"candidates": [{"candidate": "candidate:1 1 udp 1 192.0.2.9 9 typ host", "sdp_mid": "0",
                             "sdp_mline_index": 0.0}], "is_final": False}  # fmt: skip
    early = await front.call(
        "POST", f"/sessions/{ka}/transport/webrtc/connections/{cid}/ice_candidates", cands
    )
    assert early.status_code == 202

    # Unknown keys, near misses and junk connection ids: 404, the key not echoed.
    near = ka[:-1] + ("y" if ka[-1] == "x" else "x")
    for path in (f"/sessions/{near}", "/sessions/s1/transport/webrtc/ice_servers",
                 f"/sessions/{ka}/transport/webrtc/connections/1x/sdp_params"):  # fmt: skip
        missing = await front.call("GET", path)
        assert missing.status_code == 404 and ka not in missing.text
    info = (await front.call("GET", "/info")).text
    assert ka not in info and kb not in info and json.loads(info)["workers_ready"] == 2

    # DELETE ends a session at once: its worker is free for the next /start_session.
    assert (await front.call("DELETE", f"/sessions/{ka}")).status_code == 200
    assert (await front.call("GET", f"/sessions/{ka}")).status_code == 404
    await eventually(
        lambda: front.gateway.health()[1]["workers_busy"] == 1, "the deleted session's worker freed"
    )
    again = await front.call("POST", "/start_session", {})
    assert again.status_code == 200 and again.json()["session_id"] not in (ka, kb)


async def test_a_session_without_a_connection_ends_and_the_cap_per_address(front_factory: Any) -> None:
    front = await front_factory(2, reactor_idle=0.4, max_sessions_per_address=1)
    first = await front.call("POST", "/start_session", {})
    assert first.status_code == 200
    key = first.json()["session_id"]
    # The one session of this address: GET /session finds it (local mode names no id).
    own = await front.call("GET", "/session")
    assert own.status_code == 200 and own.json()["session_id"] == key
    capped = await front.call("POST", "/start_session", {})
    assert capped.status_code == 503 and "cap per address" in capped.json()["detail"]
    # No WebRTC connection came: the session ends by itself, its worker is free again.
    await eventually(
        lambda: front.gateway.health()[1]["workers_busy"] == 0,
        "a session without a connection ended",
        timeout=10,
    )
    assert front.gateway.sessions_ended["left"] == 1
    assert (await front.call("GET", f"/sessions/{key}")).status_code == 404
    # POST /stop_session ends the address's one session.
    second = await front.call("POST", "/start_session", {})
    assert second.status_code == 200
    assert (await front.call("POST", "/stop_session", {})).status_code == 200
    await eventually(lambda: front.gateway.health()[1]["workers_busy"] == 0, "stop_session ended the session")
    assert (await front.call("GET", "/session")).status_code == 404


async def test_websocket_clients_and_reactor_sessions_share_the_workers(front_factory: Any) -> None:
    from longlive import Reactor

    front = await front_factory(1)
    started = await front.call("POST", "/start_session", {})
    assert started.status_code == 200
    # The one worker runs the Reactor session: a websocket client waits in the queue.
    waiter = Reactor(front.server.url)
    connecting = asyncio.ensure_future(waiter.connect())
    await eventually(lambda: front.gateway.scheduler.queue_length == 1, "the websocket client queued")
    # Ending the Reactor session hands the worker to the waiting client.
    assert (await front.call("DELETE", f"/sessions/{started.json()['session_id']}")).status_code == 200
    await asyncio.wait_for(connecting, 20)
    assert waiter.session_id
    # ...and while it holds the worker, /start_session is refused at once.
    assert (await front.call("POST", "/start_session", {})).status_code == 503
    await waiter.close()
