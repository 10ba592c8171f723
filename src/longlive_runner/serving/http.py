"""One HTTP front for every server of the runner: routes, request bodies, the access rules, the websocket.

`serve` (`server.RunnerServer`) and the cluster gateway (`cluster.gateway.GatewayServer`) each
compose one `HttpFront`; a protocol front (the Reactor routes) adds its routes to the same one, so
they all share one port, one set of access rules and one way to refuse.

```python
front = HttpFront(AccessPolicy(AccessConfig(token=None)), websocket=WebSocketEndpoint(handle))
front.add_route("GET", "/health", health, protected=False)
front.add_route("POST", "/sessions/{session_id}/things", make_thing, max_body=65536)
await front.start("127.0.0.1", 8765)
...
await front.close()
```

Why our own HTTP/1.1 reader: websockets' handshake parser (`websockets.http11.Request.parse`)
refuses any request with a body, so a `POST` with JSON cannot go through it. The listening socket's
asyncio protocol is ours (`_HttpConnection`): it reads one bounded request head, applies the access
rules, and then either answers the request itself (plain HTTP, one request per connection as
websockets answered them before, bodies up to the route's `max_body`) or, for a websocket upgrade that passed the rules, hands the socket to websockets'
public classes (a `ServerConnection` over a `ServerProtocol`, run under a `websockets` `Server`)
and replays the bytes it read. From then on the socket's protocol is the websockets connection
itself: the frame path goes through no code of ours.

Rules applied to every request, in order (the rules themselves are `access.py`'s):

1. a malformed head: 400 (431 when too large; 505 for an HTTP version other than 1.0 / 1.1);
2. `AccessPolicy.check`: the target (400), `Host` (400, 403), the method (405 with `Allow`), then
   for a protected route (every route unless added with `protected=False`; the websocket; an
   unknown path): `Origin` (403), the failure limiter (429) and the token (401);
3. no route for the path: 404; a CORS preflight (`OPTIONS` with `Origin` and
   `Access-Control-Request-Method`) from an allowed origin: 204 with the path's methods;
4. the body: `Content-Length` only (411 for `Transfer-Encoding`), at most the route's `max_body`
   (413, before any of it is read);
5. connections: plain HTTP connections per address (`max_connections_per_address`, 503 past it)
   and in all (`MAX_HTTP_CONNECTIONS`); websockets per address (the same limit; close code 1013).

Responses to a request with an allowed `Origin` carry `Access-Control-Allow-Origin` (no cookies
are used: the token travels in `Authorization`, so no `Allow-Credentials`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import json
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import parse_qs, unquote

from websockets.asyncio.server import Server, ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import SERVER
from websockets.protocol import OPEN
from websockets.server import ServerProtocol

from .access import (
    AccessPolicy,
    BadRequest,
    ConnectionCounter,
    Refusal,
    RequestFacts,
    address_key,
    origin_allowed,
    parse_host,
    split_target,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "HEALTH_PATH",
    "INFO_PATH",
    "MAX_HTTP_CONNECTIONS",
    "MIN_MAX_UNSENT_BYTES",
    "STATIC_TYPES",
    "Handler",
    "HttpError",
    "HttpFront",
    "HttpRequest",
    "HttpResponse",
    "Router",
    "WebSocketEndpoint",
    "add_page_routes",
    "close_reason",
    "format_url",
    "static_file",
]

logger = logging.getLogger(__name__)

HEALTH_PATH = "/health"
INFO_PATH = "/info"
#: Bytes a route's request body may have unless `add_route` says otherwise.
DEFAULT_MAX_BODY = 64 * 1024
#: The request line and headers together, and the number of headers.
MAX_HEAD_BYTES = 16 * 1024
MAX_HEADERS = 100
#: Seconds for a request's head, then its body, to arrive.
HEAD_TIMEOUT = 10.0
#: Plain HTTP connections (not yet a websocket) open at once, all addresses together.
MAX_HTTP_CONNECTIONS = 512
#: Seconds a websocket has to finish its handshake once handed over (websockets' `open_timeout`).
OPEN_TIMEOUT = 10.0
#: Bytes written to a websocket and not yet taken by its client (pongs included) before it is
#: dropped (the floor; `RunnerServer` adds two frames).
MIN_MAX_UNSENT_BYTES = 4 * 2**20


def format_url(host: str, port: int, scheme: str = "ws") -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def close_reason(text: str) -> str:
    """`text` cut to what a websocket close reason holds (123 bytes of UTF-8)."""
    data = text.encode("utf-8")
    return text if len(data) <= 123 else data[:120].decode("utf-8", "ignore") + "..."


# ----------------------------------------------------------------------------------------------
# Requests, responses, routes (no I/O)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HttpRequest:
    """One request as a route's handler gets it (the access rules have passed)."""

    method: str  # "GET", "POST", "PUT", "DELETE", "OPTIONS" (HEAD reaches GET handlers as "HEAD")
    path: str  # without the query string, as sent (percent-encoded)
    query: Mapping[str, tuple[str, ...]]
    headers: Headers  # websockets.datastructures.Headers (case-insensitive)
    body: bytes
    peer: str | None  # the client's IP address
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def json(self) -> Any:
        """The body as JSON; `HttpError` 400 when it is not (or is empty)."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError(400, "bad_request", f"the body is not JSON: {exc}") from None


@dataclass(frozen=True)
class HttpResponse:
    """A route's answer. `headers`: extra headers (name, value); `Content-Length`, `Date`,
    `Connection` and CORS headers are the front's."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
        return cls(status, (json.dumps(obj) + "\n").encode("utf-8"), "application/json", headers)

    @classmethod
    def error(
        cls, status: int, error: str, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> HttpResponse:
        """The front's error body: `{"error": code, "reason": text}`."""
        return cls.json(status, {"error": error, "reason": reason}, headers)


class HttpError(Exception):
    """Raised by a handler (or `HttpRequest.json`) to answer `status` with the front's error body."""

    def __init__(
        self, status: int, error: str, reason: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers

    def response(self) -> HttpResponse:
        return HttpResponse.error(self.status, self.error, self.reason, self.headers)


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    handler: Handler
    max_body: int
    protected: bool


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Router:
    """Method + path pattern -> handler. A pattern is a path whose `{name}` parts each match one
    non-empty segment (no `/`); its value reaches the handler percent-decoded in `params` (it may
    then hold any character: check it). The first pattern added that matches a path wins."""

    def __init__(self) -> None:
        self._patterns: list[tuple[str, re.Pattern[str], dict[str, Route]]] = []

    def add(self, method: str, pattern: str, route: Route) -> None:
        method = method.upper()
        if method in ("HEAD",):
            raise ValueError("HEAD is answered by the GET route of the path")
        if not pattern.startswith("/"):
            raise ValueError(f"a route pattern starts with '/': {pattern!r}")
        for text, _, routes in self._patterns:
            if text == pattern:
                if method in routes:
                    raise ValueError(f"{method} {pattern} has a route already")
                routes[method] = route
                return
        parts, last = [], 0
        for match in _PARAM.finditer(pattern):
            parts.append(re.escape(pattern[last : match.start()]))
            parts.append(f"(?P<{match.group(1)}>[^/]+)")
            last = match.end()
        parts.append(re.escape(pattern[last:]))
        self._patterns.append((pattern, re.compile("".join(parts)), {method: route}))

    def match(self, path: str) -> tuple[dict[str, Route], dict[str, str]] | None:
        """(the routes of the path by method, its parameters), or None when no pattern matches."""
        for _, regex, routes in self._patterns:
            found = regex.fullmatch(path)
            if found is not None:
                return routes, {k: unquote(v) for k, v in found.groupdict().items()}
        return None


def allowed_methods(routes: Mapping[str, Route]) -> frozenset[str]:
    methods = set(routes)
    if "GET" in methods:
        methods.add("HEAD")
    return frozenset(methods)


# ----------------------------------------------------------------------------------------------
# The request head (no I/O)
# ----------------------------------------------------------------------------------------------
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")


class HeadError(Exception):
    """A request head that cannot be read: answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    version: str
    headers: Headers


def parse_head(data: bytes) -> Head:
    """The request line and headers (`data` ends before the blank line); `HeadError` when malformed."""
    text = data.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1]:
        raise HeadError(400, "malformed request line")
    method, target, version = parts
    if not version.startswith("HTTP/"):
        raise HeadError(400, "malformed request line")
    if version not in _VERSIONS:
        raise HeadError(505, f"{version} is not supported; use HTTP/1.1")
    if len(lines) - 1 > MAX_HEADERS:
        raise HeadError(431, f"more than {MAX_HEADERS} headers")
    headers = Headers()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HeadError(400, "malformed header line")
        value = value.strip(" \t")
        if not _VALUE.fullmatch(value):
            raise HeadError(400, f"malformed value of header {name}")
        headers[name] = value
    return Head(method, target, version, headers)


def body_length(headers: Headers) -> int:
    """The body's length from `Content-Length` (0 without); `HttpError` 400 / 411 otherwise."""
    if "Transfer-Encoding" in headers:
        raise HttpError(
            411, "length_required", "bodies are read with Content-Length only (no Transfer-Encoding)"
        )
    values = {v.strip() for value in headers.get_all("Content-Length") for v in value.split(",")}
    if not values:
        return 0
    if len(values) != 1:
        raise HttpError(400, "bad_request", "conflicting Content-Length headers")
    (value,) = values
    if not value.isdigit() or len(value) > 18:
        raise HttpError(400, "bad_request", f"malformed Content-Length {value[:40]!r}")
    return int(value)


def is_upgrade(headers: Headers) -> bool:
    return "websocket" in ",".join(headers.get_all("Upgrade")).lower()


def encode_response(
    response: HttpResponse, *, head_only: bool = False, extra: tuple[tuple[str, str], ...] = ()
) -> bytes:
    """The bytes of `response` (HTTP/1.1, then the connection closes); `head_only`: without its
    body (HEAD), same headers."""
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Status"
    lines = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        f"Server: {SERVER}",
        "Connection: close",
    ]
    if response.status not in (204, 304) and response.status >= 200:
        lines.append(f"Content-Type: {response.content_type}")
        lines.append(f"Content-Length: {len(response.body)}")
    names = {name.lower() for name, _ in response.headers}
    if "cache-control" not in names:
        lines.append("Cache-Control: no-store")
    if "x-content-type-options" not in names:
        lines.append("X-Content-Type-Options: nosniff")
    for name, value in (*response.headers, *extra):
        if "\r" in value or "\n" in value or not _TOKEN.fullmatch(name):
            raise ValueError(f"bad response header {name!r}")
        lines.append(f"{name}: {value}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


# ----------------------------------------------------------------------------------------------
# The page (the live view's files)
# ----------------------------------------------------------------------------------------------
#: The browser live view (package data in `static/`): `GET /`, and its files at `/static/NAME`.
#: The page holds no secret: its websocket and `/info` carry the token.
STATIC_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
STATIC_NAME = re.compile(r"[A-Za-z0-9_-]+\.(?:html|js|css)")
PAGE_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; media-src blob:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def static_file(name: str) -> HttpResponse:
    """The live view's file `name` (`index.html` is the page), or 404: the one place that reads
    `static/` (`serve`, the gateway and the Ray Serve app answer with it)."""
    if not STATIC_NAME.fullmatch(name):
        return HttpResponse(404, f"no such file: {name}\n".encode(), "text/plain; charset=utf-8")
    try:
        data = (resources.files("longlive_runner.serving") / "static" / name).read_bytes()
    except OSError:
        return HttpResponse(404, f"no such file: {name}\n".encode(), "text/plain; charset=utf-8")
    return HttpResponse(
        200,
        data,
        STATIC_TYPES[name.rsplit(".", 1)[1]],
        (("Cache-Control", "no-cache"), ("Content-Security-Policy", PAGE_POLICY)),
    )


def add_page_routes(front: HttpFront) -> None:
    """`GET /` (the page) and `GET /static/{name}` (its files), open to anyone who passes `Host`."""

    async def page(request: HttpRequest) -> HttpResponse:
        return static_file("index.html")

    async def file(request: HttpRequest) -> HttpResponse:
        return static_file(request.params["name"])

    front.add_route("GET", "/", page, protected=False, max_body=0)
    front.add_route("GET", "/static/{name}", file, protected=False, max_body=0)


# ----------------------------------------------------------------------------------------------
# The websocket
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebSocketEndpoint:
    """What a front does with a websocket upgrade that passed the access rules (at any path: the
    handler reads `connection.request.path`). `max_size`: the largest message a client may send;
    `max_unsent_bytes`: bytes sent and not yet read (pongs included) before the connection drops."""

    handler: Callable[[ServerConnection], Awaitable[None]]
    max_size: int | None = 2**20
    max_unsent_bytes: int = MIN_MAX_UNSENT_BYTES
    close_timeout: float = 5.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0


class BoundedConnection(ServerConnection):
    """A websocket connection that is dropped when its client stops taking what it is sent.

    The pump sends one message at a time and waits while the socket's buffer is over websockets'
    `write_limit`, but websockets answers each ping with a pong by itself: a client that sends
    pings and never reads would grow that buffer without end. After each read, the bytes still
    waiting to be written are checked against `max_unsent_bytes`.
    """

    max_unsent_bytes = MIN_MAX_UNSENT_BYTES

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        if transport.is_closing():
            return
        unsent = transport.get_write_buffer_size()
        if unsent > self.max_unsent_bytes:
            logger.warning(
                "dropping %s: %d bytes sent to it are not read (the limit is %d; pongs included)",
                peer_name(self),
                unsent,
                self.max_unsent_bytes,
            )
            transport.abort()  # a close frame would only queue behind what it does not read


def peer_address(connection: ServerConnection) -> str | None:
    remote = connection.remote_address
    return str(remote[0]) if isinstance(remote, tuple) and remote else None


def peer_name(connection: ServerConnection) -> str:
    remote = connection.remote_address
    return f"ws {remote[0]}:{remote[1]}" if isinstance(remote, tuple) and len(remote) >= 2 else "ws"


# ----------------------------------------------------------------------------------------------
# The front
# ----------------------------------------------------------------------------------------------
class HttpFront:
    """Routes, the access rules and the websocket on one listening socket (module docstring).

    - `access`: the rules (`access.AccessPolicy`);
    - `websocket`: what to do with websocket upgrades (None: refused with 404);
    - `max_connections_per_address`: plain HTTP connections, and websockets, one address (an
      IPv6 /64) may hold at once (None: no limit).
    """

    def __init__(
        self,
        access: AccessPolicy,
        *,
        websocket: WebSocketEndpoint | None = None,
        max_connections_per_address: int | None = None,
    ) -> None:
        self.access = access
        self.websocket = websocket
        self.router = Router()
        self.websockets_per_address = ConnectionCounter(max_connections_per_address)
        self.http_per_address = ConnectionCounter(max_connections_per_address)
        self._http: set[_HttpConnection] = set()
        self._server: Server | None = None
        self._closing = False
        self._host = ""
        self._port = 0

    # --- configuration --------------------------------------------------------------------------
    def add_route(
        self,
        method: str,
        pattern: str,
        handler: Handler,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        protected: bool = True,
    ) -> None:
        """Answer `method pattern` with `handler` (a GET route answers HEAD too). `max_body`: the
        largest body accepted (413 past it); `protected=False`: no `Origin` or token check (only
        what holds nothing to protect: `/health`, the page)."""
        if max_body < 0:
            raise ValueError("max_body must be >= 0")
        self.router.add(method, pattern, Route(method.upper(), handler, max_body, protected))

    @property
    def requires_token(self) -> bool:
        return self.access.requires_token

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(
        self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on `host:port` (port 0: any free port), or on an already bound `sock`."""
        loop = asyncio.get_running_loop()

        async def create_server() -> asyncio.Server:
            if sock is not None:
                return await loop.create_server(self._accept, sock=sock)
            return await loop.create_server(self._accept, host, port)

        server = Server(create_server, self._run_websocket, logging.getLogger("websockets.server"))
        await server  # creates the listening server
        self._server = server
        sockname = server.sockets[0].getsockname() if server.sockets else (host, port)
        self._host, self._port = sockname[0], sockname[1]

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return format_url(self._host, self._port)

    @property
    def connections(self) -> set[ServerConnection]:
        """The open websocket connections (websockets' `Server.connections`)."""
        return set() if self._server is None else self._server.connections

    @property
    def http_url(self) -> str:
        return format_url(self._host, self._port, "http")

    async def close(
        self, code: int = 1001, reason: str = "the server is shutting down", timeout: float = 10.0
    ) -> None:
        """Stop listening, close every websocket (`code`) and every HTTP connection."""
        if self._server is None:
            return
        self._closing = True
        server, self._server = self._server, None
        server.close(close_connections=True, code=code, reason=close_reason(reason))
        for conn in list(self._http):
            conn.shut()
        try:
            await asyncio.wait_for(server.wait_closed(), timeout)
        except asyncio.TimeoutError:
            # Clients that did not answer the close within `timeout` are dropped: nothing is left
            # waiting on them (a stopping `serve` would otherwise wait their close_timeout out).
            for connection in list(server.all_connections):
                connection.transport.abort()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def __aenter__(self) -> HttpFront:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- connections ----------------------------------------------------------------------------
    def _accept(self) -> _HttpConnection:
        return _HttpConnection(self)

    async def _run_websocket(self, connection: ServerConnection) -> None:
        """A handed-over websocket: its handshake, then the endpoint's handler (websockets'
        own connection handler, with the per-address limit)."""
        server = connection.server
        try:
            try:
                await asyncio.wait_for(connection.handshake(None, None, SERVER), OPEN_TIMEOUT)
            except Exception:
                connection.transport.abort()
                return
            if connection.protocol.state is not OPEN or self.websocket is None:
                connection.transport.abort()
                return
            server.all_connections.add(connection)
            connection.start_keepalive()
            try:
                async with connection:
                    await self._websocket_session(connection, self.websocket)
            except Exception:
                logger.error("%s: connection handler failed", peer_name(connection), exc_info=True)
            finally:
                server.all_connections.discard(connection)
        finally:
            server.handler_tasks.discard(cast("asyncio.Task[None]", asyncio.current_task()))

    async def _websocket_session(self, connection: ServerConnection, endpoint: WebSocketEndpoint) -> None:
        key = address_key(peer_address(connection))
        if not self.websockets_per_address.acquire(key):
            limit = self.websockets_per_address.limit
            why = f"too many connections from your address: the limit is {limit} per address"
            logger.info("refused %s: %s", peer_name(connection), why)
            await connection.close(1013, close_reason(why))
            return
        try:
            await endpoint.handler(connection)
        finally:
            self.websockets_per_address.release(key)

    def hand_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """Make `transport` a websocket connection of this front's server and feed it `data` (the
        bytes read so far: the upgrade request, and anything after it)."""
        endpoint = self.websocket
        assert endpoint is not None and self._server is not None
        protocol = ServerProtocol(max_size=endpoint.max_size, logger=logging.getLogger("websockets.server"))
        connection = BoundedConnection(
            protocol,
            self._server,
            ping_interval=endpoint.ping_interval,
            ping_timeout=endpoint.ping_timeout,
            close_timeout=endpoint.close_timeout,
        )
        connection.max_unsent_bytes = endpoint.max_unsent_bytes
        transport.set_protocol(connection)
        connection.connection_made(transport)  # starts _run_websocket (the server's handler)
        connection.data_received(data)

    # --- one request ----------------------------------------------------------------------------
    def refuse(self, method: str, target: str, peer: str | None, refusal: Refusal) -> HttpResponse:
        """The answer to a refused request, logged on one line without the query (it may hold a
        token) and without the request's headers."""
        logger.log(
            logging.WARNING if refusal.warn else logging.INFO,
            "refused %s %r from %s: %d %s",
            method,
            target.partition("?")[0][:200],
            peer,
            refusal.status,
            refusal.reason,
        )
        return HttpResponse.error(refusal.status, refusal.error, refusal.reason, refusal.headers)

    def decide(self, head: Head, peer: str | None) -> Decision:
        """What to do with a request whose head was read: refuse it, hand it to the websocket, or
        read its body and call a route. No I/O; the clock is read for the failure limiter."""
        now = time.monotonic()
        try:
            path, query = split_target(head.target)
        except BadRequest as exc:
            return Decision(
                self.refuse(head.method, head.target, peer, Refusal(400, "bad_request", str(exc)))
            )
        facts = RequestFacts.from_headers(head.method, head.target, head.headers.get_all, peer)
        if self.websocket is not None and is_upgrade(head.headers):
            refusal = self.access.check(facts, now=now, protected=True)
            if refusal is not None:
                return Decision(self.refuse(head.method, head.target, peer, refusal))
            return Decision(upgrade=True)
        found = self.router.match(path)
        if found is None:
            refusal = self.access.check(facts, now=now, protected=True, methods=frozenset({head.method}))
            if refusal is None:
                refusal = Refusal(404, "not_found", f"no such resource: {path[:200]}", warn=False)
            return Decision(self.refuse(head.method, head.target, peer, refusal))
        routes, params = found
        methods = allowed_methods(routes)
        origin = head.headers.get_all("Origin")
        if (
            head.method == "OPTIONS"
            and "OPTIONS" not in routes
            and origin
            and ("Access-Control-Request-Method" in head.headers)
        ):
            return Decision(self._preflight(head, facts, peer, methods, now), cors=self._cors(facts))
        route = routes.get("GET" if head.method == "HEAD" else head.method)
        refusal = self.access.check(
            facts, now=now, protected=route.protected if route else True, methods=methods
        )
        if refusal is not None:
            return Decision(self.refuse(head.method, head.target, peer, refusal))
        assert route is not None  # check() refuses a method without a route (405)
        try:
            length = body_length(head.headers)
        except HttpError as exc:
            return Decision(exc.response(), cors=self._cors(facts))
        if length > route.max_body:
            refusal = Refusal(
                413,
                "body_too_large",
                f"the body has {length} bytes; this resource takes at most {route.max_body}",
                warn=False,
            )
            return Decision(self.refuse(head.method, head.target, peer, refusal), cors=self._cors(facts))
        request = HttpRequest(
            method=head.method,
            path=path,
            query=MappingProxyType({k: tuple(v) for k, v in parse_qs(query, keep_blank_values=True).items()}),
            headers=head.headers,
            body=b"",
            peer=peer,
            params=MappingProxyType(params),
        )
        return Decision(route=route, request=request, body_length=length, cors=self._cors(facts))

    def _preflight(
        self, head: Head, facts: RequestFacts, peer: str | None, methods: frozenset[str], now: float
    ) -> HttpResponse:
        refusal = self.access.check(facts, now=now, protected=False, methods=frozenset({"OPTIONS"}))
        if refusal is None and not self._cors(facts):
            refusal = Refusal(
                403,
                "origin_not_allowed",
                f"pages from {facts.origin[0]!r} may not use this runner (only its own page, and origins "
                "given with --allow-origin)",
            )
        if refusal is not None:
            return self.refuse(head.method, head.target, peer, refusal)
        asked = head.headers.get("Access-Control-Request-Headers", "")
        names = [n.strip() for n in asked.split(",") if n.strip()]
        allow_headers = ", ".join(n for n in names if _TOKEN.fullmatch(n))
        headers = [
            ("Access-Control-Allow-Methods", ", ".join(sorted(methods))),
            ("Access-Control-Max-Age", "600"),
        ]
        if allow_headers:
            headers.append(("Access-Control-Allow-Headers", allow_headers))
        return HttpResponse(204, b"", headers=tuple(headers))

    def _cors(self, facts: RequestFacts) -> tuple[tuple[str, str], ...]:
        """`Access-Control-Allow-Origin` for a request from an allowed origin, else nothing."""
        if len(facts.origin) != 1 or len(facts.host) != 1:
            return ()
        try:
            host = parse_host(facts.host[0])
        except BadRequest:
            return ()
        if not origin_allowed(facts.origin[0], host, self.access.config.allowed_origins):
            return ()
        return (("Access-Control-Allow-Origin", facts.origin[0]), ("Vary", "Origin"))

    async def respond(self, decision: Decision, body: bytes) -> HttpResponse:
        """Call the decision's route with its request's `body`; HttpError and bugs become answers."""
        assert decision.route is not None and decision.request is not None
        request = decision.request
        request = HttpRequest(
            request.method, request.path, request.query, request.headers, body, request.peer, request.params
        )
        try:
            return await decision.route.handler(request)
        except HttpError as exc:
            return exc.response()
        except Exception:
            logger.exception("%s %s failed", request.method, request.path[:200])
            return HttpResponse.error(500, "internal", "the server failed to answer this request")


@dataclass(frozen=True)
class Decision:
    """`HttpFront.decide`'s verdict: an answer now, a websocket upgrade, or a route to call."""

    response: HttpResponse | None = None
    upgrade: bool = False
    route: Route | None = None
    request: HttpRequest | None = None
    body_length: int = 0
    cors: tuple[tuple[str, str], ...] = ()


class _HttpConnection(asyncio.Protocol):
    """One TCP connection while it speaks plain HTTP: bounded reads, one request at a time."""

    def __init__(self, front: HttpFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.peer: str | None = None
        self.key = "?"
        self.counted = False
        self.eof = False
        self.closed = False
        self.handed_over = False
        self.paused = False
        self._data = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        front = self.front
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if isinstance(peername, tuple) and peername else None
        self.key = address_key(self.peer)
        if front._closing or len(front._http) >= MAX_HTTP_CONNECTIONS:
            self.transport.abort()
            return
        if not front.http_per_address.acquire(self.key):
            limit = front.http_per_address.limit
            logger.info("refused a connection from %s: more than %s open from its address", self.peer, limit)
            response = HttpResponse.error(
                503,
                "too_many_connections",
                f"too many connections from your address: the limit is {limit} per address",
                (("Retry-After", "1"),),
            )
            self.transport.write(encode_response(response))
            self.transport.close()
            asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self.transport.abort)
            return
        self.counted = True
        front._http.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._data.set()
        if len(self.buffer) > MAX_HEAD_BYTES and not self.paused and self.transport is not None:
            self.paused = True  # a body or pipelined requests: read on once these are taken
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._data.set()
        return True  # keep the writing half open for the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof = True
        self._data.set()
        self._release()
        if self._task is not None and not self.handed_over:
            self._task.cancel()

    # --- helpers --------------------------------------------------------------------------------
    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.front.http_per_address.release(self.key)
        self.front._http.discard(self)

    def shut(self) -> None:
        """Close at once (the front is closing)."""
        if self.transport is not None and not self.handed_over:
            self.transport.close()
        if self._task is not None and not self.handed_over:
            self._task.cancel()

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        if self.paused and len(self.buffer) <= MAX_HEAD_BYTES and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    async def _more(self, deadline: float) -> bool:
        """Wait for more bytes (or the end) until `deadline` (loop time); False at EOF or past it."""
        if self.eof:
            return False
        self._data.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        try:
            await asyncio.wait_for(self._data.wait(), max(deadline - asyncio.get_running_loop().time(), 0.0))
        except asyncio.TimeoutError:
            return False
        return True

    async def _read_head(self, deadline: float) -> bytes | None:
        """The next request's head (without its blank line), None when the connection ends first."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                if end > MAX_HEAD_BYTES:
                    raise HeadError(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
                head = self._take(end + 4)
                return head[:-4]
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise HeadError(431, f"the request head is larger than {MAX_HEAD_BYTES} bytes")
            if self.eof or not await self._more(deadline):
                if self.buffer.strip():
                    raise HeadError(400, "the request head was cut short")
                return None

    async def _read_body(self, n: int, deadline: float) -> bytes | None:
        while len(self.buffer) < n:
            if self.eof or not await self._more(deadline):
                return None
        return self._take(n)

    async def _write(self, data: bytes) -> None:
        """Queue `data` on the socket (the connection closes after it: no waiting for a drain)."""
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    # --- the request ----------------------------------------------------------------------------
    async def _serve(self) -> None:
        """Read one request, answer it (or hand the socket to websockets), close."""
        transport = self.transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        front = self.front
        try:
            try:
                raw = await self._read_head(loop.time() + HEAD_TIMEOUT)
                if raw is None:
                    return
                head = parse_head(raw)
            except HeadError as exc:
                logger.info("refused a request from %s: %d %s", self.peer, exc.status, exc)
                await self._write(encode_response(HttpResponse.error(exc.status, "bad_request", str(exc))))
                return
            decision = front.decide(head, self.peer)
            if decision.upgrade:
                self.handed_over = True
                self._release()
                data = raw + b"\r\n\r\n" + self._take(len(self.buffer))
                if self.paused:
                    self.paused = False
                    transport.resume_reading()
                front.hand_over(transport, data)
                return
            head_only = head.method == "HEAD"
            if decision.response is not None:  # refused: its body, if any, is not read
                await self._write(
                    encode_response(decision.response, head_only=head_only, extra=decision.cors)
                )
                return
            if decision.body_length and "100-continue" in head.headers.get("Expect", "").lower():
                await self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await self._read_body(decision.body_length, loop.time() + HEAD_TIMEOUT)
            if body is None:
                if not self.closed:
                    late = HttpResponse.error(
                        408, "request_timeout", "the request body did not arrive in time"
                    )
                    await self._write(encode_response(late))
                return
            response = await front.respond(decision, body)
            await self._write(encode_response(response, head_only=head_only, extra=decision.cors))
        except asyncio.CancelledError:
            pass
        finally:
            if not self.handed_over and not transport.is_closing():
                transport.close()  # after what was written; a client that never reads it is cut off:
                loop.call_later(HEAD_TIMEOUT, transport.abort)  # (the slot is given back on connection_lost)
