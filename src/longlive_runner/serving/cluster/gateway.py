"""The cluster gateway: one websocket endpoint, a session per client on a free worker, a queue.

`Gateway` is the asyncio half of the cluster (the bookkeeping is `placement.Scheduler`, without
I/O). For each client connection it:

1. gives it a new session on a free worker (`hello` then carries its two secret keys:
   `session_id`, which joins as a director, and `viewer_session_id`, which joins read-only), or
   joins the session whose key `?session=KEY` names, or puts it in the FIFO queue (`queued`
   messages with its position, sent again as it moves; commands meanwhile are refused with
   `queued`), or, past `max_queue`, turns it away (`error` code `queue_full`, close code 1013).
   An address holds at most `max_sessions_per_address` sessions: past it, its clients wait;
2. proxies it to the worker's own runner server (`worker.SessionWorker`): text both ways as is
   (the worker's `hello` gets the keys and the role through the protocol module; a viewer's
   commands other than `get_state` are refused here with `read_only`), binary frames from the
   worker untouched. Backpressure goes through: a client that reads slowly slows its own
   upstream connection, and the worker's per-client queue drops that client's oldest frames
   (docs/protocol.md, 1.2); nobody else waits;
3. when the last client of a session leaves, waits `grace_period` seconds; a session nobody
   rejoined by then is over and its worker goes to the queue. While a client waits that could
   take the worker, an idle session ends at once instead, and a session none of whose directors
   sent a command for `idle_limit` seconds is ended (`error` code `session_idle`, close 4408);
4. when a worker dies (its process killed, out of memory), the upstream connections drop: the
   gateway asks the worker which session it runs; a dead or restarted worker ends **that**
   session only (`error` code `worker_lost` then close code 1011 to each of its clients). The
   worker is taken back once it answers again (Ray restarts it).

Workers are reached through `WorkerHandle` (the async methods of `SessionWorker`): a Ray actor
handle (`ray_pool.RayWorkerHandle`) in a cluster, or `LocalWorkerHandle` in this process.
`GatewayServer` is the websocket + HTTP front: the same `http.HttpFront` as `serve`'s (access
rules, live page), with the gateway's `/health` and `/info`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from longlive.errors import ErrorCode, ProtocolError
from longlive.protocol import (
    DEFAULT_LIMITS,
    FRAME_HEADER_SIZE,
    CommandErrorMessage,
    ErrorMessage,
    Hello,
    Queued,
    encode_message,
    parse_message,
)
from longlive.protocol.runner import parse_command

from ..access import address_key
from ..http import (
    HttpRequest,
    HttpResponse,
    close_reason,
    peer_address,
    peer_name,
)
from ..options import DEFAULT_GRACE_PERIOD, DEFAULT_MAX_CLIENTS_PER_ADDRESS, CloseCode
from ..server import CLOSE_TIMEOUT, MAX_SIZE_FACTOR, FrontServer
from ..timers import GraceTimers, consume
from .placement import BUSY, DIRECTOR, DOWN, FREE, VIEWER, Assign, Reject, Scheduler, new_session_id

__all__ = [
    "CLOSE_NO_SUCH_SESSION",
    "CLOSE_QUEUE_FULL",
    "CLOSE_SESSION_IDLE",
    "DEFAULT_IDLE_LIMIT",
    "CLOSE_WORKER_LOST",
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_REACTOR_IDLE",
    "NoWorkerFree",
    "ReactorPlacement",
    "SESSION_QUERY_PARAM",
    "ClientGone",
    "ClientLink",
    "Gateway",
    "GatewayServer",
    "LocalWorkerHandle",
    "WebSocketLink",
    "WorkerFailed",
    "WorkerHandle",
    "default_sessions_per_address",
    "session_param",
]

logger = logging.getLogger(__name__)

#: Clients that may wait for a worker at once; one more gets `queue_full` and close code 1013.
DEFAULT_MAX_QUEUE = 64
#: Seconds a session may go without a command from a director before it is ended for a client
#: that waits for a worker (a session nobody drives does not hold a worker against the queue).
DEFAULT_IDLE_LIMIT = 300.0
#: Seconds a Reactor session may have no WebRTC connection before it ends (the clients' connect
#: and reconnect budgets are about 30 s: docs/cluster.md, Reactor's clients).
DEFAULT_REACTOR_IDLE = 30.0
#: The query parameter of the websocket URL that joins a session: `ws://host:port/?session=ID`.
SESSION_QUERY_PARAM = "session"

# The close codes (`options.CloseCode`) under the gateway's names.
CLOSE_NORMAL = CloseCode.NORMAL
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_WORKER_LOST = CloseCode.INTERNAL_ERROR
CLOSE_QUEUE_FULL = CloseCode.TRY_AGAIN_LATER
#: `?session=` naming no live session (an application code, 4000-4999).
CLOSE_NO_SUCH_SESSION = CloseCode.NO_SUCH_SESSION
#: A session ended by the idle limit while others waited (`session_idle`).
CLOSE_SESSION_IDLE = CloseCode.SESSION_IDLE

#: Upstream close codes after which the gateway checks whether the worker still runs the session.
_SUSPECT_CODES = frozenset({1001, 1006, 1011, 1012, 1014})


# ----------------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------------
class WorkerFailed(Exception):
    """A worker that will not come back (its model failed to load): it is never used again."""


class WorkerHandle(Protocol):
    """How the gateway drives one worker (`worker.SessionWorker`'s methods, awaited)."""

    async def ready(self) -> dict[str, Any]: ...
    async def open_session(self, session_id: str, secret: str) -> dict[str, Any]: ...
    async def close_session(self, session_id: str | None) -> bool: ...
    async def current_session(self) -> dict[str, Any]: ...


class LocalWorkerHandle:
    """A `SessionWorker` in this process (tests, a single machine without Ray)."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    async def ready(self) -> dict[str, Any]:
        return dict(await self.worker.ready())

    async def open_session(self, session_id: str, secret: str) -> dict[str, Any]:
        return dict(await self.worker.open_session(session_id, secret))

    async def close_session(self, session_id: str | None) -> bool:
        return bool(await self.worker.close_session(session_id))

    async def current_session(self) -> dict[str, Any]:
        return dict(await self.worker.current_session())


# ----------------------------------------------------------------------------------------------
# Clients
# ----------------------------------------------------------------------------------------------
class ClientGone(Exception):
    """The client's connection is closed."""


class ClientLink(Protocol):
    """One client connection as the gateway drives it (a websockets connection, a Starlette
    websocket in the Ray Serve app). `recv` and `send` raise `ClientGone` once it is closed."""

    name: str

    async def recv(self) -> str | bytes: ...
    async def send(self, message: str | bytes) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class WebSocketLink:
    """A `ClientLink` over a `websockets` server connection."""

    def __init__(self, ws: ServerConnection, name: str = "ws") -> None:
        self.ws = ws
        self.name = name

    async def recv(self) -> str | bytes:
        try:
            return await self.ws.recv()
        except ConnectionClosed:
            raise ClientGone from None

    async def send(self, message: str | bytes) -> None:
        try:
            await self.ws.send(message)
        except ConnectionClosed:
            raise ClientGone from None

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, close_reason(reason))


_GONE = object()
#: Messages read from a client and not yet handled, before the gateway stops reading it.
INBOX_SIZE = 64


class _Client:
    """One connection: a ticket for the scheduler, its inbox and its send lock."""

    _ids = 0

    def __init__(self, link: ClientLink, address: str | None = None) -> None:
        _Client._ids += 1
        self.n = _Client._ids
        self.link = link
        self.address = address  # the address key its sessions count under (None: not counted)
        self.role = DIRECTOR  # or VIEWER, for a client that joined with a viewer key
        # Bounded: a client that sends faster than its messages are handled waits (TCP backpressure).
        self.inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=INBOX_SIZE)
        self.assigned: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.joined = False
        self.closed = False
        self._send_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<client {self.n} {self.link.name}>"

    def __hash__(self) -> int:
        return self.n

    async def send(self, message: str | bytes) -> None:
        async with self._send_lock:
            await self.link.send(message)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.link.close(code, reason)


class _OpenFailed(Exception):
    """A session could not be opened; `requeued`: its worker died, its owner waits again."""

    def __init__(self, reason: str, *, requeued: bool = False) -> None:
        super().__init__(reason)
        self.requeued = requeued


class _Live:
    """A session as the gateway runs it: where its worker serves it, and its clients."""

    _ids = 0

    def __init__(self, session_id: str, worker: int, viewer_key: str = "") -> None:
        _Live._ids += 1
        self.id = session_id  # its director key: a secret, never logged nor sent to the worker
        self.viewer_key = viewer_key
        # The session's name in logs and on its worker (not a key: it joins nothing).
        self.label = f"s{_Live._ids}"
        self.worker = worker
        self.secret = secrets.token_urlsafe(24)
        self.address: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self.address.add_done_callback(consume)
        self.incarnation: str | None = None
        self.clients: set[_Client] = set()
        # Set when the session is over for its clients (its worker died, or the idle limit):
        # each client is sent `error` with `end_code`, then closed with `end_close`.
        self.lost = asyncio.Event()
        self.lost_reason = ""
        self.end_code = ErrorCode.WORKER_LOST
        self.end_close: int = CLOSE_WORKER_LOST
        self.check: asyncio.Task[bool] | None = None
        self.opened_at = time.time()
        self.driven_at = time.monotonic()  # the last command of a director (or the opening)


def default_sessions_per_address(workers: int) -> int:
    """The default cap of sessions per address: every worker but one (at least one), so that no
    one address holds every worker of a cluster of two or more."""
    return max(workers - 1, 1)


def session_param(path: str) -> str | None:
    """The `session` query parameter of a request path (the last one wins), or None."""
    values = parse_qs(urlsplit(path).query, keep_blank_values=True).get(SESSION_QUERY_PARAM)
    return values[-1] if values else None


class NoWorkerFree(Exception):
    """No session can be opened for a Reactor client now (`reason` says why: every worker busy,
    the address at its cap, or the worker failed to open it). Reactor clients do not queue."""


@dataclasses.dataclass(frozen=True)
class ReactorPlacement:
    """Where a Reactor session runs: `key` (its director key: the `session_id` its client
    sees), `label` (its Reactor session id on the worker), the worker's server and its token."""

    key: str
    label: str
    worker: int
    host: str
    port: int
    secret: str


class _NoLink:
    """The `ClientLink` of a Reactor session's ticket: it has no websocket (its client talks
    HTTP to the gateway and WebRTC to the worker)."""

    name = "reactor"

    async def recv(self) -> str | bytes:  # pragma: no cover - never read
        await asyncio.Event().wait()
        raise ClientGone

    async def send(self, message: str | bytes) -> None:
        return None

    async def close(self, code: int, reason: str) -> None:
        return None


# ----------------------------------------------------------------------------------------------
# The gateway
# ----------------------------------------------------------------------------------------------
class Gateway:
    """Sessions on workers for every client (see the module docstring).

    - `workers`: one `WorkerHandle` per worker (each runs one session at a time);
    - `max_queue`: clients that may wait at once (`DEFAULT_MAX_QUEUE`; 0: no queue);
    - `grace_period`: seconds an idle session is kept for clients to rejoin (None: for ever),
      while no waiting client could take its worker (then it ends at once);
    - `max_sessions_per_address`: sessions one client address (an IPv6 /64) may hold at once;
      past it, its new clients wait in the queue (None: no cap);
    - `idle_limit`: seconds without a command from a director after which a session is ended
      for a waiting client (None: never);
    - `check_timeout`: seconds to wait for a worker's answer before counting it dead;
    - `restart_delay`: seconds between tries to take a dead worker back;
    - `session_ids`: makes session ids (tests);
    - `ray_auth`: Ray's authentication mode, shown in `/info` (`ray_pool.ray_auth_mode()`);
    - `reactor_idle`: seconds a Reactor session (`open_reactor_session`) may go without a WebRTC
      connection on its worker before it ends (its first connect included).
    """

    def __init__(
        self,
        workers: Sequence[WorkerHandle],
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        grace_period: float | None = DEFAULT_GRACE_PERIOD,
        max_sessions_per_address: int | None = None,
        idle_limit: float | None = DEFAULT_IDLE_LIMIT,
        check_timeout: float = 10.0,
        restart_delay: float = 0.25,
        connect_timeout: float = 10.0,
        session_ids: Callable[[], str] = new_session_id,
        ray_auth: str | None = None,
        reactor_idle: float = DEFAULT_REACTOR_IDLE,
    ) -> None:
        if not reactor_idle > 0:
            raise ValueError("reactor_idle must be > 0")
        if grace_period is not None and grace_period < 0:
            raise ValueError("grace_period must be >= 0 (or None)")
        if idle_limit is not None and not idle_limit > 0:
            raise ValueError("idle_limit must be > 0 (or None)")
        self.workers = list(workers)
        self.scheduler = Scheduler(
            len(self.workers),
            max_queue=max_queue,
            max_sessions_per_owner=max_sessions_per_address,
            session_ids=session_ids,
        )
        self.grace_period = grace_period
        self.idle_limit = idle_limit
        self.ray_auth = ray_auth
        self.check_timeout = check_timeout
        self.restart_delay = restart_delay
        self.connect_timeout = connect_timeout
        self.worker_info: list[dict[str, Any]] = [{} for _ in self.workers]
        self.worker_errors: list[str | None] = [None for _ in self.workers]
        self.worker_restarts = [0 for _ in self.workers]
        self.failed = asyncio.Event()  # every worker failed for good
        self.sessions_served = 0
        self.workers_lost = 0
        #: Why sessions ended: "left" (the grace period ran out), "reclaimed" (no client left and
        #: a client waited), "idle" (the idle limit, a client waiting), "lost" (its worker died).
        self.sessions_ended = {"left": 0, "reclaimed": 0, "idle": 0, "lost": 0}
        self._live: dict[str, _Live] = {}
        self._clients: set[_Client] = set()
        self._grace = GraceTimers()  # per idle session id
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervising: set[int] = set()
        self._closing = False
        self._started = False
        self.reactor_idle = reactor_idle
        #: Reactor sessions (director key -> its ticket and the event that ends it).
        self._reactor: dict[str, tuple[_Client, asyncio.Event]] = {}

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start watching the workers: each one is used as soon as it answers."""
        if self._started:
            return
        self._started = True
        for w in range(len(self.workers)):
            self._supervise(w, first=True)
        self._spawn(self._watch_idle(), name="idle sessions")

    async def wait_ready(self, n: int | None = None, timeout: float | None = None) -> None:
        """Wait until `n` workers (default: all) are up; TimeoutError after `timeout`."""
        n = len(self.workers) if n is None else n

        async def poll() -> None:
            while self.scheduler.ready_workers < n:
                if self.failed.is_set():
                    raise RuntimeError(self.failure_reason())
                await asyncio.sleep(0.05)

        await asyncio.wait_for(poll(), timeout)

    def failure_reason(self) -> str:
        errors = {e for e in self.worker_errors if e}
        return "every worker failed to start: " + "; ".join(sorted(errors))

    async def close(self) -> None:
        """Close every client (1001), end every session on its worker, stop watching workers."""
        if self._closing:
            return
        self._closing = True
        self._grace.cancel_all()
        await asyncio.gather(
            *(c.close(CLOSE_GOING_AWAY, "the cluster is shutting down") for c in list(self._clients)),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        ends = [self._close_on_worker(live) for live in self._live.values()]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*ends, return_exceptions=True), 10)
        self._live.clear()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("gateway task %s failed", task.get_name(), exc_info=task.exception())

    # --- views ----------------------------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body) of `GET /health`: 200 once a worker is up."""
        ready = self.scheduler.ready_workers
        if ready:
            status = "ok"
        elif self.failed.is_set():
            status = "failed"
        else:
            status = "starting"
        body = {
            "status": status,
            "workers": len(self.workers),
            "workers_ready": ready,
            "workers_busy": self.scheduler.count(BUSY),
            "sessions": len(self.scheduler.sessions),
            "queue_length": self.scheduler.queue_length,
        }
        return (200 if ready else 503), body

    def info(self) -> dict[str, Any]:
        """What `GET /info` shows: workers, sessions, the queue."""
        s = self.scheduler
        workers = []
        for slot in s.workers:
            meta = self.worker_info[slot.id]
            workers.append(
                {
                    "id": slot.id,
                    "state": slot.state,
                    "restarts": self.worker_restarts[slot.id],
                    "error": self.worker_errors[slot.id],
                    **{k: meta.get(k) for k in ("pid", "hostname", "address", "device", "gpu", "preset")},
                }
            )
        # No session's keys: they are what joins it, and only its clients may hand them out.
        now = time.monotonic()
        sessions = []
        for r in s.sessions.values():
            live = self._live.get(r.id)
            sessions.append(
                {
                    "worker": r.worker,
                    "clients": len(r.clients),
                    "viewers": len(r.viewers),
                    "idle": r.idle,
                    "undriven_s": round(now - live.driven_at, 1) if live is not None else None,
                }
            )
        preset = next((w["preset"] for w in workers if w.get("preset")), None)
        return {
            "cluster": True,
            "preset": preset,
            "workers": workers,
            "workers_ready": s.ready_workers,
            "sessions": sessions,
            "queue_length": s.queue_length,
            "max_queue": s.max_queue,
            "grace_period": self.grace_period,
            "idle_limit": self.idle_limit,
            "max_sessions_per_address": s.max_sessions_per_owner,
            "clients": len(self._clients),
            "sessions_served": self.sessions_served,
            "sessions_ended": dict(self.sessions_ended),
            "workers_lost": self.workers_lost,
            "ray_auth": self.ray_auth,
        }

    # --- Reactor sessions (cluster/reactor_routes.py) ------------------------------------------
    async def open_reactor_session(self, address: str | None) -> ReactorPlacement:
        """A new session on a free worker for a Reactor client (`POST /start_session`): the same
        placement and per-address cap as a websocket client's, but no queue: `NoWorkerFree`
        when none can be had now. The session lives while its worker has a WebRTC connection
        for it (and `reactor_idle` seconds past the last one), or until `end_reactor_session`."""
        if self._closing:
            raise NoWorkerFree("the cluster is shutting down")
        client = _Client(_NoLink(), address_key(address) if address is not None else None)
        assign = self.scheduler.place(client, client.address)
        if assign is None:
            free = self.scheduler.count(FREE)
            if free and not self.scheduler.queue_length:
                cap = self.scheduler.max_sessions_per_owner
                raise NoWorkerFree(f"this address already holds {cap} sessions (the cap per address)")
            raise NoWorkerFree(
                f"every worker is busy ({self.scheduler.count(BUSY)} sessions, "
                f"{self.scheduler.queue_length} websocket clients waiting): try again later"
            )
        self._clients.add(client)
        self._dispatch([assign])
        live = self._live[assign.session_id]
        try:
            host, port = await asyncio.shield(live.address)
        except _OpenFailed as exc:
            self._clients.discard(client)
            self._leave(client)
            raise NoWorkerFree(str(exc)) from None
        stop = asyncio.Event()
        self._reactor[live.id] = (client, stop)
        self._spawn(self._watch_reactor(client, live, stop), name=f"reactor {live.label}")
        return ReactorPlacement(live.id, live.label, live.worker, host, port, live.secret)

    def reactor_session(self, key: str) -> ReactorPlacement | None:
        """The Reactor session whose director key is `key` (None: no such live session)."""
        live = self._live.get(key)
        if key not in self._reactor or live is None or not live.address.done():
            return None
        if live.address.exception() is not None:
            return None
        host, port = live.address.result()
        return ReactorPlacement(live.id, live.label, live.worker, host, port, live.secret)

    def reactor_sessions_of(self, address: str | None) -> list[str]:
        """The keys of the live Reactor sessions opened from `address` (its address key)."""
        owner = address_key(address) if address is not None else None
        return [k for k, (client, _stop) in self._reactor.items() if client.address == owner]

    def end_reactor_session(self, key: str) -> bool:
        """End the Reactor session `key` now (`DELETE /sessions/{id}`); False: no such session."""
        found = self._reactor.get(key)
        if found is None:
            return False
        found[1].set()
        return True

    async def _watch_reactor(self, client: _Client, live: _Live, stop: asyncio.Event) -> None:
        """Keep a Reactor session while its worker has a WebRTC connection for it: it ends
        `reactor_idle` s after the last one closed (or none came), at `stop`, or with its worker."""
        period = min(1.0, self.reactor_idle / 4)
        empty_since: float | None = time.monotonic()
        try:
            while not self._closing and self._live.get(live.id) is live and not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), period)
                if stop.is_set() or self._live.get(live.id) is not live:
                    break
                try:
                    now = await asyncio.wait_for(
                        self.workers[live.worker].current_session(), self.check_timeout
                    )
                except Exception:
                    if not await self._verdict(live):
                        break
                    continue
                if now.get("session_id") != live.label or now.get("incarnation") != live.incarnation:
                    self._lose(live, "the worker running this session stopped (process died or restarted)")
                    break
                if now.get("reactor_connections"):
                    empty_since = None
                    # The gateway does not see the commands of a WebRTC client: a session with a
                    # live connection counts as driven (docs/cluster.md, Reactor's clients).
                    live.driven_at = time.monotonic()
                elif empty_since is None:
                    empty_since = time.monotonic()
                elif time.monotonic() - empty_since >= self.reactor_idle:
                    logger.info(
                        "Reactor session %s: no WebRTC connection for %g s", live.label, self.reactor_idle
                    )
                    break
        finally:
            self._reactor.pop(live.id, None)
            self._clients.discard(client)
            self._leave(client)
            # Nobody can rejoin a Reactor session once its ticket left: it ends now (`close`
            # ends every session itself).
            record = self.scheduler.sessions.get(live.id)
            if not self._closing and record is not None and record.idle:
                self._expire(live.id, "left")

    # --- one client -----------------------------------------------------------------------------
    async def serve_client(
        self, link: ClientLink, session_id: str | None = None, *, address: str | None = None
    ) -> None:
        """The whole life of one client connection (returns when it is closed). `session_id`: the
        key of `?session=` (join that session); `address`: the client's IP address (its sessions
        count under `access.address_key(address)`; None: not counted)."""
        if self._closing:
            await link.close(CLOSE_GOING_AWAY, "the cluster is shutting down")
            return
        client = _Client(link, address_key(address) if address is not None else None)
        self._clients.add(client)
        reader = asyncio.get_running_loop().create_task(self._read(client), name=f"read {client!r}")
        try:
            await self._serve(client, session_id)
        except ClientGone:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._clients.discard(client)
            self._leave(client)
            await client.close(CLOSE_NORMAL, "")

    async def _read(self, client: _Client) -> None:
        """The client's messages into its inbox; `_GONE` once it is closed."""
        try:
            while True:
                message = await client.link.recv()
                await client.inbox.put(message)
        except ClientGone:
            pass
        except Exception:  # pragma: no cover - a transport bug: treat as gone
            logger.exception("%r: reading failed", client)
        await client.inbox.put(_GONE)

    async def _serve(self, client: _Client, session_id: str | None) -> None:
        if session_id is not None:
            client.joined = True
            joined = self.scheduler.join(client, session_id)
            live = self._live.get(joined[0].id) if joined is not None else None
            if joined is None or live is None:
                # The key is not echoed: a near miss of a real key must not show up in logs.
                await self._refuse(
                    client,
                    ErrorCode.NO_SUCH_SESSION,
                    "no such session: it ended, or never was (sessions end "
                    f"{self.grace_period or 0:g} s after their last client left, at once when "
                    "others wait for a worker)",
                    CLOSE_NO_SUCH_SESSION,
                )
                return
            client.role = joined[1]
            self._cancel_grace(live.id)
            live.clients.add(client)
        else:
            outcome = self.scheduler.arrive(client, client.address)
            if isinstance(outcome, Reject):
                await self._refuse(
                    client,
                    ErrorCode.QUEUE_FULL,
                    f"every worker is busy and the queue is full ({outcome.max_queue} waiting): "
                    "try again later",
                    CLOSE_QUEUE_FULL,
                )
                return
            if isinstance(outcome, Assign):
                self._dispatch([outcome])
            else:
                self._tell_queue()
                self._reclaim()
        while True:
            if not client.joined:
                sid = await self._wait_for_session(client)
                if sid is None:
                    return  # it left the queue
                live = self._live[sid]
            assert live is not None  # joined: checked in _serve; queued: just assigned
            try:
                address = await asyncio.shield(live.address)
            except _OpenFailed as exc:
                if exc.requeued and not client.joined and not self._closing:
                    continue  # the worker died first: back at the head of the queue (`_open`)
                code = ErrorCode.WORKER_LOST if exc.requeued else ErrorCode.INTERNAL
                await self._refuse(client, code, str(exc), CLOSE_WORKER_LOST)
                return
            await self._proxy(client, live, address)
            return

    async def _wait_for_session(self, client: _Client) -> str | None:
        """Wait in the queue (refusing commands) until a session is assigned; None if it left."""
        while not client.assigned.done():
            get = asyncio.ensure_future(client.inbox.get())
            await asyncio.wait({get, client.assigned}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await get
                continue
            message = get.result()
            if message is _GONE:
                client.inbox.put_nowait(_GONE)
                return None
            await self._refuse_command(client, message)
        return client.assigned.result()

    async def _refuse_command(self, client: _Client, message: str | bytes) -> None:
        position = self.scheduler.position(client)
        reason = f"waiting for a worker (position {position} in the queue): commands wait for hello"
        command = msg_id = None
        if isinstance(message, str):
            try:
                cmd = parse_command(message)
                command, msg_id = cmd.type, cmd.id
            except ProtocolError as exc:
                command, msg_id = exc.command, exc.id
        await client.send(encode_message(CommandErrorMessage(command, ErrorCode.QUEUED, reason, id=msg_id)))

    async def _refuse(self, client: _Client, code: str, reason: str, close_code: int) -> None:
        logger.info("%r refused: [%s] %s", client, code, reason)
        with contextlib.suppress(ClientGone):
            await client.send(encode_message(ErrorMessage(message=reason, code=code)))
        await client.close(close_code, reason)

    def _tell_queue(self) -> None:
        for wait in self.scheduler.queue_updates():
            client = wait.ticket
            assert isinstance(client, _Client)
            text = encode_message(Queued(position=wait.position, queue_length=wait.queue_length))
            self._spawn(self._send_quietly(client, text), name=f"queued {client!r}")

    @staticmethod
    async def _send_quietly(client: _Client, text: str) -> None:
        with contextlib.suppress(ClientGone):
            await client.send(text)

    def _leave(self, client: _Client) -> None:
        was_queued = self.scheduler.position(client) is not None
        record = self.scheduler.leave(client)
        for live in self._live.values():
            live.clients.discard(client)
        if was_queued:
            self._tell_queue()
        if record is not None and not self._closing:  # its session is idle now
            self._cancel_grace(record.id)
            if self.scheduler.wanted(record.id):  # a waiting client could use its worker now
                self._expire(record.id, "reclaimed")
                return
            if self.grace_period is None:
                return
            self._grace.start(record.id, self.grace_period, self._expire, record.id)

    def _cancel_grace(self, session_id: str) -> None:
        self._grace.cancel(session_id)

    def _expire(self, session_id: str, why: str = "left") -> None:
        self._cancel_grace(session_id)
        assigns = self.scheduler.expire(session_id)
        if session_id not in self.scheduler.sessions:
            live = self._live.pop(session_id, None)
            if live is not None:
                self.sessions_ended[why] += 1
                if why == "left":
                    logger.info("session %s ended (no client for %g s)", live.label, self.grace_period or 0)
                else:
                    logger.info("session %s ended (no client left, and a client waits)", live.label)
                self._spawn(self._close_on_worker(live), name=f"close {live.label}")
        self._dispatch(assigns)
        self._tell_queue()

    def _reclaim(self) -> None:
        """While clients wait: end the idle sessions (no client) whose worker one of them could
        take, then those nobody drove for `idle_limit` seconds (least recently driven first)."""
        if self._closing or not self.scheduler.queue_length:
            return
        for record in list(self.scheduler.sessions.values()):
            if record.idle and self.scheduler.wanted(record.id):
                self._expire(record.id, "reclaimed")
        if self.idle_limit is None:
            return
        now = time.monotonic()
        undriven = sorted(
            (live for live in self._live.values() if now - live.driven_at >= self.idle_limit),
            key=lambda live: live.driven_at,
        )
        for live in undriven:
            if self._live.get(live.id) is not live or not self.scheduler.wanted(live.id):
                continue
            self.sessions_ended["idle"] += 1
            self._end(
                live,
                f"no command in this session for {self.idle_limit:g} s while others waited for a worker",
                ErrorCode.SESSION_IDLE,
                CLOSE_SESSION_IDLE,
            )
            self._spawn(self._close_on_worker(live), name=f"close {live.label}")
            self._dispatch(self.scheduler.end_session(live.id))
            self._tell_queue()

    async def _watch_idle(self) -> None:
        """Apply the idle limit, and reclaim idle sessions a waiting client could use now (one
        of its owner's sessions ended meanwhile), while clients wait."""
        limit = self.idle_limit
        period = 1.0 if limit is None else min(max(limit / 4, 0.05), 1.0)
        while not self._closing:
            await asyncio.sleep(period)
            self._reclaim()

    async def _close_on_worker(self, live: _Live) -> None:
        try:
            await asyncio.wait_for(self.workers[live.worker].close_session(live.label), self.check_timeout)
        except Exception as exc:  # it may be dead: the next open finds out
            logger.info("closing session %s on worker %d: %r", live.label, live.worker, exc)

    # --- sessions on workers --------------------------------------------------------------------
    def _dispatch(self, assigns: list[Assign]) -> None:
        """Open each assigned session on its worker and hand it to its client."""
        for a in assigns:
            record = self.scheduler.sessions.get(a.session_id)
            live = _Live(a.session_id, a.worker, record.viewer_id if record is not None else "")
            client = a.ticket
            assert isinstance(client, _Client)
            live.clients.add(client)
            self._live[a.session_id] = live
            self.sessions_served += 1
            if not client.assigned.done():
                client.assigned.set_result(a.session_id)
            self._spawn(self._open(live), name=f"open {a.session_id}")

    async def _open(self, live: _Live) -> None:
        worker = self.workers[live.worker]
        try:
            opened = await asyncio.wait_for(worker.open_session(live.label, live.secret), self.check_timeout)
        except Exception as exc:
            logger.warning("worker %d could not open session %s: %r", live.worker, live.label, exc)
            if self._live.get(live.id) is live:
                del self._live[live.id]
            if await self._answers(live.worker):
                # Alive, same process: the session itself failed (a bug, a resource error). Its
                # client is told; the worker goes on to the next one (no retry loop).
                live.address.set_exception(_OpenFailed(f"the worker could not open a session: {exc!r}"))
                self._dispatch(self.scheduler.end_session(live.id))
                self._tell_queue()
                return
            reason = f"worker {live.worker} stopped before the session opened"
            live.address.set_exception(_OpenFailed(reason, requeued=True))
            record = self.scheduler.worker_lost(live.worker)
            if record is not None:
                owners = [c for c in record.clients if isinstance(c, _Client) and not c.joined]
                for c in owners:
                    c.assigned = asyncio.get_running_loop().create_future()
                self.scheduler.requeue(owners)
            self._dispatch(self.scheduler.fill())  # its owner holds one session less
            self._tell_queue()
            self._supervise(live.worker)
            return
        live.incarnation = opened.get("incarnation")
        logger.info(
            "session %s on worker %d (%s:%s)", live.label, live.worker, opened["host"], opened["port"]
        )
        live.address.set_result((opened["host"], int(opened["port"])))

    async def _answers(self, w: int) -> bool:
        """Worker `w` answers, as the same process that said it was ready."""
        try:
            now = await asyncio.wait_for(self.workers[w].current_session(), self.check_timeout)
        except Exception:
            return False
        return bool(now.get("incarnation")) and now.get("incarnation") == self.worker_info[w].get(
            "incarnation"
        )

    async def _still_running(self, live: _Live) -> bool:
        """Ask the worker whether it still runs `live` (False when dead, restarted or silent)."""
        try:
            now = await asyncio.wait_for(self.workers[live.worker].current_session(), self.check_timeout)
        except Exception as exc:
            logger.info("worker %d does not answer: %r", live.worker, exc)
            return False
        return now.get("session_id") == live.label and now.get("incarnation") == live.incarnation

    async def _verdict(self, live: _Live) -> bool:
        """One check per suspicion, shared by the session's clients; ends the session if lost."""
        if live.lost.is_set():
            return False
        if live.check is None or live.check.done():
            live.check = asyncio.get_running_loop().create_task(self._still_running(live))
        alive = await asyncio.shield(live.check)
        if not alive:
            self._lose(live, "the worker running this session stopped (process died or restarted)")
        return alive

    def _lose(self, live: _Live, reason: str) -> None:
        if live.lost.is_set():
            return
        self.workers_lost += 1
        self.sessions_ended["lost"] += 1
        logger.warning("worker %d lost (session %s): %s", live.worker, live.label, reason)
        self._end(live, reason, ErrorCode.WORKER_LOST, CLOSE_WORKER_LOST)
        if self.scheduler.workers[live.worker].session == live.id:
            self.scheduler.worker_lost(live.worker)
            self._supervise(live.worker)
            self._dispatch(self.scheduler.fill())  # its owner holds one session less
            self._tell_queue()
            self._reclaim()

    def _end(self, live: _Live, reason: str, code: str, close_code: int) -> None:
        """The session is over for its clients: each is sent `error` `code`, then closed."""
        if live.lost.is_set():
            return
        live.lost_reason, live.end_code, live.end_close = reason, code, close_code
        live.lost.set()
        if self._live.get(live.id) is live:
            del self._live[live.id]
        self._cancel_grace(live.id)

    def _supervise(self, w: int, *, first: bool = False) -> None:
        """Take worker `w` back once it answers `ready()` (first start, or after a restart)."""
        if w in self._supervising or self._closing:
            return
        self._supervising.add(w)
        self._spawn(self._watch(w, first), name=f"worker {w}")

    async def _watch(self, w: int, first: bool) -> None:
        try:
            delay = self.restart_delay
            while not self._closing:
                try:
                    info = await self.workers[w].ready()
                except WorkerFailed as exc:
                    self.worker_errors[w] = str(exc)
                    logger.error("worker %d failed for good: %s", w, exc)
                    self.scheduler.workers[w].state = DOWN
                    if all(e is not None for e in self.worker_errors):
                        self.failed.set()
                    return
                except Exception as exc:
                    logger.info("worker %d not ready yet: %r", w, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                previous = self.worker_info[w].get("incarnation")
                if previous is not None and previous != info.get("incarnation"):
                    self.worker_restarts[w] += 1
                self.worker_info[w] = info
                self.worker_errors[w] = None
                logger.info(
                    "worker %d ready: pid %s on %s (%s)",
                    w,
                    info.get("pid"),
                    info.get("address"),
                    info.get("device"),
                )
                break
        finally:
            self._supervising.discard(w)
        if self._closing:
            return
        self._dispatch(self.scheduler.worker_up(w))
        self._tell_queue()

    # --- the proxy ------------------------------------------------------------------------------
    async def _proxy(self, client: _Client, live: _Live, address: tuple[str, int]) -> None:
        from websockets.asyncio.client import connect

        host, port = address
        url = f"ws://{host}:{port}/" if ":" not in host else f"ws://[{host}]:{port}/"
        try:
            upstream = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {live.secret}"},
                compression=None,
                max_size=None,  # frames; the worker bounds what it sends
                open_timeout=self.connect_timeout,
                proxy=None,  # a direct connection inside the cluster, whatever HTTP(S)_PROXY says
                user_agent_header="longlive-gateway",
            )
        except Exception as exc:
            logger.warning("%r: cannot reach worker %d at %s: %r", client, live.worker, url, exc)
            if not await self._verdict(live):
                await self._tell_lost(client, live)
            else:
                await self._refuse(client, ErrorCode.INTERNAL, "cannot reach the session's worker", 1011)
            return
        down = asyncio.ensure_future(self._downstream(client, live, upstream))
        up = asyncio.ensure_future(self._upstream(client, live, upstream))
        lost = asyncio.ensure_future(live.lost.wait())
        try:
            await asyncio.wait({down, up, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up, lost):
                task.cancel()
            await asyncio.gather(down, up, lost, return_exceptions=True)
        if live.lost.is_set():
            await upstream.close()
            await self._tell_lost(client, live)
            return
        if up.done() and not up.cancelled() and up.exception() is None:  # the client left
            await upstream.close(CLOSE_NORMAL, "the client left")
            return
        failure = down.exception() if down.done() and not down.cancelled() else None
        if isinstance(failure, ClientGone):
            await upstream.close(CLOSE_NORMAL, "the client left")
            return
        if failure is not None and not isinstance(failure, ConnectionClosed):  # pragma: no cover - a bug
            logger.error("%r: proxying failed", client, exc_info=failure)
            await upstream.close(1011, "gateway error")
            await client.close(1011, "internal error of the gateway")
            return
        # The worker closed the connection (or it dropped).
        await upstream.wait_closed()
        code, reason = upstream.close_code or 1006, upstream.close_reason or ""
        if code in _SUSPECT_CODES and not self._closing:
            if not await self._verdict(live):
                await self._tell_lost(client, live)
                return
            reason = reason or "the connection to the session's worker dropped"
        if code in (1005, 1006, 1015) or not (1000 <= code <= 1014 or 3000 <= code <= 4999):
            code = 1011  # reserved codes cannot be sent in a close frame
        await client.close(code, reason)

    async def _downstream(self, client: _Client, live: _Live, upstream: Any) -> None:
        """Worker -> client: text as is (hello gains the keys and the role), frames untouched."""
        first = True
        async for message in upstream:
            if first and isinstance(message, str):
                first = False
                # A director learns both keys; a viewer only the viewer key (it shares viewing).
                if client.role == VIEWER:
                    message = _with_keys(message, live.viewer_key, None, VIEWER)
                else:
                    message = _with_keys(message, live.id, live.viewer_key, DIRECTOR)
            await client.send(message)

    async def _upstream(self, client: _Client, live: _Live, upstream: Any) -> None:
        """Client -> worker, until the client leaves (returns) or the worker closes (raises).
        A viewer's messages other than `get_state` are answered here (`read_only`)."""
        while True:
            message = await client.inbox.get()
            if message is _GONE:
                return
            if client.role == VIEWER:
                refusal = _viewer_refusal(message)
                if refusal is not None:
                    await client.send(refusal)
                    continue
            elif not _asks_only(message):
                live.driven_at = time.monotonic()  # a director's command: the session is driven
            await upstream.send(message)

    async def _tell_lost(self, client: _Client, live: _Live) -> None:
        reason = live.lost_reason or "the session's worker stopped"
        with contextlib.suppress(ClientGone):
            await client.send(
                encode_message(
                    ErrorMessage(
                        message=f"{reason}; the session is over: connect again for a new one",
                        code=live.end_code,
                    )
                )
            )
        if live.end_code == ErrorCode.WORKER_LOST:
            await client.close(CLOSE_WORKER_LOST, "worker lost: the session is over")
        else:
            await client.close(live.end_close, f"{live.end_code}: the session is over")


def _with_keys(text: str, session_id: str, viewer_session_id: str | None, role: str) -> str:
    """The worker's `hello` with the session's key(s) and the client's role set (through the
    protocol module); any other message comes back unchanged."""
    try:
        msg = parse_message(text)
    except ProtocolError:
        return text
    if not isinstance(msg, Hello):
        return text
    return encode_message(
        dataclasses.replace(msg, session_id=session_id, viewer_session_id=viewer_session_id, role=role)
    )


#: What a viewer may send: commands that change nothing and answer only their sender.
VIEWER_COMMANDS = frozenset({"get_state"})


def _asks_only(message: str | bytes) -> bool:
    """True for a message that changes nothing (`get_state`): it does not count as driving."""
    if not isinstance(message, str):
        return False
    try:
        return parse_command(message).type in VIEWER_COMMANDS
    except ProtocolError:
        return False


def _viewer_refusal(message: str | bytes) -> str | None:
    """None when a viewer may send `message` on, else the `command_error` that answers it."""
    command = msg_id = None
    if isinstance(message, str):
        try:
            cmd = parse_command(message)
            command, msg_id = cmd.type, cmd.id
        except ProtocolError as exc:
            command, msg_id = exc.command, exc.id
        if command in VIEWER_COMMANDS:
            return None
    reason = "this client joined as a viewer: it may watch and send get_state, not steer the session"
    return encode_message(CommandErrorMessage(command, ErrorCode.READ_ONLY, reason, id=msg_id))


# ----------------------------------------------------------------------------------------------
# The websocket + HTTP front
# ----------------------------------------------------------------------------------------------
class GatewayServer(FrontServer):
    """`serve`'s HTTP front (`http.HttpFront`: access rules, live page) in front of a `Gateway`:
    each websocket is a gateway client; `/health` shows workers, sessions, queue; `/info` the
    gateway's `info()`.

    `height`, `width`: the model's frame size (bounds of a client's unsent bytes);
    `token`, `allowed_origins`, `max_clients_per_address`, `close_timeout`: as `RunnerServer`'s;
    `reactor`: serve Reactor's clients too (`reactor_routes`: a session per `/start_session`;
    the workers need their `webrtc` option). More routes go on `server.front` (`add_route`) before `start`.
    """

    def __init__(
        self,
        gateway: Gateway,
        *,
        height: int = 480,
        width: int = 832,
        token: str | None = None,
        allowed_origins: Iterable[str] = (),
        max_clients_per_address: int | None = DEFAULT_MAX_CLIENTS_PER_ADDRESS,
        close_timeout: float = CLOSE_TIMEOUT,
        reactor: bool = False,
    ) -> None:
        self.gateway = gateway
        super().__init__(
            self._serve_client,
            frame_bytes=FRAME_HEADER_SIZE + height * width * 3,
            max_size=DEFAULT_LIMITS.max_message_bytes * MAX_SIZE_FACTOR,
            close_timeout=close_timeout,
            token=token,
            allowed_origins=allowed_origins,
            max_clients_per_address=max_clients_per_address,
        )
        if reactor:
            from .reactor_routes import add_reactor_routes

            add_reactor_routes(self.front, gateway)

    async def close(self, timeout: float | None = None) -> None:
        """Close every client (1001) and stop listening; `timeout` as `RunnerServer.close`'s."""
        wait = self.close_timeout + 5 if timeout is None else timeout
        await self.front.close(CLOSE_GOING_AWAY, "the cluster is shutting down", timeout=wait)

    async def _health(self, request: HttpRequest) -> HttpResponse:
        status, body = self.gateway.health()
        return HttpResponse.json(status, body)

    async def _info(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(200, self.gateway.info())

    async def _serve_client(self, ws: ServerConnection) -> None:
        session = session_param(ws.request.path) if ws.request is not None else None
        await self.gateway.serve_client(WebSocketLink(ws, peer_name(ws)), session, address=peer_address(ws))
