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
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.websockets import WebSocketDisconnect

from longlive.auth import clean_token, token_from_env

from ..access import AccessConfig, AccessPolicy, Refusal, RequestFacts, normalize_origin
from ..http import static_file
from ..pacing import PACES
from .gateway import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_IDLE_LIMIT,
    DEFAULT_MAX_QUEUE,
    ClientGone,
    Gateway,
    default_sessions_per_address,
    session_param,
)

__all__ = ["LongliveGateway", "StarletteLink", "build_app", "parse_args"]

api = FastAPI(title="longlive cluster", docs_url=None, redoc_url=None, openapi_url=None)


def parse_args(args: "Mapping[str, Any]") -> "dict[str, Any]":
    """The application's arguments (strings from `serve run`, or YAML values) as typed options."""

    def number(name: str, kind: type, default: Any) -> Any:
        value = args.get(name, default)
        return None if value is None else kind(value)

    def seconds(name: str, default: float) -> float | None:
        value = args.get(name, default)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none", "never")):
            return None
        return float(value)

    grace = seconds("grace_period", DEFAULT_GRACE_PERIOD)
    idle_limit = seconds("idle_limit", DEFAULT_IDLE_LIMIT)
    if grace is not None and not grace >= 0:
        raise ValueError("grace_period must be >= 0 seconds (or off)")
    if idle_limit is not None and not idle_limit > 0:
        raise ValueError("idle_limit must be > 0 seconds (or off)")
    origins = args.get("allow_origin") or ()
    if isinstance(origins, str):
        origins = [o for o in origins.split(",") if o.strip()]
    unknown = set(args) - {
        "workers", "model", "device", "wan_dir", "longlive_dir", "max_queue", "grace_period",
        "max_clients", "max_queued_frames", "seed", "gpus_per_worker", "cpus_per_worker",
        "allow_origin", "token", "pace", "max_sessions_per_address", "idle_limit",
    }  # fmt: skip
    if unknown:
        raise ValueError(f"unknown arguments: {', '.join(sorted(unknown))}")
    token = args.get("token")
    pace = str(args.get("pace", "realtime"))
    if pace not in PACES:
        raise ValueError(f"pace must be one of {', '.join(PACES)}, got {pace!r}")
    return {
        "workers": number("workers", int, 1),
        "model": args.get("model"),
        "device": args.get("device"),
        "wan_dir": args.get("wan_dir"),
        "longlive_dir": args.get("longlive_dir"),
        "max_queue": number("max_queue", int, DEFAULT_MAX_QUEUE),
        "grace_period": grace,
        "idle_limit": idle_limit,
        "max_sessions_per_address": number("max_sessions_per_address", int, None),
        "max_clients": number("max_clients", int, 16),
        "max_queued_frames": number("max_queued_frames", int, 48),
        "seed": number("seed", int, 0),
        "gpus_per_worker": number("gpus_per_worker", float, None),
        "cpus_per_worker": number("cpus_per_worker", float, 1.0),
        "allow_origin": [normalize_origin(o) for o in origins],
        "token": clean_token(str(token)) if token else None,
        "pace": pace,
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
            runner_options={
                "seed": options["seed"],
                "max_peers": options["max_clients"],
                "max_queued_frames": options["max_queued_frames"],
                "pace": options["pace"],
            },
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
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type, headers=dict(answer.headers))

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
        await gateway.serve_client(
            StarletteLink(ws, name), session_param(f"/?{ws.url.query}"), address=peer
        )


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application (`serve run longlive_runner.serving.cluster.app:build_app key=value ...`)."""
    return LongliveGateway.bind(parse_args(args or {}))  # type: ignore[attr-defined]  # a Serve deployment
