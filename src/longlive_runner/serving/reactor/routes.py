"""The HTTP routes of Reactor's local mode and WebRTC signalling, on the runner's one HTTP front.

`add_reactor_routes(front, reactor)` registers them on a `serving.http.HttpFront`, so they share
its port, its access rules (token, `Origin` / `Host`, per-address limits: docs/security.md) and
its body limits. Every handler is a plain `async def (HttpRequest) -> HttpResponse` deciding
through `ReactorFront` (and its I/O-free `Signalling`).

| route | answer |
|---|---|
| `POST /start_session`, `GET /session` | the session descriptor (one shared session) |
| `POST /stop_session` | 200 (the shared video goes on for its other viewers) |
| `GET /schema` | the OpenAPI document of the commands (what `requestSchema` answers) |
| `POST /sessions` | 201, the descriptor: the coordinator form (a JWT = the runner's token) |
| `GET /sessions/{id}`, `GET /sessions/{id}/info`, `DELETE /sessions/{id}` | the descriptor; 200 |
| `GET .../transport/webrtc/ice_servers` | `{ice_servers: [{uris, credentials?}]}` |
| `POST .../transport/webrtc/connections` | 201 `{connection_id}` |
| `POST|PUT .../connections/{cid}/sdp_params` | 202 `{connection_id}` |
| `GET .../connections/{cid}/sdp_params` | 202 pending, 200 `{sdp_answer, connection_id}` |
| `POST .../connections/{cid}/ice_candidates` | 202 |
| `POST|PUT|GET .../transport/webrtc/sdp_params` | the same, flat (JS SDK 2.9.0) |

Errors: `{"detail", "error", "reason"}` with 400 (malformed), 404 (unknown session or
connection), 409 (out of order, negotiation failed), 413 (too large), 429 / 503 (bounds).
"""

from __future__ import annotations

import json
from typing import Any

from ..http import HttpFront, HttpRequest, HttpResponse
from .front import ReactorFront
from .schema import openapi_document
from .signalling import SignallingError

__all__ = ["SDP_BODY_LIMIT", "add_reactor_routes", "make_handlers"]

#: Largest request body of the signalling routes (an SDP offer is a few KiB).
SDP_BODY_LIMIT = 96 * 1024
SMALL_BODY_LIMIT = 16 * 1024

_PREFIX = "/sessions/{session_id}/transport/webrtc"

Handler = Any  # Callable[[HttpRequest], Awaitable[HttpResponse]]


def _error(status: int, detail: str) -> HttpResponse:
    code = {400: "bad_request", 404: "not_found", 409: "conflict", 413: "too_large", 429: "too_many"}.get(
        status, "unavailable"
    )
    return HttpResponse.json(status, {"detail": detail, "error": code, "reason": detail})


def _body(request: HttpRequest, *, optional: bool = False) -> Any:
    if not request.body.strip():
        if optional:
            return {}
        raise SignallingError(400, "the request needs a JSON body")
    try:
        return json.loads(request.body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SignallingError(400, f"the body is not JSON: {exc}") from None


def _cid(request: HttpRequest) -> int:
    raw = request.params.get("connection_id", "")
    if not raw.isdigit() or len(raw) > 10:
        raise SignallingError(404, f"Unknown connection {raw[:20]!r}")
    return int(raw)


def make_handlers(reactor: ReactorFront) -> list[tuple[str, str, Handler, int]]:
    """(method, pattern, handler, max_body) of every route."""
    sig = reactor.signalling

    def guarded(fn: Any) -> Handler:
        async def handler(request: HttpRequest) -> HttpResponse:
            try:
                if "session_id" in request.params:
                    sig.check_session(request.params["session_id"])
                result: HttpResponse = await fn(request)
                return result
            except SignallingError as exc:
                return _error(exc.status, exc.detail)

        handler.__name__ = getattr(fn, "__name__", "handler")
        return handler

    async def start_session(request: HttpRequest) -> HttpResponse:
        body = _body(request, optional=True)
        if not isinstance(body, dict):
            raise SignallingError(400, "start_session: the body must be a JSON object")
        sig.start_session()
        return HttpResponse.json(200, reactor.descriptor())

    async def create_session(request: HttpRequest) -> HttpResponse:
        body = _body(request, optional=True)
        if not isinstance(body, dict):
            raise SignallingError(400, "sessions: the body must be a JSON object")
        model = body.get("model")
        name = model.get("name") if isinstance(model, dict) else None
        if name is not None and name != reactor.model_name:
            raise SignallingError(404, f"this runner serves the model {reactor.model_name!r}, not {name!r}")
        sig.start_session()
        return HttpResponse.json(201, reactor.descriptor())

    async def get_session(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, reactor.descriptor())

    async def schema(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, openapi_document(reactor.runner.limits))

    async def stop_session(request: HttpRequest) -> HttpResponse:
        sig.stop_session()
        return HttpResponse(200, b"{}\n")

    async def ice_servers(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, sig.ice_servers_payload())

    async def register(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(201, {"connection_id": sig.register()})

    def offer_handler(flat: bool) -> Handler:
        async def offer(request: HttpRequest) -> HttpResponse:
            cid = None if flat else _cid(request)
            body = _body(request)
            reactor.check_address(request.peer, cid)
            accepted = sig.offer(cid, body, reoffer=request.method == "PUT")
            reactor.start_offer(accepted, request.peer)
            return HttpResponse.json(202, {"connection_id": accepted.connection_id})

        return offer

    def answer_handler(flat: bool) -> Handler:
        async def answer(request: HttpRequest) -> HttpResponse:
            found = sig.take_answer(None if flat else _cid(request))
            if found is None:
                return HttpResponse(202, b"", headers=(("Retry-After", "1"),))
            return HttpResponse.json(200, found)

        return answer

    async def ice_candidates(request: HttpRequest) -> HttpResponse:
        cid = _cid(request)
        candidates, _final, early = sig.candidates(cid, _body(request))
        if not early:
            await reactor.add_candidates(cid, candidates)
        return HttpResponse(202, b"")

    conn = f"{_PREFIX}/connections/{{connection_id}}"
    table: list[tuple[str, str, Any, int]] = [
        ("POST", "/start_session", start_session, SMALL_BODY_LIMIT),
        ("GET", "/session", get_session, 0),
        ("POST", "/stop_session", stop_session, SMALL_BODY_LIMIT),
        ("GET", "/schema", schema, 0),
        ("POST", "/sessions", create_session, SMALL_BODY_LIMIT),
        ("GET", "/sessions/{session_id}", get_session, 0),
        ("GET", "/sessions/{session_id}/info", get_session, 0),
        ("DELETE", "/sessions/{session_id}", stop_session, SMALL_BODY_LIMIT),
        ("GET", f"{_PREFIX}/ice_servers", ice_servers, 0),
        ("POST", f"{_PREFIX}/connections", register, SMALL_BODY_LIMIT),
        ("POST", f"{conn}/sdp_params", offer_handler(False), SDP_BODY_LIMIT),
        ("PUT", f"{conn}/sdp_params", offer_handler(False), SDP_BODY_LIMIT),
        ("GET", f"{conn}/sdp_params", answer_handler(False), 0),
        ("POST", f"{conn}/ice_candidates", ice_candidates, SMALL_BODY_LIMIT),
        ("POST", f"{_PREFIX}/sdp_params", offer_handler(True), SDP_BODY_LIMIT),
        ("PUT", f"{_PREFIX}/sdp_params", offer_handler(True), SDP_BODY_LIMIT),
        ("GET", f"{_PREFIX}/sdp_params", answer_handler(True), 0),
    ]
    return [(m, p, guarded(h), limit) for m, p, h, limit in table]


def add_reactor_routes(front: HttpFront, reactor: ReactorFront) -> None:
    """Register every route on `front` (protected like the rest: token, Origin, limits)."""
    for method, pattern, handler, max_body in make_handlers(reactor):
        front.add_route(method, pattern, handler, max_body=max_body)
