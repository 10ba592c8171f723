"""The cluster without Ray: the scheduler's rules, the protocol additions, and the gateway driving
in-process workers (`LocalWorkerHandle`) over real websockets, with the SDK as its client.

The same gateway runs on Ray workers in tests/test_cluster.py; here every rule is checked fast
and deterministically (a worker "dies" by losing its session and incarnation on command).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from _frames import take
from _poll import eventually
from longlive import (
    ConnectionClosedError,
    ErrorMessage,
    Hello,
    Queued,
    QueueTimeoutError,
    Reactor,
)
from longlive._urls import with_session
from longlive.protocol import encode_message, parse_message
from longlive.protocol.runner import hello_for
from longlive_runner.serving.cluster.gateway import (
    CLOSE_NO_SUCH_SESSION,
    CLOSE_SESSION_IDLE,
    Gateway,
    GatewayServer,
    LocalWorkerHandle,
    _with_keys,
    session_param,
)
from longlive_runner.serving.cluster.placement import (
    BUSY,
    DIRECTOR,
    DOWN,
    FREE,
    VIEWER,
    Assign,
    Reject,
    Scheduler,
    Wait,
)
from longlive_runner.serving.cluster.worker import SessionWorker

PROMPT = "a red circle moving right on a black background"


# ----------------------------------------------------------------------------------------------
# The scheduler
# ----------------------------------------------------------------------------------------------
def counter() -> Callable[[], str]:
    n = itertools.count(1)
    return lambda: f"s{next(n)}"


def test_clients_get_free_workers_then_queue_then_are_rejected() -> None:
    s = Scheduler(2, max_queue=2, session_ids=counter())
    assert s.arrive("a") == Wait("a", 1, 1)  # no worker is up yet
    assert s.worker_up(0) == [Assign("a", 0, "s1")]
    assert s.worker_up(1) == []
    assert s.arrive("b") == Assign("b", 1, "s2")
    assert s.arrive("c") == Wait("c", 1, 1)
    assert s.arrive("d") == Wait("d", 2, 2)
    assert s.arrive("e") == Reject("e", 2, 2)
    assert [w.state for w in s.workers] == [BUSY, BUSY]
    assert s.queue_updates() == [Wait("c", 1, 2), Wait("d", 2, 2)]
    assert s.queue_updates() == []  # told already


def test_leaving_moves_the_queue_and_the_grace_period_frees_the_worker() -> None:
    s = Scheduler(1, max_queue=5, session_ids=counter())
    s.worker_up(0)
    assert s.arrive("a") == Assign("a", 0, "s1")
    for t in "bcd":
        s.arrive(t)
    s.queue_updates()
    assert s.leave("c") is None  # left the queue
    assert s.queue_updates() == [Wait("b", 1, 2), Wait("d", 2, 2)]
    assert s.join("viewer", "s1") is not None
    assert s.leave("a") is None  # the viewer is still there
    idle = s.leave("viewer")
    assert idle is not None and idle.id == "s1" and idle.idle
    assert s.join("late", "s1") is not None  # rejoined within the grace period
    assert s.expire("s1") == []  # not idle any more: nothing happens
    assert s.leave("late") is not None
    assert s.expire("s1") == [Assign("b", 0, "s2")]  # over: the head of the queue gets the worker
    assert s.position("d") == 1 and s.queue_updates() == [Wait("d", 1, 1)]
    assert s.join("x", "s1") is None  # an ended session cannot be joined


def test_a_lost_worker_ends_only_its_session_and_comes_back() -> None:
    s = Scheduler(2, max_queue=4, session_ids=counter())
    s.worker_up(0)
    s.worker_up(1)
    s.arrive("a")
    s.join("a2", "s1")
    s.arrive("b")
    s.arrive("c")
    lost = s.worker_lost(0)
    assert lost is not None and lost.id == "s1" and lost.clients == {"a", "a2"}
    assert s.workers[0].state == DOWN and s.sessions.keys() == {"s2"}
    assert s.leave("a") is None and s.leave("a2") is None  # nothing left to idle
    assert s.worker_up(0) == [Assign("c", 0, "s3")]
    assert s.workers[0].state == BUSY
    # a worker that dies before its session opens: the owner goes back to the head of the queue
    s.arrive("d")
    s.worker_lost(1)
    s.requeue(["b"])
    assert s.queue == ["b", "d"]
    assert s.worker_up(1) == [Assign("b", 1, "s4")]
    s.end_session("s4")
    assert s.workers[1].state == BUSY and s.sessions["s5"].clients == {"d"}


def test_no_queue_rejects_at_once_and_bad_arguments() -> None:
    s = Scheduler(1, max_queue=0)
    s.worker_up(0)
    assert isinstance(s.arrive("a"), Assign)
    assert s.arrive("b") == Reject("b", 0, 0)
    assert s.workers[0].state == BUSY and s.count(FREE) == 0
    with pytest.raises(ValueError):
        s.arrive("a")
    with pytest.raises(ValueError):
        Scheduler(0)
    with pytest.raises(ValueError):
        Scheduler(1, max_queue=-1)


def test_an_owner_at_its_cap_waits_and_the_clients_behind_it_pass() -> None:
    s = Scheduler(2, max_queue=4, max_sessions_per_owner=1, session_ids=counter())
    s.worker_up(0)
    s.worker_up(1)
    assert s.arrive("a1", "A") == Assign("a1", 0, "s1")
    assert s.arrive("a2", "A") == Wait("a2", 1, 1)  # a worker is free, but A holds its one
    assert s.arrive("b1", "B") == Assign("b1", 1, "s2")  # past a2
    assert s.arrive("n", None) == Wait("n", 2, 2)  # an owner that is not counted: no worker free
    assert (s.owned("A"), s.owned("B"), s.owned(None)) == (1, 1, 0)
    assert s.wanted("s1") and s.wanted("s2")
    assert s.leave("a1") is not None
    assert s.expire("s1") == [Assign("a2", 0, "s3")]  # the first in line that may hold one
    assert s.queue == ["n"]
    # only a waiting client that could use the worker makes a session wanted
    t = Scheduler(2, max_sessions_per_owner=1, session_ids=counter())
    t.worker_up(0)
    t.worker_up(1)
    t.arrive("a1", "A")
    t.arrive("b1", "B")
    t.arrive("a2", "A")
    assert t.leave("b1") is not None
    assert not t.wanted("s2")  # a2's owner is at its cap whatever s2 does
    assert t.wanted("s1")  # but s1 ending would let a2 in
    assert t.expire("s2") == [] and t.workers[1].state == FREE  # free, and a2 still waits
    assert t.worker_lost(0) is not None  # A's session is gone with its worker
    assert t.fill() == [Assign("a2", 1, "s3")]
    with pytest.raises(ValueError):
        Scheduler(1, max_sessions_per_owner=0)


def test_a_session_has_a_director_key_and_a_viewer_key() -> None:
    s = Scheduler(1, session_ids=counter(), viewer_ids=lambda: "v1")
    s.worker_up(0)
    assert s.arrive("owner", "A") == Assign("owner", 0, "s1")
    record = s.sessions["s1"]
    assert record.viewer_id == "v1" and record.owner == "A"
    joined = s.join("d", "s1")
    assert joined is not None and joined[1] == DIRECTOR
    watching = s.join("v", "v1")
    assert watching is not None and watching[0] is record and watching[1] == VIEWER
    assert record.viewers == {"v"} and record.role_of("v") == VIEWER and record.role_of("d") == DIRECTOR
    assert s.join("x", "s2") is None and s.join("y", "v") is None
    for t in ("owner", "d"):
        s.leave(t)
    assert s.leave("v") is record and record.viewers == set()
    s.expire("s1")
    assert s.join("late", "s1") is None and s.join("late", "v1") is None  # both keys are gone


# ----------------------------------------------------------------------------------------------
# Protocol and SDK pieces
# ----------------------------------------------------------------------------------------------
def test_hello_session_id_and_queued_round_trip() -> None:
    hello = hello_for(height=64, width=64, preset="demo")
    assert hello.session_id is None
    with_id = parse_message(_with_keys(encode_message(hello), "abc", "view", "director"))
    assert isinstance(with_id, Hello) and with_id.session_id == "abc" and with_id.preset == "demo"
    assert with_id.viewer_session_id == "view" and with_id.role == "director"
    # an older runner's hello has no session_id: None
    old = json.loads(encode_message(hello))
    for name in ("session_id", "viewer_session_id", "role"):
        del old["data"][name]
    assert parse_message(json.dumps(old)) == hello
    text = encode_message(Queued(position=2, queue_length=5))
    assert json.loads(text) == {"type": "queued", "data": {"position": 2, "queue_length": 5}}
    assert _with_keys(text, "abc", None, "viewer") == text  # only hello changes


def test_session_urls() -> None:
    assert with_session("ws://h:1", None) == "ws://h:1"
    assert with_session("ws://h:1", "a b") == "ws://h:1/?session=a%20b"
    assert with_session("ws://h:1/?token=t&session=old", "new") == "ws://h:1/?token=t&session=new"
    assert session_param("/?token=t&session=x") == "x" and session_param("/") is None


# ----------------------------------------------------------------------------------------------
# The gateway, with in-process workers
# ----------------------------------------------------------------------------------------------
class Killable(LocalWorkerHandle):
    """A local worker that can "die": its session server goes away and it comes back as a new
    incarnation (what Ray does to a killed actor), after `down_for` seconds of not answering."""

    def __init__(self, worker: SessionWorker, gate: asyncio.Event | None = None) -> None:
        super().__init__(worker)
        self.gate = gate
        self.down_until = 0.0
        self.broken = False

    async def ready(self) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if asyncio.get_running_loop().time() < self.down_until:
            raise ConnectionError("restarting")
        return await super().ready()

    async def open_session(self, session_id: str, secret: str) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("a bug in open_session")
        return await super().open_session(session_id, secret)

    async def kill(self, down_for: float = 0.3) -> None:
        self.down_until = asyncio.get_running_loop().time() + down_for
        server = self.worker._server
        self.worker.incarnation = uuid.uuid4().hex
        self.worker._server = self.worker._runner = self.worker._session_id = None
        if server is not None:  # the connections drop without a proper close, as with SIGKILL
            for conn in list(server.front.connections):
                conn.transport.abort()
            await server.close()


class Front:
    def __init__(self, gateway: Gateway, server: GatewayServer, handles: list[Killable]) -> None:
        self.gateway, self.server, self.handles = gateway, server, handles

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http(self) -> str:
        return "http" + self.server.url[2:]


async def open_front(
    pipes: list[Any], n: int = 2, *, gate: asyncio.Event | None = None, **options: Any
) -> Front:
    options.setdefault("grace_period", 0.0)
    token = options.pop("token", None)
    handles = [
        Killable(SessionWorker(pipeline=pipes[i], host="127.0.0.1", runner_options={"max_peers": 4}), gate)
        for i in range(n)
    ]
    gateway = Gateway(handles, check_timeout=2.0, restart_delay=0.05, **options)
    server = GatewayServer(gateway, height=64, width=112, token=token)
    await gateway.start()
    await server.start("127.0.0.1", 0)
    if gate is None:
        await gateway.wait_ready(timeout=30)
    return Front(gateway, server, handles)


@pytest.fixture
async def front_factory(pipes: list[Any]) -> AsyncIterator[Callable[..., Any]]:
    fronts: list[Front] = []

    async def make(n: int = 2, **options: Any) -> Front:
        front = await open_front(pipes, n, **options)
        fronts.append(front)
        return front

    yield make
    for front in fronts:
        await front.server.close()
        await front.gateway.close()
        for h in front.handles:
            await h.worker.shutdown()


async def aget(url: str, **kwargs: Any) -> httpx.Response:
    """GET from inside the event loop that runs the server (a blocking GET would deadlock)."""
    async with httpx.AsyncClient() as client:
        return await client.get(url, timeout=10, **kwargs)


async def test_each_client_its_own_session_a_viewer_joins(front_factory: Any) -> None:
    front = await front_factory(2)
    async with Reactor(front.url) as a, Reactor(front.url) as b:
        assert a.session_id and b.session_id and a.session_id != b.session_id
        assert a.hello.preset == "tiny" and a.queue_position is None
        async with Reactor(front.url, session=a.session_id) as viewer:
            assert viewer.session_id == a.session_id
            await a.schedule_prompt(PROMPT, 0)
            await viewer.start()  # a co-director: any client of the session drives it
            fa, fv = await asyncio.gather(take(a, 21), take(viewer, 21))
            assert [f.index for f in fa] == [f.index for f in fv] == list(range(21))
            assert all((x.image == y.image).all() for x, y in zip(fa, fv))
            assert not b.state.running  # b's session is its own
            await a.pause()
        text = (await aget(front.http + "/info")).text
        info = json.loads(text)
        assert info["cluster"] and {w["state"] for w in info["workers"]} == {"busy"}
        assert [(s["clients"], s["viewers"]) for s in info["sessions"]] == [(1, 0), (1, 0)]
        for key in (a.session_id, b.session_id, a.hello.viewer_session_id, b.hello.viewer_session_id):
            assert key and key not in text  # /info lists no session's keys


async def test_queue_positions_timeout_and_full_queue(front_factory: Any) -> None:
    front = await front_factory(1, max_queue=2)
    owner = Reactor(front.url)
    await owner.connect()
    seen: list[Queued] = []
    second = Reactor(front.url)
    second.on_queue(seen.append)
    third = Reactor(front.url)
    waiting = asyncio.create_task(second.connect())
    await eventually(lambda: second.queue_position == 1, "second.queue_position == 1", timeout=10.0)
    waiting_too = asyncio.create_task(third.connect(queue_timeout=0.5))
    await eventually(lambda: third.queue_position == 2, "third.queue_position == 2", timeout=10.0)
    assert second.status == "connecting" and second.queue_length == 2

    # a command on a queued connection is refused (raw websocket: the SDK waits for hello)
    async with connect(front.url) as raw:
        assert json.loads(await raw.recv())["type"] == "error"  # the queue is full: max_queue=2
        with pytest.raises(ConnectionClosed):
            await raw.recv()
        assert raw.close_code == 1013
    with pytest.raises(QueueTimeoutError) as timed_out:
        await waiting_too
    assert timed_out.value.position == 2
    await eventually(lambda: second.queue_length == 1, "second.queue_length == 1", timeout=10.0)
    async with connect(front.url) as raw:
        assert json.loads(await raw.recv()) == {"type": "queued", "data": {"position": 2, "queue_length": 2}}
        await raw.send(json.dumps({"type": "get_state", "id": "q1"}))
        reply = json.loads(await raw.recv())
        assert reply["type"] == "command_error" and reply["data"]["code"] == "queued" and reply["id"] == "q1"

    assert [(q.position, q.queue_length) for q in seen][:2] == [(1, 1), (1, 2)]
    await owner.close()  # grace period 0: the worker is free, the head of the queue gets it
    await asyncio.wait_for(waiting, 10)
    assert second.connected and second.session_id not in (None, owner.session_id)
    assert second.queue_position is None
    await second.schedule_prompt(PROMPT, 0)
    await second.start()
    assert len(await take(second, 9)) == 9
    await second.close()


async def test_unknown_session_is_refused(front_factory: Any) -> None:
    front = await front_factory(1)
    errors: list[ErrorMessage] = []
    reactor = Reactor(front.url, session="no-such-session")
    reactor.on("error", errors.append)
    with pytest.raises(ConnectionClosedError) as info:
        await reactor.connect()
    assert info.value.code == CLOSE_NO_SUCH_SESSION and "no such session" in info.value.reason
    assert errors and errors[0].code == "no_such_session"


async def test_a_session_nobody_drives_is_ended_for_a_waiting_client(front_factory: Any) -> None:
    front = await front_factory(1, idle_limit=0.3, grace_period=None)
    idle = Reactor(front.url)
    errors: list[ErrorMessage] = []
    idle.on("error", errors.append)
    await idle.connect()
    await asyncio.sleep(0.6)  # past the idle limit, but nobody waits: it keeps its worker
    assert idle.connected and front.gateway.sessions_ended["idle"] == 0
    async with Reactor(front.url, queue_timeout=20) as waiting:  # ... until someone waits
        assert waiting.session_id and waiting.session_id != idle.session_id
        await eventually(lambda: bool(errors), "bool(errors)", timeout=10.0)
        assert [e.code for e in errors] == ["session_idle"]
        assert front.gateway.sessions_ended["idle"] == 1
        with pytest.raises(ConnectionClosedError) as closed:
            await asyncio.wait_for(take(idle, 1), 10)
        assert closed.value.code == CLOSE_SESSION_IDLE
        # a session its director drives keeps its worker, whoever waits
        third = Reactor(front.url, queue_timeout=1.5)
        connecting = asyncio.create_task(third.connect())
        for _ in range(12):
            await waiting.schedule_prompt(PROMPT, 0)
            await asyncio.sleep(0.15)
        with pytest.raises(QueueTimeoutError):
            await connecting
        assert waiting.connected
    await idle.close()


async def test_with_grace_off_a_closed_session_still_frees_its_worker_for_the_queue(
    front_factory: Any,
) -> None:
    front = await front_factory(1, grace_period=None, idle_limit=None)
    first = Reactor(front.url)
    await first.connect()
    await first.close()  # kept for ever for it to come back, while nobody waits
    await asyncio.sleep(0.2)
    assert front.gateway.health()[1]["sessions"] == 1
    async with Reactor(front.url, queue_timeout=10) as second:  # someone waits: it ends at once
        assert second.session_id != first.session_id
    assert front.gateway.sessions_ended["reclaimed"] == 1


async def test_a_dead_worker_ends_only_its_session(front_factory: Any) -> None:
    front = await front_factory(2)
    a, b = Reactor(front.url), Reactor(front.url)
    await a.connect()
    await b.connect()
    errors: list[ErrorMessage] = []
    a.on("error", errors.append)
    for r in (a, b):
        await r.schedule_prompt(PROMPT, 0)
        await r.start()
        await take(r, 9)
    worker = next(i for i, s in enumerate(front.gateway.scheduler.workers) if s.session == a.session_id)
    await front.handles[worker].kill()
    with pytest.raises(ConnectionClosedError) as closed:
        await asyncio.wait_for(take(a, 10_000), 20)
    assert closed.value.code == 1011 and "worker lost" in closed.value.reason
    assert errors and errors[-1].code == "worker_lost"
    assert len(await take(b, 24)) == 24 and b.connected  # the other session goes on
    await eventually(
        lambda: front.gateway.scheduler.workers[worker].state == FREE,
        "front.gateway.scheduler.workers[worker].state == FREE",
        timeout=10.0,
    )
    assert front.gateway.info()["workers"][worker]["restarts"] == 1
    async with Reactor(front.url) as c:  # served again, on the restarted worker
        assert c.session_id not in (a.session_id, b.session_id)
        await c.schedule_prompt(PROMPT, 0)
        await c.start()
        assert len(await take(c, 9)) == 9
    await a.close()
    await b.close()


async def test_a_session_that_fails_to_open_is_refused_without_a_retry_loop(front_factory: Any) -> None:
    front = await front_factory(1)
    front.handles[0].broken = True
    errors: list[ErrorMessage] = []
    first = Reactor(front.url)
    first.on("error", errors.append)
    with pytest.raises(ConnectionClosedError) as info:
        await first.connect()
    assert info.value.code == 1011 and [e.code for e in errors] == ["internal"]
    assert "could not open a session" in errors[0].message
    assert front.gateway.sessions_served == 1  # tried once, not again and again
    assert front.gateway.scheduler.workers[0].state == FREE  # the worker itself is fine
    front.handles[0].broken = False
    async with Reactor(front.url) as second:
        assert second.session_id


async def test_health_before_workers_and_the_token(pipes: list[Any]) -> None:
    gate = asyncio.Event()
    front = await open_front(pipes, 1, gate=gate, token="t" * 20)
    try:
        health = await aget(front.http + "/health")
        assert health.status_code == 503 and health.json()["status"] == "starting"
        assert (await aget(front.http + "/info")).status_code == 401
        with pytest.raises(ConnectionClosedError):
            await Reactor(front.url, token="wrong" * 4).connect()
        early = Reactor(front.url, token="t" * 20)
        connecting = asyncio.create_task(early.connect())  # queued until a worker is up
        await eventually(lambda: early.queue_position == 1, "early.queue_position == 1", timeout=10.0)
        gate.set()
        await asyncio.wait_for(connecting, 20)
        body = (await aget(front.http + "/health")).json()
        assert body == {
            "status": "ok",
            "workers": 1,
            "workers_ready": 1,
            "workers_busy": 1,
            "sessions": 1,
            "queue_length": 0,
        }
        info = (await aget(front.http + "/info", headers={"Authorization": "Bearer " + "t" * 20})).json()
        assert info["workers"][0]["pid"] and info["queue_length"] == 0
        await early.close()
    finally:
        await front.server.close()
        await front.gateway.close()
        for h in front.handles:
            await h.worker.shutdown()


async def test_the_gateway_counts_only_wrong_tokens(pipes: list[Any]) -> None:
    """The gateway's front applies serve's access rules (access.py): requests without any
    credentials (what any page's <img> sends, from the address every local client shares) never
    lock the right token out; wrong tokens still do."""
    from websockets.exceptions import InvalidStatus

    token = "t" * 20
    front = await open_front(pipes, 1, token=token)
    right = {"Authorization": f"Bearer {token}"}
    try:
        for _ in range(12):
            assert (await aget(front.http + "/info")).status_code == 401
            with pytest.raises(InvalidStatus) as refused:
                async with connect(front.url):
                    pass
            assert refused.value.response.status_code == 401
        assert (await aget(front.http + "/info", headers=right)).status_code == 200
        async with Reactor(front.url, token=token) as reactor:
            assert reactor.session_id
        for i in range(10):
            assert (
                await aget(front.http + "/info", headers={"Authorization": f"Bearer x{i}"})
            ).status_code == 401
        assert (await aget(front.http + "/info", headers=right)).status_code == 429  # guessing is limited
    finally:
        await front.server.close()
        await front.gateway.close()
        for h in front.handles:
            await h.worker.shutdown()


def test_the_serve_application_arguments() -> None:
    from _cluster_process import require_ray

    require_ray()
    with warnings.catch_warnings():  # Ray Serve's own pydantic deprecations, not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        from longlive_runner.serving.cluster.app import build_app, parse_args

    options = parse_args(
        {"workers": "2", "grace_period": "off", "allow_origin": "HTTP://a.example:80/,https://b"}
    )
    assert options["workers"] == 2 and options["grace_period"] is None and options["pace"] == "realtime"
    assert options["allow_origin"] == ["http://a.example", "https://b"]
    assert parse_args({"grace_period": 5, "max_queue": 0})["max_queue"] == 0
    with pytest.raises(ValueError, match="unknown arguments: wokers"):
        parse_args({"wokers": "2"})
    with pytest.raises(ValueError, match="pace"):
        parse_args({"pace": "slow"})
    assert build_app({"workers": "1"}) is not None  # an Application; nothing starts until serve.run
