"""The Reactor front's HTTP handlers, called directly with `HttpRequest` objects (no sockets,
no WebRTC connection): the local-mode session routes, the signalling routes in both forms, and
what bad input gets (a clear status, nothing left behind)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import pytest
import pytest_asyncio
from websockets.datastructures import Headers

pytest.importorskip("aiortc", reason="the webrtc extra is not installed")

from longlive_runner import load_pipeline  # noqa: E402
from longlive_runner.serving.http import HttpRequest, HttpResponse  # noqa: E402
from longlive_runner.serving.hub import Runner  # noqa: E402
from longlive_runner.serving.reactor.front import ReactorFront  # noqa: E402
from longlive_runner.serving.reactor.routes import make_handlers  # noqa: E402
from longlive_runner.serving.reactor.signalling import SignallingLimits  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Client:
    """The handlers behind a tiny router of their own patterns (the front's router is tested
    with the front)."""

    def __init__(self, reactor: ReactorFront) -> None:
        self.reactor = reactor
        self.routes = make_handlers(reactor)

    async def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> HttpResponse:
        for m, pattern, handler, max_body in self.routes:
            params = _match(pattern, path)
            if m == method and params is not None:
                data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
                assert len(data) <= max_body or max_body == 0 and not data
                request = HttpRequest(method, path, MappingProxyType({}), Headers(), data, "127.0.0.1",
                                      MappingProxyType(params))  # fmt: skip
                response: HttpResponse = await handler(request)
                return response
        raise AssertionError(f"no route {method} {path}")


def _match(pattern: str, path: str) -> dict[str, str] | None:
    p, q = pattern.strip("/").split("/"), path.strip("/").split("/")
    if len(p) != len(q):
        return None
    params = {}
    for a, b in zip(p, q):
        if a.startswith("{"):
            params[a[1:-1]] = b
        elif a != b:
            return None
    return params


def _json(response: HttpResponse) -> Any:
    return json.loads(response.body)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner() -> AsyncIterator[Runner]:
    async with Runner(load_pipeline("demo")) as r:
        yield r


@pytest_asyncio.fixture(loop_scope="module")
async def client(runner: Runner) -> AsyncIterator[Client]:
    reactor = ReactorFront(runner, limits=SignallingLimits(max_connections=2, max_candidates=8))
    yield Client(reactor)
    await reactor.close()


async def test_session_routes(client: Client) -> None:
    r = await client.call("GET", "/session")
    assert r.status == 200 and _json(r)["state"] == "CREATED"
    r = await client.call("POST", "/start_session", {"extra_args": {}})
    d = _json(r)
    assert r.status == 200 and d["state"] == "ACTIVE"
    assert d["capabilities"]["tracks"] == [{"name": "main_video", "kind": "video", "direction": "recvonly"}]
    assert d["capabilities"]["emission_fps"] == 16.0
    assert {c["name"] for c in d["capabilities"]["commands"]} >= {"schedule_prompt", "start", "reset"}
    again = _json(await client.call("POST", "/start_session"))  # a second client joins the same one
    assert again["session_id"] == d["session_id"]
    assert (await client.call("POST", "/stop_session")).status == 200
    r = await client.call("POST", "/sessions", {"model": {"name": "other"}})
    assert r.status == 404
    r = await client.call("POST", "/sessions", {"model": {"name": "longlive"}, "client_info": {}})
    assert r.status == 201 and _json(r)["session_id"] == d["session_id"]
    sid = d["session_id"]
    assert _json(await client.call("GET", f"/sessions/{sid}"))["session_id"] == sid
    assert (await client.call("GET", "/sessions/nope")).status == 404
    doc = _json(await client.call("GET", "/schema"))
    assert "/commands/schedule_prompt" in doc["paths"]
    r = await client.call("GET", f"/sessions/{sid}/transport/webrtc/ice_servers")
    assert _json(r) == {"ice_servers": []}  # no STUN/TURN unless configured


async def test_signalling_before_start_and_unknown_ids(client: Client) -> None:
    sid = client.reactor.signalling.session_id
    base = f"/sessions/{sid}/transport/webrtc"
    assert (await client.call("POST", f"{base}/connections")).status == 400  # no session started
    await client.call("POST", "/start_session")
    assert (await client.call("POST", "/sessions/other/transport/webrtc/connections")).status == 404
    r = await client.call("GET", f"{base}/connections/999/sdp_params")
    assert r.status == 404 and "Unknown connection" in _json(r)["detail"]
    r = await client.call("GET", f"{base}/connections/abc/sdp_params")
    assert r.status == 404
    r = await client.call("POST", f"{base}/connections/12345678901234/ice_candidates", {"candidates": []})
    assert r.status == 404


async def test_malformed_offers(client: Client) -> None:
    await client.call("POST", "/start_session")
    sid = client.reactor.signalling.session_id
    base = f"/sessions/{sid}/transport/webrtc"
    cid = _json(await client.call("POST", f"{base}/connections"))["connection_id"]
    assert cid >= 1001
    url = f"{base}/connections/{cid}/sdp_params"
    assert (await client.call("POST", url, raw=b"{not json")).status == 400
    assert (await client.call("POST", url, raw=b"")).status == 400
    assert (await client.call("POST", url, {"sdp_offer": "hello"})).status == 400
    # an offer that looks like SDP but is not one: accepted (202), then the poll says it failed
    r = await client.call("POST", url, {"sdp_offer": "v=0\r\nthis is not sdp\r\n", "track_mapping": []})
    assert r.status == 202
    for _ in range(100):
        r = await client.call("GET", url)
        if r.status != 202:
            break
        await asyncio.sleep(0.02)
    assert r.status == 409 and "negotiation failed" in _json(r)["detail"]
    assert client.reactor.connections == {}
    assert client.reactor.runner.peers == []  # nothing attached to the runner


async def test_candidate_floods_and_junk(client: Client) -> None:
    await client.call("POST", "/start_session")
    sid = client.reactor.signalling.session_id
    base = f"/sessions/{sid}/transport/webrtc"
    cid = _json(await client.call("POST", f"{base}/connections"))["connection_id"]
    url = f"{base}/connections/{cid}/ice_candidates"
    cand = {
        "candidate": "candidate:1 1 udp 2130706431 10.9.9.9 5000 typ host",
        "sdp_mid": "0",
        "sdp_mline_index": 0,
    }
    assert (await client.call("POST", url, {"candidates": [cand] * 8, "is_final": False})).status == 202
    r = await client.call("POST", url, {"candidates": [cand], "is_final": True})
    assert r.status == 429
    assert (await client.call("POST", url, {"candidates": "x"})).status == 400
    assert (await client.call("POST", url, raw=b"[1, 2")).status == 400


async def test_registrations_and_connections_are_bounded(client: Client) -> None:
    await client.call("POST", "/start_session")
    sid = client.reactor.signalling.session_id
    base = f"/sessions/{sid}/transport/webrtc"
    ids = [_json(await client.call("POST", f"{base}/connections"))["connection_id"] for _ in range(100)]
    assert len(set(ids)) == 100
    limit = client.reactor.signalling.limits.max_pending_registrations
    assert len(client.reactor.signalling._conns) <= limit  # the oldest never-offered ones forgotten
    assert (await client.call("GET", f"{base}/connections/{ids[0]}/sdp_params")).status == 404


async def test_flat_route_conflict(client: Client) -> None:
    await client.call("POST", "/start_session")
    sid = client.reactor.signalling.session_id
    url = f"/sessions/{sid}/transport/webrtc/sdp_params"
    assert (await client.call("GET", url)).status == 404  # nothing posted
    slow = {"sdp_offer": "v=0\r\nnot really\r\n"}
    assert (await client.call("POST", url, slow)).status == 202
    second = await client.call("POST", url, slow)
    assert second.status in (202, 409)  # 409 while the first still negotiates, 202 once it failed


async def test_connections_per_address(runner: Runner) -> None:
    reactor = ReactorFront(runner, max_per_address=1)
    try:
        reactor.signalling.start_session()
        reactor.check_address("10.0.0.1", None)
        reactor._addresses[1001] = "10.0.0.1"
        with pytest.raises(Exception) as info:
            reactor.check_address("10.0.0.1", None)
        assert getattr(info.value, "status", None) == 503
        reactor.check_address("10.0.0.1", 1001)  # its own re-offer
        reactor.check_address("10.0.0.2", None)
    finally:
        await reactor.close()


# --- one connection's channels, without a peer connection -------------------------------------
class FakeChannel:
    def __init__(self, label: str) -> None:
        self.label = label
        self.readyState = "open"
        self.bufferedAmount = 0
        self.sent: list[str | bytes] = []
        self.handlers: dict[str, Any] = {}

    def send(self, payload: str | bytes) -> None:
        self.sent.append(payload)

    def on(self, event: str, fn: Any = None) -> Any:
        def register(f: Any) -> Any:
            self.handlers[event] = f
            return f

        return register(fn) if fn is not None else register

    def close(self) -> None:
        self.readyState = "closed"


def _connection(runner: Runner, **options: Any) -> Any:
    from longlive_runner.serving.reactor.media import MediaOptions, ReactorConnection
    from longlive_runner.serving.reactor.signalling import Offer

    offer = Offer(4242, "v=0\r\n", (), 1, False, False)
    closed: list[Any] = []
    conn = ReactorConnection(
        runner, offer, options=MediaOptions(**options), fps=16.0, on_closed=closed.append
    )
    conn.peer = runner.attach("fake")
    channels = {label: FakeChannel(label) for label in ("control", "data")}
    for ch in channels.values():
        conn._on_datachannel(ch)
    return conn, channels, closed


async def test_junk_and_floods_on_the_channels(runner: Runner) -> None:
    from longlive_runner.serving.reactor import wire

    conn, ch, closed = _connection(runner, max_bad_messages=5, commands_per_second=1.0, command_burst=3)
    try:
        on_data = ch["data"].handlers["message"]
        on_control = ch["control"].handlers["message"]
        on_data(b"\xff\xfe junk")  # binary first: v1; junk is refused with an Error
        assert conn.codec.framing is not None and conn.codec.framing.value == "v1"
        # no request id can be read: a command_error notification (a model message)
        refusal = wire.decode_data_server(bytes(ch["data"].sent[-1]))
        assert refusal["type"] == "command_error" and refusal["data"]["code"] == "bad_json"
        on_control(b"\x00" * 100_000)  # over max_message_bytes: refused unread
        assert "limit" in wire.decode_data_server(bytes(ch["data"].sent[-1]))["data"]["reason"]
        on_data("text on a v1 connection")
        assert conn.bad_messages == 3
        # a flood of commands: the bucket refuses past its burst, with a v1 error each
        for i in range(6):
            on_data(wire.encode_data_client(request_id=f"d{i}", command="get_state", data={}))
        await asyncio.sleep(0)
        codes = [wire.decode_data_server(bytes(p)).get("error", ("",))[0] for p in ch["data"].sent[-3:]]
        assert "rate_limited" in codes
        for _ in range(3):
            on_data(b"\x01")
        await asyncio.sleep(0.05)
        assert conn.closed and closed == [conn]  # too many bad messages: closed
        assert conn.peer not in runner.peers
    finally:
        await conn.close("test over")


async def test_v0_connection_gets_command_errors_and_no_replies(runner: Runner) -> None:
    conn, ch, _ = _connection(runner)
    try:
        on_data = ch["data"].handlers["message"]
        on_data(json.dumps({"scope": "application", "data": {"type": "resume", "data": {}}}))
        await asyncio.sleep(0.05)
        while (item := conn.peer.get_nowait()) is not None:  # the pump task is not running here
            for out in conn.translator.translate(item) if isinstance(item, str) else []:
                conn._emit(out)
        texts = [json.loads(p) for p in ch["data"].sent if isinstance(p, str)]
        errors = [t["data"]["data"] for t in texts if t["data"]["type"] == "command_error"]
        assert errors == [{"command": "resume", "reason": errors[0]["reason"], "code": "not_running"}]
        assert not [t for t in texts if t["data"]["type"] == "ack"]  # v0: no replies
        on_data('{"scope":"runtime","data":{"type":"requestSchema","data":{}}}')
        schema = json.loads(ch["data"].sent[-1])
        assert schema["scope"] == "runtime" and schema["data"]["type"] == "modelSchema"
        ch["control"].handlers["message"](
            '{"type":"notification","event":"resume_track","data":{"name":"main_video"}}'
        )
        assert conn.track.paused is False
    finally:
        await conn.close("test over")


async def test_slow_client_is_closed(runner: Runner) -> None:
    conn, ch, closed = _connection(runner, max_buffered_bytes=10)
    try:
        ch["data"].handlers["message"]('{"type":"get_state","data":{}}')
        ch["data"].bufferedAmount = 11
        conn._send(conn.codec.encode_message("state", {}))
        await asyncio.sleep(0.05)
        assert conn.closed and "too slow" in conn.close_reason
    finally:
        await conn.close("test over")


async def test_an_answered_offer_that_never_connects_is_dropped(runner: Runner) -> None:
    """A real offer (aiortc as the client) gets its answer; the client never connects: the
    connection and its hub peer go after `connect_timeout`."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from longlive_runner.serving.reactor.media import MediaOptions

    reactor = ReactorFront(runner, options=MediaOptions(connect_timeout=0.5))
    client = Client(reactor)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await client.call("POST", "/start_session")
        base = f"/sessions/{reactor.signalling.session_id}/transport/webrtc"
        cid = _json(await client.call("POST", f"{base}/connections"))["connection_id"]
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel("control")
        pc.createDataChannel("data")
        await pc.setLocalDescription(await pc.createOffer())
        mid = pc.getTransceivers()[0].mid
        body = {
            "sdp_offer": pc.localDescription.sdp,
            "track_mapping": [{"mid": mid, "name": "main_video", "kind": "video", "direction": "recvonly"}],
        }
        assert (await client.call("POST", f"{base}/connections/{cid}/sdp_params", body)).status == 202
        for _ in range(200):
            r = await client.call("GET", f"{base}/connections/{cid}/sdp_params")
            if r.status != 202:
                break
            await asyncio.sleep(0.02)
        assert r.status == 200, r.body
        answer = _json(r)
        assert answer["connection_id"] == cid and "m=video" in answer["sdp_answer"]
        assert "a=sendonly" in answer["sdp_answer"]
        peers_with_it = len(runner.peers)
        assert peers_with_it >= 1
        await asyncio.sleep(1.0)
        assert cid not in reactor.connections
        assert len(runner.peers) == peers_with_it - 1
        assert reactor.signalling.state(cid) is not None  # the id stays for a re-offer
    finally:
        await pc.close()
        await reactor.close()


async def test_serve_options(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from longlive_runner.serving.reactor import serve as reactor_serve

    p = argparse.ArgumentParser()
    reactor_serve.add_cli_args(p)
    args = p.parse_args([])
    assert args.webrtc == "on" and args.ice_server == []  # on by default, no STUN/TURN
    assert reactor_serve.check_cli_args(args) is None
    bad = p.parse_args(["--ice-server", "http://stun.example.org"])
    assert "--ice-server" in (reactor_serve.check_cli_args(bad) or "")
    assert reactor_serve.check_cli_args(p.parse_args(["--webrtc-max-connections", "0"])) is not None
    assert reactor_serve.attach(None, None, p.parse_args(["--webrtc", "off"])) is None  # type: ignore[arg-type]
    monkeypatch.setattr(reactor_serve, "available", lambda: False)  # the extra not installed
    assert reactor_serve.attach(None, None, args) is None  # type: ignore[arg-type]
    assert "pip install 'longlive[webrtc]'" in capsys.readouterr().err
