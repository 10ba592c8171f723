"""`RunnerServer`: a hub (`hub.Runner`) over WebSocket, with `/health` and `/info` on the same port.

(The `serve` command around it is `command.py`; the socket and the token's checks `listen.py`;
the log redaction `logs.py`.)

A thin transport around the hub (`hub.Runner`): each WebSocket connection becomes a hub `Peer`;
one task reads the client's messages into the hub, another writes the peer's queue out (text as
text messages, frames as binary messages per docs/protocol.md, section 4).

Endpoints (docs/protocol.md, section 1.1):

- `GET /health` -> `{"status": "ok"}` once the model is loaded;
- `GET /info` -> the `hello` fields, the model preset, device and the runner's load (JSON);
- a WebSocket upgrade at any path (use `/`);
- `GET /` from a browser (no WebSocket upgrade) -> the live view page (`static/`, docs/live-view.md).

The port's HTTP side is `http.HttpFront` (shared with the cluster gateway); more routes (another
protocol's) are added to `RunnerServer.front` before it starts.

Access control (docs/protocol.md, section 1.3; docs/security.md; the rules themselves are in
`access.py`, without I/O): with a token (`--token` or `LONGLIVE_TOKEN`) the WebSocket handshake and
`/info` need `Authorization: Bearer <token>` (or the query parameter `token`, for browsers) and get
401 without it; `/health` stays open. Without a token, `serve` only listens on a loopback address
and only answers requests whose `Host` is a loopback name. Browsers (`Origin`) may use the
WebSocket and `/info` only from the runner's own page or an `--allow-origin`. Tokens are compared
in constant time and never logged.

Every connection's output is bounded: the hub's queues (frames, text) and, below them, the bytes
written but not yet taken by the client (pongs included): past `max_unsent_bytes` the connection
is dropped. Connections are limited in all (`--max-clients`) and per address
(`--max-clients-per-address`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from longlive.auth import clean_token
from longlive.errors import ConnectionClosedError
from longlive.protocol import FRAME_HEADER_SIZE

from .access import DEFAULT_MAX_AUTH_FAILURES, AccessConfig, AccessPolicy, normalize_origin
from .http import (
    HEALTH_PATH,
    INFO_PATH,
    MIN_MAX_UNSENT_BYTES,
    HttpFront,
    HttpRequest,
    HttpResponse,
    WebSocketEndpoint,
    add_page_routes,
    close_reason,
    peer_name,
)
from .options import DEFAULT_HOST, DEFAULT_MAX_CLIENTS_PER_ADDRESS

if TYPE_CHECKING:
    from .hub import Peer, Runner

__all__ = ["CLOSE_TIMEOUT", "MAX_SIZE_FACTOR", "FrontServer", "RunnerServer"]

logger = logging.getLogger(__name__)

#: Incoming messages up to this multiple of `max_message_bytes` get a `message_too_large` reply;
#: larger ones close the connection with 1009 (docs/protocol.md, section 3.1).
MAX_SIZE_FACTOR = 4
CLOSE_TIMEOUT = 5.0


_S = TypeVar("_S", bound="FrontServer")


class FrontServer:
    """What `RunnerServer` and the cluster's `GatewayServer` share: the access rules, one
    `http.HttpFront` whose websockets go to `handler`, `/health`, `/info` and the live page, and
    where it listens. A subclass answers `_health` and `_info` and closes in its own words.

    `frame_bytes`: the size of one of the model's frames on the wire (it bounds a connection's
    unsent bytes unless `max_unsent_bytes` is given); `max_size`: the largest incoming message.
    """

    def __init__(
        self,
        handler: Callable[[ServerConnection], Awaitable[None]],
        *,
        frame_bytes: int,
        max_size: int,
        close_timeout: float,
        token: str | None,
        allowed_origins: Iterable[str],
        max_clients_per_address: int | None,
        max_unsent_bytes: int | None = None,
        max_auth_failures: int | None = DEFAULT_MAX_AUTH_FAILURES,
    ) -> None:
        self.close_timeout = close_timeout
        self.access = AccessPolicy(
            AccessConfig(
                token=clean_token(token) if token else None,
                allowed_origins=frozenset(normalize_origin(o) for o in allowed_origins),
                max_auth_failures=max_auth_failures,
            )
        )
        self.max_unsent_bytes = max_unsent_bytes or MIN_MAX_UNSENT_BYTES + 2 * frame_bytes
        self.max_size = max_size
        self.front = HttpFront(
            self.access,
            websocket=WebSocketEndpoint(
                handler,
                max_size=max_size,
                max_unsent_bytes=self.max_unsent_bytes,
                close_timeout=close_timeout,
            ),
            max_connections_per_address=max_clients_per_address,
        )
        self.connections_per_address = self.front.websockets_per_address
        self.front.add_route("GET", HEALTH_PATH, self._health, protected=False, max_body=0)
        self.front.add_route("GET", INFO_PATH, self._info, max_body=0)
        add_page_routes(self.front)

    async def start(
        self, host: str = DEFAULT_HOST, port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on `host:port` (port 0: any free port), or on an already bound `sock`."""
        await self.front.start(host, port, sock=sock)

    @property
    def host(self) -> str:
        return self.front.host

    @property
    def port(self) -> int:
        return self.front.port

    @property
    def url(self) -> str:
        return self.front.url

    @property
    def requires_token(self) -> bool:
        return self.access.requires_token

    async def close(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    async def __aenter__(self: _S) -> _S:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _health(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    async def _info(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError


class RunnerServer(FrontServer):
    """The WebSocket + HTTP front of a started `Runner`: an `http.HttpFront` with `/health`,
    `/info`, the live page, and each websocket a hub peer.

    ```python
    async with Runner(pipe, max_peers=16) as runner, RunnerServer(runner) as server:
        await server.start("127.0.0.1", 8765)
        print(server.url)
    ```

    - `token`: the token clients must present (None: none; then only loopback `Host` names);
    - `allowed_origins`: web origins allowed besides the runner's own page (`--allow-origin`);
    - `max_clients_per_address`: connections one address may hold (None: no limit);
    - `max_unsent_bytes`: bytes sent to a connection and not yet read before it is dropped
      (default: 4 MiB plus two of the model's frames);
    - `max_auth_failures`: failed tokens per address and minute before it is answered 429 (None:
      no limit, for an internal token no one can guess: a cluster worker's).

    More routes (another protocol's) go on `server.front` (`add_route`) before `start`.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        token: str | None = None,
        allowed_origins: Iterable[str] = (),
        max_clients_per_address: int | None = DEFAULT_MAX_CLIENTS_PER_ADDRESS,
        max_unsent_bytes: int | None = None,
        max_auth_failures: int | None = DEFAULT_MAX_AUTH_FAILURES,
    ) -> None:
        self.runner = runner
        session = runner.session
        super().__init__(
            self._serve_peer,
            frame_bytes=FRAME_HEADER_SIZE + session.height * session.width * 3,
            max_size=runner.limits.max_message_bytes * MAX_SIZE_FACTOR,
            close_timeout=close_timeout,
            token=token,
            allowed_origins=allowed_origins,
            max_clients_per_address=max_clients_per_address,
            max_unsent_bytes=max_unsent_bytes,
            max_auth_failures=max_auth_failures,
        )

    async def close(self, timeout: float | None = None) -> None:
        """Close every connection (1001) and stop listening; the runner stays up. `timeout`:
        how long to wait for clients to answer the close (default `close_timeout` + 5 s)."""
        wait = self.close_timeout + 5 if timeout is None else timeout
        await self.front.close(1001, "the runner is shutting down", timeout=wait)

    # --- HTTP -----------------------------------------------------------------------------------
    async def _health(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, {"status": "ok"})

    async def _info(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(
            200,
            {
                **self.runner.info(),
                "max_clients_per_address": self.connections_per_address.limit,
                "max_unsent_bytes": self.max_unsent_bytes,
            },
        )

    # --- WebSocket ------------------------------------------------------------------------------
    async def _serve_peer(self, ws: ServerConnection) -> None:
        name = peer_name(ws)
        try:
            peer = self.runner.attach(name)
        except RuntimeError:  # the runner is closing
            await ws.close(1001, "the runner is shutting down")
            return
        if peer.closed:  # refused (too many clients)
            await ws.close(peer.close_code or 1013, close_reason(peer.close_reason))
            return
        tasks = [
            asyncio.create_task(self._pump(ws, peer)),
            asyncio.create_task(self._read(ws, peer)),
            asyncio.create_task(peer.wait_closed()),
        ]
        code, reason = 1000, ""
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    logger.error("%s: connection failed", peer.name, exc_info=exc)
                    code, reason = 1011, "internal error"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            closed_by_hub = peer.closed
            if closed_by_hub and peer.close_code is not None:
                code, reason = peer.close_code, peer.close_reason
            self.runner.detach(peer, code, reason)
        if closed_by_hub or code != 1000:
            await ws.close(code, close_reason(reason))

    async def _pump(self, ws: ServerConnection, peer: Peer) -> None:
        """The peer's queue out to the socket, in order."""
        # Frames are written into one reused buffer: websockets copies a message before send()
        # returns, and a warm buffer spares a fresh 1.2 MB allocation per frame (hub.OutFrame).
        buffer = bytearray()
        try:
            while True:
                item = await peer.get()
                await ws.send(item if isinstance(item, str) else item.encode_into(buffer))
        except (ConnectionClosed, ConnectionClosedError):
            return

    async def _read(self, ws: ServerConnection, peer: Peer) -> None:
        """The client's messages into the hub."""
        try:
            async for message in ws:
                if isinstance(message, str):
                    await self.runner.receive(peer, message)
                else:
                    self.runner.receive_binary(peer, message)
        except ConnectionClosed:
            return
