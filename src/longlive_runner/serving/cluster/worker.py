"""One cluster worker: one loaded model, one session at a time, served as `serve` serves it.

`SessionWorker` is a plain class with async methods; `ray_worker_class()` turns it into a Ray actor
(an async actor: its methods and the session's websocket server share the actor's event loop).
For each session the gateway asks for, the worker starts the runner's own machinery, unchanged:
a `hub.Runner` (the generation thread, the session state machine, per-client queues) behind a
`server.RunnerServer` on an ephemeral port, guarded by a token that only the gateway knows (one
per session, 192 random bits), so that nobody reaches a worker except through the gateway. The
gateway proxies its clients' websockets to that port. The port listens on loopback when the
worker runs on the gateway's machine (a local cluster: nothing else on the network can reach
it), else on the node's address (Ray's node IP: the gateway must reach it). Wrong tokens sent to
it are not counted per address as on `serve`: the token cannot be guessed, and a limit would only
let strangers on the gateway's machine lock the gateway out of its own workers.

The model is loaded once, when the worker starts; a new session starts a new `Runner` (a fresh
session state, generation 0) on the same pipeline. `incarnation` changes whenever the process
restarts (Ray restarts a dead actor), which is how the gateway tells a restarted worker from the
one that ran a session.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...model.pipeline import Pipeline
    from ..hub import Runner
    from ..reactor.front import ReactorFront
    from ..server import RunnerServer

__all__ = ["SessionWorker", "node_address", "ray_worker_class"]

logger = logging.getLogger(__name__)


def node_address() -> str:
    """The address other machines of the cluster reach this one at (Ray's node IP when Ray is
    running here, else this host's primary address, else loopback)."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]  # untyped in Ray
    except Exception:  # pragma: no cover - without Ray
        pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class SessionWorker:
    """A model and at most one session (see the module docstring).

    - `model`, `wan_dir`, `longlive_dir`, `device`: what to load (as `longlive-runner serve`);
      or `pipeline`: an already loaded one (in-process workers, tests);
    - `host`: the address its sessions listen on (default: loopback when `gateway_host`, the
      address of the gateway's machine, is this machine's; else `node_address()`);
    - `runner_options`: keyword arguments of each session's `hub.Runner` (`seed`, `max_peers`,
      `max_queued_frames`, ...);
    - `webrtc`: serve Reactor's clients on each session's port (`serving/reactor/`, behind the
      same secret token: the gateway forwards their session and signalling calls to it, and the
      video goes from this worker to the client over WebRTC): `{"ice_servers": [spec, ...],
      "max_connections": n}` (specs as `--ice-server`'s); None: websocket only. Ignored, with a
      log line, when the `webrtc` extra is not installed here.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        wan_dir: str | None = None,
        longlive_dir: str | None = None,
        device: str | None = None,
        pipeline: Pipeline | None = None,
        host: str | None = None,
        gateway_host: str | None = None,
        runner_options: dict[str, Any] | None = None,
        webrtc: dict[str, Any] | None = None,
    ) -> None:
        if pipeline is None:
            pipeline = _load(model, wan_dir, longlive_dir, device)
        self.pipe = pipeline
        self.host = host
        self.gateway_host = gateway_host
        self.runner_options = dict(runner_options or {})
        self.webrtc = _webrtc_options(webrtc)
        self.incarnation = uuid.uuid4().hex
        self._runner: Runner | None = None
        self._server: RunnerServer | None = None
        self._session_id: str | None = None
        self._reactor: ReactorFront | None = None
        self._lock: asyncio.Lock | None = None

    def _mutex(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def ready(self) -> dict[str, Any]:
        """Who and where this worker is (the gateway shows it in `/info`)."""
        import torch

        device = self.pipe.device
        gpu = None
        if getattr(device, "type", "cpu") == "cuda":
            gpu = torch.cuda.get_device_name(device)
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "address": self.host or node_address(),
            "incarnation": self.incarnation,
            "preset": self.pipe.config.name,
            "device": str(device),
            "gpu": gpu,
            "height": self.pipe.config.height,
            "width": self.pipe.config.width,
        }

    async def open_session(self, session_id: str, secret: str) -> dict[str, Any]:
        """End the current session (if any) and start `session_id`: a fresh `Runner` behind a
        websocket server that only accepts `secret` as its token. Returns where it listens."""
        from ..hub import Runner
        from ..server import RunnerServer

        async with self._mutex():
            await self._close_session()
            options = {"grace_period": None, **self.runner_options}
            runner = Runner(self.pipe, **options)
            await runner.start()
            # Every client comes from the gateway's address: no per-address limits here (the
            # gateway applies its own to the real clients), and no failure limit (see above).
            server = RunnerServer(runner, token=secret, max_clients_per_address=None, max_auth_failures=None)
            reactor = self._attach_reactor(server, runner, session_id)
            host = self.listen_host()
            try:
                await server.start(host, 0)
            except BaseException:
                if reactor is not None:
                    await reactor.close()
                await runner.close()
                raise
            self._runner, self._server, self._session_id = runner, server, session_id
            self._reactor = reactor
            logger.info("session %s on %s", session_id, server.url)
            return {
                "session_id": session_id,
                "host": server.host,
                "port": server.port,
                "incarnation": self.incarnation,
                "webrtc": reactor is not None,
            }

    def _attach_reactor(self, server: RunnerServer, runner: Runner, session_id: str) -> ReactorFront | None:
        """Reactor's routes on the session's server (`webrtc`), its Reactor session id being
        `session_id` (the gateway's label of the session, not a key)."""
        if self.webrtc is None:
            return None
        from ..reactor import MISSING_EXTRA, available

        if not available():
            logger.warning("Reactor clients not served by this worker: %s", MISSING_EXTRA)
            return None
        from ..reactor.front import ReactorFront
        from ..reactor.media import MediaOptions
        from ..reactor.routes import add_reactor_routes
        from ..reactor.signalling import IceServer, SignallingLimits

        servers = tuple(IceServer.parse(s) for s in self.webrtc["ice_servers"])
        reactor = ReactorFront(
            runner,
            options=MediaOptions(ice_servers=servers),
            limits=SignallingLimits(max_connections=self.webrtc["max_connections"]),
            session_id=session_id,
        )
        add_reactor_routes(server.front, reactor)
        return reactor

    def listen_host(self) -> str:
        """Where this worker's sessions listen (see `host`)."""
        if self.host:
            return self.host
        here = node_address()
        if self.gateway_host is not None and self.gateway_host == here:
            return "127.0.0.1"
        return here

    async def close_session(self, session_id: str | None = None) -> bool:
        """End the session `session_id` (any session when None); False when it was not running."""
        async with self._mutex():
            if self._session_id is None or (session_id is not None and session_id != self._session_id):
                return False
            await self._close_session()
            return True

    async def current_session(self) -> dict[str, Any]:
        """The session this worker runs now (None: none) and its incarnation."""
        reactor = self._reactor
        return {
            "session_id": self._session_id,
            "incarnation": self.incarnation,
            # Live WebRTC connections of the session (None: it serves no Reactor client).
            "reactor_connections": len(reactor.connections) if reactor is not None else None,
        }

    async def info(self) -> dict[str, Any]:
        """`ready()` plus the running session's `Runner.info()`."""
        out = await self.ready()
        out["session_id"] = self._session_id
        if self._runner is not None:
            out["runner"] = self._runner.info()
        return out

    async def _close_session(self) -> None:
        server, runner, reactor = self._server, self._runner, self._reactor
        self._server = self._runner = None
        self._reactor = None
        self._session_id = None
        if reactor is not None:
            await reactor.close("the session is over")
        if server is not None:
            await server.close()
        if runner is not None:
            await runner.close()

    async def shutdown(self) -> None:
        """End the session; the worker stays usable."""
        await self.close_session(None)


def _webrtc_options(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """`webrtc` checked: ICE server specs parsed once here, so a bad one fails at start."""
    if raw is None:
        return None
    from ..reactor.signalling import IceServer

    specs = [str(s) for s in raw.get("ice_servers", ())]
    for spec in specs:
        IceServer.parse(spec)  # ValueError names the bad one
    max_connections = int(raw.get("max_connections", 16))
    if max_connections < 1:
        raise ValueError("webrtc max_connections must be >= 1")
    return {"ice_servers": specs, "max_connections": max_connections}


def _load(model: str | None, wan_dir: str | None, longlive_dir: str | None, device: str | None) -> Pipeline:
    import torch

    from ...model.config import DEFAULT_MODEL
    from ...model.pipeline import load_pipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_pipeline(
        model or (None if wan_dir else DEFAULT_MODEL),
        wan_dir=Path(wan_dir) if wan_dir else None,
        longlive_dir=Path(longlive_dir) if longlive_dir else None,
        device=device,
    )


def ray_worker_class() -> Any:
    """`SessionWorker` as a Ray actor class (imports Ray). Options (CPUs, GPUs, restarts) are
    set per worker with `.options(...)` (`ray_pool.start_workers`)."""
    import ray

    return ray.remote(SessionWorker)
