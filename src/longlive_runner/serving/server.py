"""`longlive-runner serve`: the runner over WebSocket, with `/health` and `/info` on the same port.

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

import argparse
import asyncio
import errno
import ipaddress
import logging
import re
import socket
import sys
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from longlive.auth import TOKEN_ENV, TOKEN_IN_URL, clean_token, token_from_env
from longlive.errors import ConnectionClosedError
from longlive.protocol import DEFAULT_LIMITS, FRAME_HEADER_SIZE

from ..arguments import CLIError, add_model_args, load_from_args
from .access import (
    DEFAULT_MAX_AUTH_FAILURES,
    AccessConfig,
    AccessPolicy,
    BadRequest,
    check_token_strength,
    normalize_origin,
)
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
from .options import (
    DEFAULT_HOST,
    DEFAULT_MAX_CLIENTS_PER_ADDRESS,
    ServeOptions,
    add_serve_args,
    check_serve_args,
    run_until_stopped,
)
from .reactor.serve import add_cli_args as add_reactor_args
from .reactor.serve import attach as attach_reactor
from .reactor.serve import check_cli_args as check_reactor_args

if TYPE_CHECKING:
    from ..model.pipeline import Pipeline
    from .hub import Peer, Runner

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_SIZE_FACTOR",
    "RedactingFormatter",
    "RunnerServer",
    "bind_socket",
    "check_access_args",
    "cmd_serve",
    "is_loopback_host",
    "register_cli",
    "resolve_token",
    "setup_logging",
]

logger = logging.getLogger(__name__)

#: Connections one address (an IPv6 /64) may hold at once: half the slots, so no one client
#: Incoming messages up to this multiple of `max_message_bytes` get a `message_too_large` reply;
#: larger ones close the connection with 1009 (docs/protocol.md, section 3.1).
MAX_SIZE_FACTOR = 4
CLOSE_TIMEOUT = 5.0
#: `serve`'s stop: seconds it waits for clients to answer the close and for the block in flight.
SHUTDOWN_WAIT = 1.0


class RunnerServer:
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
        self.close_timeout = close_timeout
        self.access = AccessPolicy(
            AccessConfig(
                token=clean_token(token) if token else None,
                allowed_origins=frozenset(normalize_origin(o) for o in allowed_origins),
                max_auth_failures=max_auth_failures,
            )
        )
        session = runner.session
        frame_bytes = FRAME_HEADER_SIZE + session.height * session.width * 3
        self.max_unsent_bytes = max_unsent_bytes or MIN_MAX_UNSENT_BYTES + 2 * frame_bytes
        self.max_size = runner.limits.max_message_bytes * MAX_SIZE_FACTOR
        self.front = HttpFront(
            self.access,
            websocket=WebSocketEndpoint(
                self._serve_peer,
                max_size=self.max_size,
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
        """Close every connection (1001) and stop listening; the runner stays up. `timeout`:
        how long to wait for clients to answer the close (default `close_timeout` + 5 s)."""
        wait = self.close_timeout + 5 if timeout is None else timeout
        await self.front.close(1001, "the runner is shutting down", timeout=wait)

    async def __aenter__(self) -> RunnerServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------
def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`; `CLIError` with one clear line when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CLIError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CLIError(
                f"port {port} on {host} is already in use (another runner?); choose another with --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise CLIError(f"no permission to listen on {host}:{port}; use a port above 1023") from None
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def is_loopback_host(host: str) -> bool:
    """True when every address `host` stands for is a loopback address (127.0.0.0/8, ::1).

    "" and "0.0.0.0"/"::" (every interface) are not; a name counts only if all of its
    addresses are loopback.
    """
    host = host.strip().strip("[]")
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False  # bind_socket reports an unresolvable host
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)


def resolve_token(cli_token: str | None, environ: Any = None) -> str | None:
    """The token from `--token`, else from `LONGLIVE_TOKEN` (unset or set to "": no token),
    stripped (`longlive.auth`). CLIError for a `--token` that is empty or only whitespace, or a
    variable holding only whitespace."""
    try:
        if cli_token is not None:
            return clean_token(cli_token)
        return token_from_env(environ)
    except ValueError as exc:
        where = "--token" if cli_token is not None else ""
        raise CLIError(f"{where + ': ' if where else ''}{exc}") from None


class RedactingFormatter(logging.Formatter):
    """A log formatter that never writes a secret: the token itself, the value of any
    `Authorization` header, any `Bearer` credential, any `token=` query value, and the whole
    query string of request lines and URLs (however it is encoded) are replaced by `***`
    (tracebacks included)."""

    _PATTERNS = (
        re.compile(r"(?i)(authorization:\s*)\S[^\r\n]*"),
        re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"),
        TOKEN_IN_URL,
        # Request lines ("GET /path?query HTTP/1.1") and URLs: the whole query.
        re.compile(r"(\b[A-Z]{3,10} /[^\s?]*\?)[^\s'\"]+"),
        re.compile(r"(://[^\s/?'\"]+/[^\s?'\"]*\?)[^\s'\"]+"),
    )

    def __init__(self, fmt: str | None = None, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern in self._PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(level: str, token: str | None) -> None:
    """One stderr handler for every logger, through `RedactingFormatter` (`token` masked)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", secrets=(token,) if token else ()
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):  # one handler, ours: nothing reaches stderr unredacted
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def register_cli(subparsers: Any) -> None:
    """Add `serve` to the `longlive-runner` command."""
    p = subparsers.add_parser(
        "serve",
        help="serve a model to WebSocket clients (the LongLive runner protocol)",
        description="Load a model and serve it over WebSocket at ws://HOST:PORT/ (docs/protocol.md), "
        "with GET /health and GET /info on the same port. Ctrl-C or SIGTERM stops it.",
    )
    add_model_args(p)
    add_serve_args(p)
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        metavar="LATENT_FRAMES",
        help="end every video at this latent frame (a user limit; default: no end)",
    )
    add_reactor_args(p)
    p.set_defaults(func=cmd_serve)


def check_access_args(args: argparse.Namespace, what: str = "the model") -> None:
    """The access options of `serve` and `cluster`, checked before anything starts: `--allow-origin`
    normalised, the token resolved (`--token` or `LONGLIVE_TOKEN`) into `args.token`, and a
    non-loopback `--host` refused without a token strong enough (CLIError)."""
    try:
        args.allow_origin = [normalize_origin(o) for o in args.allow_origin]
    except BadRequest as exc:
        raise CLIError(f"--allow-origin: {exc}") from None
    token = resolve_token(getattr(args, "token", None))
    public = not is_loopback_host(args.host)
    where = args.host or "every interface"
    if token is None and public:
        raise CLIError(
            f"refusing to listen on {where} without a token: anyone who can reach it could drive "
            f"{what}. Set {TOKEN_ENV} (or --token) to require one, or listen on {DEFAULT_HOST}"
        )
    if token is not None:
        try:
            check_token_strength(token, public=public)
        except ValueError as exc:
            raise CLIError(f"refusing to listen on {where}: {exc}") from None
    args.token = token


def cmd_serve(args: argparse.Namespace) -> int:
    check_serve_args(args)
    if args.max_frames is not None and not 3 <= args.max_frames <= DEFAULT_LIMITS.max_frames:
        raise CLIError(f"--max-frames must be in 3..{DEFAULT_LIMITS.max_frames} (at least one block)")
    check_access_args(args)
    problem = check_reactor_args(args)
    if problem is not None:
        raise CLIError(problem)
    setup_logging(args.log_level, args.token)
    # Bind first: a port in use fails at once, before seconds of model loading.
    sock = bind_socket(args.host, args.port)
    try:
        pipe = load_from_args(args)
        return asyncio.run(_serve(pipe, sock, ServeOptions.from_args(args), args.max_frames, reactor_args=args))
    finally:
        sock.close()


async def _serve(
    pipe: Pipeline,
    sock: socket.socket,
    options: ServeOptions,
    max_frames: int | None,
    reactor_args: argparse.Namespace | None = None,
) -> int:
    from .hub import Runner

    limits = DEFAULT_LIMITS if max_frames is None else replace(DEFAULT_LIMITS, max_frames=max_frames)
    runner = Runner(pipe, limits=limits, grace_period=options.grace_period, **options.runner_options())
    server = RunnerServer(
        runner,
        token=options.token,
        allowed_origins=options.allow_origin,
        max_clients_per_address=options.max_clients_per_address,
    )
    # Reactor's clients (docs/reactor-clients.md), on the same front: --webrtc, --ice-server
    reactor = attach_reactor(server.front, runner, reactor_args) if reactor_args is not None else None
    try:
        await runner.start()
        await server.start(sock=sock)
        return await run_until_stopped(
            f"serving longlive ({pipe.config.name}) on {server.url}"
            + (" (token required)" if server.requires_token else "")
            + (" with Reactor's WebRTC clients" if reactor is not None else "")
        )
    finally:
        if reactor is not None:
            await reactor.close()
        # A stop (SIGTERM, Ctrl-C) is prompt: clients get their 1001 at once, but one that does
        # not answer the close, or a block in flight (torch cannot be interrupted), is waited
        # for SHUTDOWN_WAIT seconds at most; then the process exits (cli.run).
        await server.close(timeout=SHUTDOWN_WAIT)
        await runner.close(timeout=SHUTDOWN_WAIT)
