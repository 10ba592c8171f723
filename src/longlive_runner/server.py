"""`longlive-runner serve`: the runner over WebSocket, with `/health` and `/info` on the same port.

A thin transport around the hub (`hub.Runner`): each WebSocket connection becomes a hub `Peer`;
one task reads the client's messages into the hub, another writes the peer's queue out (text as
text messages, frames as binary messages per docs/protocol.md, section 4).

Endpoints (docs/protocol.md, section 1.1):

- `GET /health` -> `{"status": "ok"}` once the model is loaded;
- `GET /info` -> the `hello` fields, the model preset, device and the runner's load (JSON);
- a WebSocket at any other path (use `/`);
- `GET /` from a browser (no WebSocket upgrade) -> the live view page (`static/`, docs/live-view.md).

Access control (docs/protocol.md, section 1.3): with a token (`--token` or `LONGLIVE_TOKEN`) the
WebSocket handshake and `/info` need `Authorization: Bearer <token>` (or a `token` query
parameter, for browsers) and get 401 without it; `/health` stays open. Without a token, `serve`
only listens on a loopback address. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import sys
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from longlive._errors import ConnectionClosedError
from longlive._protocol import MAX_SEED

from .cli import CLIError, add_model_args, load_from_args

if TYPE_CHECKING:
    from .hub import Peer, Runner
    from .pipeline import Pipeline

__all__ = ["RunnerServer", "bind_socket", "cmd_serve", "register_cli"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_CLIENTS = 16
DEFAULT_GRACE_PERIOD = 30.0
HEALTH_PATH = "/health"
INFO_PATH = "/info"
#: Incoming messages up to this multiple of `max_message_bytes` get a `message_too_large` reply;
#: larger ones close the connection with 1009 (docs/protocol.md, section 3.1).
MAX_SIZE_FACTOR = 4
CLOSE_TIMEOUT = 5.0
#: The environment variable holding the runner's token (read by `serve` and by the SDK).
TOKEN_ENV = "LONGLIVE_TOKEN"
TOKEN_QUERY_PARAM = "token"


def _close_reason(text: str) -> str:
    """A WebSocket close reason holds at most 123 bytes of UTF-8."""
    data = text.encode("utf-8")
    return text if len(data) <= 123 else data[:120].decode("utf-8", "ignore") + "..."


def format_url(host: str, port: int, scheme: str = "ws") -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class RunnerServer:
    """The WebSocket + HTTP front of a started `Runner`.

    ```python
    async with Runner(pipe, max_peers=16) as runner, RunnerServer(runner) as server:
        await server.start("127.0.0.1", 8765)
        print(server.url)
    ```
    """

    def __init__(
        self, runner: Runner, *, close_timeout: float = CLOSE_TIMEOUT, token: str | None = None
    ) -> None:
        self.runner = runner
        self.close_timeout = close_timeout
        # Kept as bytes: hmac.compare_digest compares str only when it is ASCII.
        self._token = token.encode("utf-8") if token else None
        self.max_size = runner.limits.max_message_bytes * MAX_SIZE_FACTOR
        self._server: Server | None = None
        self._host = DEFAULT_HOST
        self._port = 0

    async def start(
        self, host: str = DEFAULT_HOST, port: int = 0, *, sock: socket.socket | None = None
    ) -> None:
        """Listen on `host:port` (port 0: any free port), or on an already bound `sock`."""
        where: dict[str, Any] = {"sock": sock} if sock is not None else {"host": host, "port": port}
        self._server = await serve(
            self._handle,
            process_request=self._process_request,
            compression=None,  # raw frames do not compress; deflate would only burn the loop's CPU
            max_size=self.max_size,
            close_timeout=self.close_timeout,
            **where,
        )
        sockname = self._server.sockets[0].getsockname() if self._server.sockets else (host, port)
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

    async def close(self) -> None:
        """Close every connection (1001) and stop listening; the runner stays up."""
        if self._server is None:
            return
        self._server.close(close_connections=True, code=1001, reason="the runner is shutting down")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), self.close_timeout + 5)
        self._server = None

    async def __aenter__(self) -> RunnerServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- HTTP -----------------------------------------------------------------------------------
    @property
    def requires_token(self) -> bool:
        return self._token is not None

    def authorized(self, request: Request) -> bool:
        """True when no token is set, or `request` carries it (header or query parameter)."""
        if self._token is None:
            return True
        presented: list[str] = []
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, value = header.strip().partition(" ")
            if scheme.lower() == "bearer":
                presented.append(value.strip())
        presented += parse_qs(urlsplit(request.path).query).get(TOKEN_QUERY_PARAM, [])
        # Every candidate is compared (constant time each); no early exit on the first match.
        ok = False
        for candidate in presented:
            ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)
        return ok

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == HEALTH_PATH:
            return _json_response(connection, 200, {"status": "ok"})
        page = _static_response(connection, request, path)  # the live view: holds no secret
        if page is not None:
            return page
        if not self.authorized(request):
            response = _json_response(
                connection,
                401,
                {
                    "error": "unauthorized",
                    "reason": "this runner needs a token: send 'Authorization: Bearer <token>' "
                    f"(or the query parameter '{TOKEN_QUERY_PARAM}')",
                },
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="longlive"'
            return response
        if path == INFO_PATH:
            return _json_response(connection, 200, self.runner.info())
        return None  # the WebSocket handshake

    # --- WebSocket ------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        remote = ws.remote_address
        name = f"ws {remote[0]}:{remote[1]}" if isinstance(remote, tuple) and len(remote) >= 2 else "ws"
        try:
            peer = self.runner.attach(name)
        except RuntimeError:  # the runner is closing
            await ws.close(1001, "the runner is shutting down")
            return
        if peer.closed:  # refused (too many clients)
            await ws.close(peer.close_code or 1013, _close_reason(peer.close_reason))
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
            await ws.close(code, _close_reason(reason))

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
                    self.runner.receive_text(peer, message)
                else:
                    self.runner.receive_binary(peer, message)
        except ConnectionClosed:
            return


#: The browser live view (package data in `static/`): `GET /` without a WebSocket upgrade, and its
#: files at `/static/NAME`. The page holds no secret: its websocket and `/info` carry the token.
STATIC_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
_STATIC_NAME = re.compile(r"/static/([A-Za-z0-9_-]+\.(?:html|js|css))")
_PAGE_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:; media-src blob:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def _static_response(connection: ServerConnection, request: Request, path: str) -> Response | None:
    """The live view page or one of its files; None for WebSocket handshakes and other paths."""
    if "websocket" in ",".join(request.headers.get_all("Upgrade")).lower():
        return None
    match = _STATIC_NAME.fullmatch(path)
    name = "index.html" if path == "/" else match.group(1) if match else None
    if name is None:
        return None
    try:
        text = (resources.files("longlive_runner") / "static" / name).read_text("utf-8")
    except OSError:
        return connection.respond(404, f"no such file: {path}\n")
    response = connection.respond(200, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = STATIC_TYPES[name.rsplit(".", 1)[1]]
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = _PAGE_POLICY
    return response


def _json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(body) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


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
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)


def resolve_token(cli_token: str | None, environ: Any = None) -> str | None:
    """The token from `--token`, else from `LONGLIVE_TOKEN`; an empty one counts as none."""
    environ = os.environ if environ is None else environ
    token = cli_token if cli_token is not None else environ.get(TOKEN_ENV)
    return token or None


class RedactingFormatter(logging.Formatter):
    """A log formatter that never writes a secret: the token itself, any `Bearer` credential and
    any `token=` query value are replaced by `***` (tracebacks included)."""

    _PATTERNS = (
        re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"),
        re.compile(r"(?i)([?&]" + TOKEN_QUERY_PARAM + r"=)[^&\s'\"]+"),
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


def _setup_logging(level: str, token: str | None) -> None:
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


def _grace_period(value: str) -> float | None:
    if value.strip().lower() in ("off", "none", "never"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'off', got {value!r}") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError("must be >= 0 seconds")
    return seconds


def register_cli(subparsers: Any) -> None:
    """Add `serve` to the `longlive-runner` command."""
    p = subparsers.add_parser(
        "serve",
        help="serve a model to WebSocket clients (the LongLive runner protocol)",
        description="Load a model and serve it over WebSocket at ws://HOST:PORT/ (docs/protocol.md), "
        "with GET /health and GET /info on the same port. Ctrl-C or SIGTERM stops it.",
    )
    add_model_args(p)
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"interface to listen on (default {DEFAULT_HOST}); any non-loopback address needs a token",
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"require this token from clients (Authorization: Bearer TOKEN); default: ${TOKEN_ENV}. "
        f"Prefer the environment variable: a command line is visible to other users",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any free port)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of a start command that gives none (default 0)")
    p.add_argument(
        "--max-clients",
        type=int,
        default=DEFAULT_MAX_CLIENTS,
        help=f"connections at once; more are closed with code 1013 (default {DEFAULT_MAX_CLIENTS})",
    )
    p.add_argument(
        "--max-queued-frames",
        type=int,
        default=None,
        help="frames queued per client before its oldest are dropped (default 48)",
    )
    p.add_argument(
        "--grace-period",
        type=_grace_period,
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="pause a running session this long after the last client left ('off': never; default 30)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="(default warning)",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if args.max_clients < 1:
        raise CLIError("--max-clients must be >= 1")
    if args.max_queued_frames is not None and args.max_queued_frames < 1:
        raise CLIError("--max-queued-frames must be >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        raise CLIError(f"--seed must be in 0..{MAX_SEED}")
    token = resolve_token(getattr(args, "token", None))
    if token is None and not is_loopback_host(args.host):
        raise CLIError(
            f"refusing to listen on {args.host or 'every interface'} without a token: anyone who can "
            f"reach it could drive the model. Set {TOKEN_ENV} (or --token) to require one, or listen "
            f"on {DEFAULT_HOST}"
        )
    args.token = token
    _setup_logging(args.log_level, token)
    # Bind first: a port in use fails at once, before seconds of model loading.
    sock = bind_socket(args.host, args.port)
    try:
        pipe = load_from_args(args)
        return asyncio.run(_serve(pipe, sock, args))
    finally:
        sock.close()


async def _serve(pipe: Pipeline, sock: socket.socket, args: argparse.Namespace) -> int:
    from .hub import DEFAULT_MAX_QUEUED_FRAMES, Runner

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    runner = Runner(
        pipe,
        seed=args.seed,
        max_peers=args.max_clients,
        max_queued_frames=args.max_queued_frames or DEFAULT_MAX_QUEUED_FRAMES,
        grace_period=args.grace_period,
    )
    server = RunnerServer(runner, token=args.token)
    try:
        await runner.start()
        await server.start(sock=sock)
        print(
            f"serving longlive ({pipe.config.name}) on {server.url}"
            + (" (token required)" if server.requires_token else ""),
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
        print("longlive-runner: shutting down", file=sys.stderr, flush=True)
    finally:
        await server.close()
        await runner.close()
    return 0
