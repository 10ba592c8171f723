"""The one HTTP front (`serving/http.py`): routes with bodies, refusals, CORS, and the websocket on
the same port, against a real listening socket in this process (raw bytes in, raw bytes out)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidStatus

from longlive_runner.serving.access import AccessConfig, AccessPolicy
from longlive_runner.serving.http import (
    HttpError,
    HttpFront,
    HttpRequest,
    HttpResponse,
    Router,
    WebSocketEndpoint,
    add_page_routes,
)

TOKEN = "front-test-token-0123456789"
ALLOWED = "http://app.example:5173"
SDP = "/sessions/{session_id}/transport/webrtc/connections/{connection_id}/sdp_params"


class Reply:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self) -> Any:
        return json.loads(self.body)


async def exchange(port: int, data: bytes) -> Reply:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)  # the front closes after its answer
    writer.close()
    return Reply(raw)


async def call(
    port: int,
    method: str,
    target: str,
    *,
    body: bytes | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return await exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))


def make_front(token: str | None) -> tuple[HttpFront, list[HttpRequest]]:
    seen: list[HttpRequest] = []

    async def sdp(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        offer = request.json()
        if not isinstance(offer, dict) or "sdp_offer" not in offer:
            raise HttpError(400, "bad_request", "no sdp_offer")
        return HttpResponse.json(202, {"session": request.params["session_id"], "got": offer["sdp_offer"]})

    async def info(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, {"query": {k: list(v) for k, v in request.query.items()}})

    async def health(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, {"status": "ok"})

    async def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("a bug")

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    front = HttpFront(
        AccessPolicy(AccessConfig(token=token, allowed_origins=frozenset({ALLOWED}))),
        websocket=WebSocketEndpoint(echo),
        max_connections_per_address=4,
    )
    front.add_route("POST", SDP, sdp, max_body=1000)
    front.add_route("PUT", SDP, sdp, max_body=1000)
    front.add_route("GET", "/info", info, max_body=0)
    front.add_route("GET", "/health", health, protected=False)
    front.add_route("POST", "/broken", broken)
    add_page_routes(front)
    return front, seen


@pytest.fixture
async def open_front() -> AsyncIterator[tuple[HttpFront, list[HttpRequest]]]:
    front, seen = make_front(None)
    await front.start("127.0.0.1", 0)
    try:
        yield front, seen
    finally:
        await front.close()


@pytest.fixture
async def token_front() -> AsyncIterator[HttpFront]:
    front, _ = make_front(TOKEN)
    await front.start("127.0.0.1", 0)
    try:
        yield front
    finally:
        await front.close()


def test_the_router_on_its_own() -> None:
    router = Router()
    from longlive_runner.serving.http import Route

    async def h(request: HttpRequest) -> HttpResponse:
        return HttpResponse(204)

    router.add("GET", "/a/{x}/b", Route("GET", h, 0, True))
    router.add("POST", "/a/{x}/b", Route("POST", h, 0, True))
    found = router.match("/a/caf%C3%A9/b")
    assert found is not None and set(found[0]) == {"GET", "POST"} and found[1] == {"x": "café"}
    assert (
        router.match("/a/x/y/b") is None and router.match("/a//b") is None and router.match("/a/x/b/") is None
    )
    with pytest.raises(ValueError):
        router.add("GET", "/a/{x}/b", Route("GET", h, 0, True))
    with pytest.raises(ValueError):
        router.add("HEAD", "/c", Route("HEAD", h, 0, True))


async def test_a_post_with_a_json_body_is_routed_with_its_parameters(
    open_front: tuple[HttpFront, list[HttpRequest]],
) -> None:
    front, seen = open_front
    body = json.dumps({"sdp_offer": "v=0", "track_mapping": []}).encode()
    target = "/sessions/local/transport/webrtc/connections/c1/sdp_params?x=1&x=2"
    reply = await call(front.port, "POST", target, body=body, headers=(("Content-Type", "application/json"),))
    assert reply.status == 202 and reply.json() == {"session": "local", "got": "v=0"}
    assert reply.headers["content-type"] == "application/json" and reply.headers["connection"] == "close"
    (request,) = seen
    assert request.method == "POST" and request.path == target.partition("?")[0]
    assert request.params == {"session_id": "local", "connection_id": "c1"}
    assert request.query == {"x": ("1", "2")} and request.body == body and request.peer == "127.0.0.1"
    assert request.headers["content-type"] == "application/json"
    # The same path with PUT, and a body sent in pieces after `Expect: 100-continue`.
    reader, writer = await asyncio.open_connection("127.0.0.1", front.port)
    writer.write(
        f"PUT {target} HTTP/1.1\r\nHost: localhost:{front.port}\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100")
    writer.write(body[:5])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(body[5:])
    put = Reply(await asyncio.wait_for(reader.read(), 10))
    writer.close()
    assert put.status == 202 and seen[-1].method == "PUT"


async def test_refusals_404_405_413_400_411_and_500(open_front: tuple[HttpFront, list[HttpRequest]]) -> None:
    front, seen = open_front
    port = front.port
    sdp = "/sessions/local/transport/webrtc/connections/c1/sdp_params"
    missing = await call(port, "GET", "/no/such/thing")
    assert missing.status == 404 and missing.json()["error"] == "not_found"
    wrong = await call(port, "DELETE", sdp)
    assert wrong.status == 405 and wrong.headers["allow"] == "POST, PUT"
    assert (await call(port, "POST", "/info", body=b"{}")).headers["allow"] == "GET, HEAD"
    big = await call(port, "POST", sdp, body=b"x" * 1001)
    assert big.status == 413 and big.json()["error"] == "body_too_large" and "1000" in big.json()["reason"]
    notjson = await call(port, "POST", sdp, body=b"{nope")
    assert notjson.status == 400 and "not JSON" in notjson.json()["reason"]
    assert (await call(port, "POST", sdp, body=b"[]")).status == 400  # the handler's HttpError
    chunked = await call(port, "POST", sdp, headers=(("Transfer-Encoding", "chunked"),))
    assert chunked.status == 411
    twice = await call(port, "POST", sdp, body=b"{}", headers=(("Content-Length", "7"),))
    assert twice.status == 400 and "Content-Length" in twice.json()["reason"]
    bug = await call(port, "POST", "/broken", body=b"")
    assert bug.status == 500 and bug.json()["error"] == "internal" and "a bug" not in bug.json()["reason"]
    line = await exchange(port, b"BREW / HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n")
    assert line.status == 400
    too_big = await exchange(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
    assert too_big.status == 431
    assert (await exchange(port, b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n")).status == 505
    assert len(seen) == 2  # only the two bodies that reached the handler
    health = await call(port, "HEAD", "/health")
    assert health.status == 200 and health.body == b"" and health.headers["content-length"] == "17"


async def test_the_access_rules_apply_to_every_route(token_front: HttpFront) -> None:
    port = token_front.port
    sdp = "/sessions/local/transport/webrtc/connections/c1/sdp_params"
    body = b'{"sdp_offer": "v=0"}'
    refused = await call(port, "POST", sdp, body=body)
    assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert (
        await call(port, "POST", sdp, body=body, headers=(("Authorization", "Bearer local"),))
    ).status == 401
    ok = await call(port, "POST", sdp, body=body, headers=(("Authorization", f"Bearer {TOKEN}"),))
    assert ok.status == 202
    assert (await call(port, "GET", "/no/such/thing")).status == 401  # no map of the routes without it
    assert (await call(port, "GET", "/health")).status == 200  # unprotected
    evil = await call(
        port,
        "POST",
        sdp,
        body=body,
        headers=(("Authorization", f"Bearer {TOKEN}"), ("Origin", "http://evil.example")),
    )
    assert evil.status == 403 and evil.json()["error"] == "origin_not_allowed"
    # The body of a refused request is never read: a huge one is refused at once.
    assert (await call(port, "POST", sdp, headers=(("Content-Length", str(10**9)),))).status == 401


async def test_without_a_token_bearer_local_is_like_no_credential(
    open_front: tuple[HttpFront, list[HttpRequest]],
) -> None:
    front, _ = open_front
    sdp = "/sessions/local/transport/webrtc/connections/c1/sdp_params"
    reply = await call(
        front.port, "POST", sdp, body=b'{"sdp_offer": "o"}', headers=(("Authorization", "Bearer local"),)
    )
    assert reply.status == 202
    assert (
        await call(front.port, "GET", "/info", headers=(("Authorization", "Bearer local"),))
    ).status == 200
    other_host = await exchange(front.port, b"GET /info HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert other_host.status == 403 and other_host.json()["error"] == "host_not_allowed"


async def test_cors_preflight_and_headers_for_allowed_origins(
    open_front: tuple[HttpFront, list[HttpRequest]],
) -> None:
    front, _ = open_front
    sdp = "/sessions/local/transport/webrtc/connections/c1/sdp_params"
    preflight = (
        ("Origin", ALLOWED),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "authorization, content-type, reactor-api-version"),
    )
    ok = await call(front.port, "OPTIONS", sdp, headers=preflight)
    assert ok.status == 204 and ok.body == b""
    assert ok.headers["access-control-allow-origin"] == ALLOWED
    assert ok.headers["access-control-allow-methods"] == "POST, PUT"
    assert ok.headers["access-control-allow-headers"] == "authorization, content-type, reactor-api-version"
    evil = await call(front.port, "OPTIONS", sdp, headers=(("Origin", "http://evil.example"), preflight[1]))
    assert evil.status == 403 and "access-control-allow-origin" not in evil.headers
    assert (await call(front.port, "OPTIONS", sdp)).status == 405  # not a preflight
    post = await call(front.port, "POST", sdp, body=b'{"sdp_offer": "o"}', headers=(("Origin", ALLOWED),))
    assert post.status == 202 and post.headers["access-control-allow-origin"] == ALLOWED
    plain = await call(front.port, "GET", "/info")
    assert "access-control-allow-origin" not in plain.headers


async def test_the_websocket_and_the_page_share_the_port(
    open_front: tuple[HttpFront, list[HttpRequest]],
) -> None:
    front, _ = open_front
    async with connect(front.url + "/any/path?x=1") as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 10) == "hello"
        await ws.send(b"\x00" * 100_000)
        assert len(await asyncio.wait_for(ws.recv(), 10)) == 100_000
    with pytest.raises(InvalidStatus) as refused:
        await connect(front.url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    page = await call(front.port, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert (await call(front.port, "GET", "/static/app.js")).status == 200
    assert (await call(front.port, "GET", "/static/nope.js")).status == 404
    assert (await call(front.port, "GET", "/static/..%2Fhttp.py")).status == 404


async def test_connections_per_address_are_bounded(open_front: tuple[HttpFront, list[HttpRequest]]) -> None:
    front, _ = open_front
    held = [await asyncio.open_connection("127.0.0.1", front.port) for _ in range(4)]  # idle, no request
    try:
        await asyncio.sleep(0.05)
        fifth = await call(front.port, "GET", "/health")
        assert fifth.status == 503 and fifth.json()["error"] == "too_many_connections"
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.05)
    assert (await call(front.port, "GET", "/health")).status == 200  # the slots came back
    sockets = [await connect(front.url) for _ in range(4)]
    try:
        async with connect(front.url) as fifth_ws:
            await asyncio.wait_for(fifth_ws.wait_closed(), 10)
            assert fifth_ws.close_code == 1013
    finally:
        for ws in sockets:
            await ws.close()
