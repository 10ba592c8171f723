"""Reactor's local-mode routes on the cluster gateway: a session per `POST /start_session`.

Signalling goes through the gateway, media from the worker. `POST /start_session` (or the
coordinator form `POST /sessions`) places a new session on a free worker
(`Gateway.open_reactor_session`: the placement and per-address cap of websocket sessions, no
queue) and answers the worker's descriptor with `session_id` = the session's director key (an
unguessable secret; `/info` lists none). Every `/sessions/{id}/transport/webrtc/...` call is
forwarded to that worker's own Reactor routes (`serving/reactor/routes.py`, on the session's
port behind its secret token), so the SDP answer carries the worker's ICE candidates and the
video flows from the worker to the client directly.

| route | answer |
|---|---|
| `POST /start_session`, `POST /sessions` | the worker's descriptor (200 / 201); 503 while no worker is free |
| `GET /session`, `POST /stop_session` | the one Reactor session of the caller's address (else 404 / nothing) |
| `GET /sessions/{id}`, `GET /sessions/{id}/info` | the descriptor |
| `DELETE /sessions/{id}` | ends the session now |
| `.../transport/webrtc/...` | forwarded to the worker, its answer as is |

While every worker is busy: HTTP 503 `{"detail", "error": "unavailable", "reason"}` with
`Retry-After`, which both official clients surface as a failed connect carrying that text (the
local mode has no state to poll; Reactor clients do not wait in the websocket queue).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ..http import HttpFront, HttpRequest, HttpResponse
from .gateway import Gateway, NoWorkerFree, ReactorPlacement

__all__ = ["FORWARD_TIMEOUT", "add_reactor_routes", "forward"]

SDP_BODY_LIMIT = 96 * 1024  # as serving/reactor/routes.py's (an SDP offer is a few KiB)
SMALL_BODY_LIMIT = 16 * 1024
#: Largest answer read from a worker (an SDP answer is a few KiB).
MAX_ANSWER_BYTES = 1024 * 1024
#: Seconds a forwarded call may take.
FORWARD_TIMEOUT = 15.0
#: Seconds a client is told to wait (`Retry-After`) when no worker is free.
BUSY_RETRY_AFTER = 5

_PREFIX = "/sessions/{session_id}/transport/webrtc"


def _error(status: int, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    code = {400: "bad_request", 404: "not_found"}.get(status, "unavailable")
    return HttpResponse.json(status, {"detail": detail, "error": code, "reason": detail}, headers)


async def forward(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes,
    token: str,
    *,
    timeout: float = FORWARD_TIMEOUT,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to a worker's server: (status, headers lower-cased, body)."""

    async def call() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: {netloc}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length > MAX_ANSWER_BYTES:
                raise ValueError(f"the worker's answer is over {MAX_ANSWER_BYTES} bytes")
            data = await reader.readexactly(length) if method != "HEAD" else b""
            return status, headers, data
        finally:
            writer.close()

    return await asyncio.wait_for(call(), timeout)


def add_reactor_routes(front: HttpFront, gateway: Gateway) -> None:
    """Register the routes (protected like the rest of the gateway: token, Origin, limits)."""

    def with_key(obj: Any, placement: ReactorPlacement) -> Any:
        if isinstance(obj, dict) and obj.get("session_id") == placement.label:
            obj = {**obj, "session_id": placement.key}
        return obj

    async def relay(request: HttpRequest, placement: ReactorPlacement, path: str) -> HttpResponse:
        try:
            status, headers, data = await forward(
                placement.host, placement.port, request.method, path, request.body, placement.secret
            )
        except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
            return _error(503, f"the session's worker does not answer ({type(exc).__name__})")
        extra = tuple((k.title(), v) for k, v in headers.items() if k == "retry-after")
        if headers.get("content-type", "").startswith("application/json") and data.strip():
            try:
                obj = json.loads(data)
            except ValueError:
                return _error(503, "the session's worker answered junk")
            return HttpResponse.json(status, with_key(obj, placement), extra)
        return HttpResponse(status, data, headers=extra)

    def session_of(request: HttpRequest) -> ReactorPlacement | None:
        key = request.params.get("session_id", "")
        return gateway.reactor_session(key) if key else None

    def unknown() -> HttpResponse:
        # The key is not echoed: a near miss of a real key must not show up anywhere.
        return _error(404, "Unknown session (it ended, or never was)")

    def own_session(request: HttpRequest) -> ReactorPlacement | None:
        keys = gateway.reactor_sessions_of(request.peer)
        return gateway.reactor_session(keys[0]) if len(keys) == 1 else None

    def start(path: str) -> Any:
        async def handler(request: HttpRequest) -> HttpResponse:
            try:
                placement = await gateway.open_reactor_session(request.peer)
            except NoWorkerFree as exc:
                return _error(
                    503, f"no worker free for a new session: {exc}", (("Retry-After", str(BUSY_RETRY_AFTER)),)
                )
            answer = await relay(request, placement, path)
            if answer.status >= 300:
                gateway.end_reactor_session(placement.key)
            return answer

        return handler

    async def get_own(request: HttpRequest) -> HttpResponse:
        placement = own_session(request)
        if placement is None:
            return _error(404, "no single Reactor session from this address: GET /sessions/{id}")
        return await relay(request, placement, "/session")

    async def stop_own(request: HttpRequest) -> HttpResponse:
        placement = own_session(request)
        if placement is not None:
            gateway.end_reactor_session(placement.key)
        return HttpResponse(200, b"{}\n", "application/json")

    async def get_session(request: HttpRequest) -> HttpResponse:
        placement = session_of(request)
        if placement is None:
            return unknown()
        return await relay(request, placement, "/session")

    async def delete_session(request: HttpRequest) -> HttpResponse:
        placement = session_of(request)
        if placement is None:
            return unknown()
        gateway.end_reactor_session(placement.key)
        return HttpResponse(200, b"{}\n", "application/json")

    def transport(tail: str) -> Any:
        async def handler(request: HttpRequest) -> HttpResponse:
            placement = session_of(request)
            if placement is None:
                return unknown()
            cid = request.params.get("connection_id", "")
            if "{connection_id}" in tail and (not cid.isdigit() or len(cid) > 10):
                return _error(404, f"Unknown connection {cid[:20]!r}")
            rest = tail.replace("{connection_id}", cid)
            return await relay(request, placement, f"/sessions/{placement.label}/transport/webrtc{rest}")

        return handler

    conn = "/connections/{connection_id}"
    table: list[tuple[str, str, Any, int]] = [
        ("POST", "/start_session", start("/start_session"), SMALL_BODY_LIMIT),
        ("POST", "/sessions", start("/sessions"), SMALL_BODY_LIMIT),
        ("GET", "/session", get_own, 0),
        ("POST", "/stop_session", stop_own, SMALL_BODY_LIMIT),
        ("GET", "/sessions/{session_id}", get_session, 0),
        ("GET", "/sessions/{session_id}/info", get_session, 0),
        ("DELETE", "/sessions/{session_id}", delete_session, SMALL_BODY_LIMIT),
    ]
    for method, tail, limit in (
        ("GET", "/ice_servers", 0),
        ("POST", "/connections", SMALL_BODY_LIMIT),
        ("POST", f"{conn}/sdp_params", SDP_BODY_LIMIT),
        ("PUT", f"{conn}/sdp_params", SDP_BODY_LIMIT),
        ("GET", f"{conn}/sdp_params", 0),
        ("POST", f"{conn}/ice_candidates", SMALL_BODY_LIMIT),
        ("POST", "/sdp_params", SDP_BODY_LIMIT),
        ("PUT", "/sdp_params", SDP_BODY_LIMIT),
        ("GET", "/sdp_params", 0),
    ):
        table.append((method, f"{_PREFIX}{tail}", transport(tail), limit))
    for method, pattern, handler, max_body in table:
        front.add_route(method, pattern, handler, max_body=max_body)
