"""The cluster as a Ray Serve application: the same gateway and workers, behind Serve's proxy.

```bash
serve run longlive_runner.serving.cluster.app:build_app workers=2 model=demo      # ws://127.0.0.1:8000/
serve deploy docs/cluster/serve-config.yaml                               # or a Serve config
```

One replica of `LongliveGateway` (a FastAPI ingress; it uses no CPU of its own) starts the
`SessionWorker` actors and runs `gateway.Gateway` on its event loop; Serve's HTTP proxy carries
the websockets. Endpoints and behaviour are `longlive-runner cluster`'s: the websocket at `/`
(`?session=ID` joins), `GET /health`, `GET /info`, the live page at `/`; the access rules are
`serve`'s (`access.AccessPolicy`: token, `Host`, `Origin`). Keep one replica: the queue and the
sessions live in it.

Arguments (`key=value` after the import path, or `args:` in a Serve config), all optional:
`workers` (default 1), `model`, `device`, `wan_dir`, `longlive_dir`, `max_queue`, `grace_period`
(seconds or `off`), `max_sessions_per_address` (default: every worker but one, at least 1),
`idle_limit` (seconds or `off`), `max_clients` (per session), `max_queued_frames`, `seed`, `gpus_per_worker`,
`cpus_per_worker`, `pace` (`realtime` or `fast`), `allow_origin` (comma-separated origins). The token comes from the
`LONGLIVE_TOKEN` environment variable of the replica (e.g. `runtime_env: {env_vars: ...}` in the
config) or the `token` argument; without one, only loopback `Host` names are answered, as `serve`.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime.
import argparse
import contextlib
import time
from collections.abc import Mapping
from typing import Any, NoReturn

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.websockets import WebSocketDisconnect

from longlive.auth import clean_token, token_from_env

from ...arguments import CLIError, add_model_args
from ..access import AccessConfig, AccessPolicy, Refusal, RequestFacts, normalize_origin
from ..http import static_file
from ..options import ServeOptions, add_serve_args, check_serve_args
from .command import add_cluster_args, check_cluster_args
from .gateway import (
    ClientGone,
    Gateway,
    default_sessions_per_address,
    session_param,
)

__all__ = ["LongliveGateway", "StarletteLink", "build_app", "parse_args"]

api = FastAPI(title="longlive cluster", docs_url=None, redoc_url=None, openapi_url=None)


class _Parser(argparse.ArgumentParser):
    """`cluster`'s own options (one argparse definition), failing with ValueError."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


#: `cluster` options the app does not take: Serve's proxy listens (and counts no connections per
#: address), and Serve sets up the logs.
_NOT_APP_OPTIONS = frozenset({"host", "port", "log_level", "max_clients_per_address"})


def _parser() -> _Parser:
    parser = _Parser(prog="longlive_runner.serving.cluster.app:build_app", add_help=False)
    add_model_args(parser)
    add_serve_args(parser, cluster=True)
    add_cluster_args(parser, command_line=False)
    return parser


def parse_args(args: "Mapping[str, Any]") -> "dict[str, Any]":
    """The application's arguments (strings from `serve run`, or YAML values) as typed options:
    read by `cluster`'s own argparse options (the same names with `_`, defaults and checks);
    `allow_origin` may be comma-separated. ValueError for anything they refuse."""
    parser = _parser()
    names = set(vars(parser.parse_args([]))) - _NOT_APP_OPTIONS
    unknown = set(args) - names
    if unknown:
        raise ValueError(f"unknown arguments: {', '.join(sorted(unknown))}")
    argv: list[str] = []
    for name, value in args.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name == "allow_origin":
            origins = value.split(",") if isinstance(value, str) else list(value)
            for origin in (o.strip() for o in origins):
                if origin:
                    argv += [flag, origin]
        else:
            argv.append(f"{flag}={value}")
    ns = parser.parse_args(argv)
    try:
        check_serve_args(ns)
        check_cluster_args(ns)
    except CLIError as exc:
        raise ValueError(str(exc)) from None
    serving = ServeOptions.from_args(ns)  # host, port, log_level: unused (Serve's own)
    return {
        "workers": ns.workers or 1,
        "model": ns.model,
        "device": ns.device,
        "wan_dir": str(ns.wan_dir) if ns.wan_dir else None,
        "longlive_dir": str(ns.longlive_dir) if ns.longlive_dir else None,
        "max_queue": ns.max_queue,
        "grace_period": serving.grace_period,
        "idle_limit": ns.idle_limit,
        "max_sessions_per_address": ns.max_sessions_per_address,
        "max_clients": serving.max_clients,
        "max_queued_frames": serving.max_queued_frames,
        "seed": serving.seed,
        "gpus_per_worker": ns.gpus_per_worker,
        "cpus_per_worker": ns.cpus_per_worker,
        "allow_origin": [normalize_origin(o) for o in serving.allow_origin],
        "token": clean_token(str(ns.token)) if ns.token else None,
        "pace": serving.pace,
        "runner_options": serving.runner_options(),
    }


class StarletteLink:
    """A `gateway.ClientLink` over a Starlette (FastAPI) websocket."""

    def __init__(self, ws: WebSocket, name: str) -> None:
        self.ws = ws
        self.name = name

    async def recv(self) -> str | bytes:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            raise ClientGone from None
        if message["type"] == "websocket.disconnect":
            raise ClientGone
        text = message.get("text")
        return text if text is not None else bytes(message.get("bytes") or b"")

    async def send(self, message: str | bytes) -> None:
        try:
            if isinstance(message, str):
                await self.ws.send_text(message)
            else:
                await self.ws.send_bytes(bytes(message))
        except (WebSocketDisconnect, RuntimeError, OSError):
            raise ClientGone from None

    async def close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason[:120])


def _refusal_response(refusal: Refusal) -> JSONResponse:
    return JSONResponse(
        {"error": refusal.error, "reason": refusal.reason},
        status_code=refusal.status,
        headers=dict(refusal.headers),
    )


@serve.deployment(num_replicas=1, max_ongoing_requests=100_000, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class LongliveGateway:
    """The gateway replica (see the module docstring)."""

    def __init__(self, options: dict[str, Any]) -> None:
        from .ray_pool import start_workers

        self.options = options
        token = options.get("token") or token_from_env()
        self.access = AccessPolicy(
            AccessConfig(token=token, allowed_origins=frozenset(options["allow_origin"]))
        )
        self.handles = start_workers(
            options["workers"],
            model=options["model"],
            wan_dir=options["wan_dir"],
            longlive_dir=options["longlive_dir"],
            device=options["device"],
            runner_options=options["runner_options"],
            num_gpus=options["gpus_per_worker"],
            num_cpus=options["cpus_per_worker"],
        )
        from .ray_pool import ray_auth_mode

        self.gateway = Gateway(
            self.handles,
            max_queue=options["max_queue"],
            grace_period=options["grace_period"],
            max_sessions_per_address=options["max_sessions_per_address"]
            or default_sessions_per_address(options["workers"]),
            idle_limit=options["idle_limit"],
            ray_auth=ray_auth_mode(),
        )
        self._started = False

    async def _gateway(self) -> Gateway:
        if not self._started:  # on the replica's event loop, where every request runs
            self._started = True
            await self.gateway.start()
        return self.gateway

    def _check(
        self, method: str, path: str, query: str, headers: Any, peer: str | None, protected: bool
    ) -> Refusal | None:
        target = path + (f"?{query}" if query else "")
        facts = RequestFacts.from_headers(method, target, headers.getlist, peer)
        return self.access.check(facts, now=time.monotonic(), protected=protected)

    async def check_health(self) -> None:
        """Serve's replica health check: the gateway's supervisor tasks are running."""
        await self._gateway()

    @api.get("/health")
    async def health(self, request: Request) -> Response:
        gateway = await self._gateway()
        status, body = gateway.health()
        return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})

    @api.get("/info")
    async def info(self, request: Request) -> Response:
        peer = request.client.host if request.client else None
        refusal = self._check("GET", request.url.path, request.url.query, request.headers, peer, True)
        if refusal is not None:
            return _refusal_response(refusal)
        gateway = await self._gateway()
        return JSONResponse(gateway.info(), headers={"Cache-Control": "no-store"})

    @api.get("/")
    async def page(self, request: Request) -> Response:
        return self._static("index.html")

    @api.get("/static/{name}")
    async def static(self, name: str) -> Response:
        return self._static(name)

    @staticmethod
    def _static(name: str) -> Response:
        """The live view's files, as `serve` answers them (`http.static_file`)."""
        answer = static_file(name)
        return Response(
            answer.body,
            status_code=answer.status,
            media_type=answer.content_type,
            headers=dict(answer.headers),
        )

    @api.websocket("/")
    async def websocket(self, ws: WebSocket) -> None:
        peer = ws.client.host if ws.client else None
        refusal = self._check("GET", ws.url.path, ws.url.query, ws.headers, peer, True)
        if refusal is not None:  # before accepting: the client sees the handshake refused
            await ws.close(code=1008, reason=refusal.reason[:120])
            return
        gateway = await self._gateway()
        await ws.accept()
        name = f"ws {peer}:{ws.client.port}" if ws.client else "ws"
        await gateway.serve_client(StarletteLink(ws, name), session_param(f"/?{ws.url.query}"), address=peer)


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application (`serve run longlive_runner.serving.cluster.app:build_app key=value ...`)."""
    return LongliveGateway.bind(parse_args(args or {}))  # type: ignore[attr-defined]  # a Serve deployment
