"""`longlive-runner cluster` on a real local Ray cluster: 2 CPU workers with the demo model.

One cluster for the whole test session (tests/_cluster_process.py; skipped loudly without Ray,
a failure under LONGLIVE_REQUIRE_CLUSTER=1 as in CI). Each test waits until the sessions of the
tests before it ended (the cluster's grace period is 1 s). The shared client suite also runs
against this endpoint (tests/test_client_e2e.py, "cluster").

The cluster holds at most one session per client address (its default with 2 workers: every
worker but one), so tests that need two sessions at once connect from two loopback addresses
(`reactor_from("127.0.0.2", ...)`), as two machines would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from websockets.sync.client import connect as sync_connect

from _cluster_process import health, info, wait_idle
from _frames import take
from _poll import eventually, eventually_sync
from longlive import (
    CommandError,
    ConnectionClosedError,
    ErrorMessage,
    Queued,
    Reactor,
    Transport,
    WebSocketTransport,
)
from longlive._urls import with_session
from serve_process import RunnerProcess

pytestmark = pytest.mark.slow

PROMPT = "a red circle moving right on a black background"
FIRST, LATER = 9, 12


async def start(reactor: Reactor, prompt: str = PROMPT) -> None:
    await reactor.schedule_prompt(prompt, 0)
    await reactor.start()


def reactor_from(address: str, url: str, *, session: str | None = None, **options: Any) -> Reactor:
    """A `Reactor` whose connections come from `address` (127.0.0.2, ...: another client
    address for the cluster's per-address rules)."""
    target = with_session(url, session)

    async def open_transport() -> Transport:
        return await WebSocketTransport.connect(target, local_addr=(address, 0))

    return Reactor(transport_factory=open_transport, **options)


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            if width == 4:
                ip = ".".join(str(b) for b in reversed(raw))
            else:
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                ip = ":".join(b"".join(words)[i : i + 2].hex() for i in range(0, 16, 2))
            out.append((ip, int(hex_port, 16)))
    return out


async def test_three_clients_two_sessions_in_parallel_the_third_queued(
    cluster_process: RunnerProcess,
) -> None:
    wait_idle(cluster_process)
    url = cluster_process.url
    a, b = Reactor(url, command_timeout=30), reactor_from("127.0.0.2", url, command_timeout=30)
    c = reactor_from("127.0.0.3", url, command_timeout=30, queue_timeout=60)
    told: list[Queued] = []
    c.on_queue(told.append)
    try:
        await asyncio.gather(a.connect(), b.connect())
        assert a.session_id and b.session_id and a.session_id != b.session_id
        assert a.hello.preset == "demo" and a.hello.session_id == a.session_id
        waiting = asyncio.create_task(c.connect())
        deadline = time.monotonic() + 15
        while c.queue_position is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert c.queue_position == 1 and c.queue_length == 1 and c.status == "connecting"
        assert health(cluster_process)["queue_length"] == 1

        # Both sessions run at once, on two worker processes: each one's video goes on while the
        # other's is running, neither waits for the other to end (no clock: the machine may be
        # loaded, so when the frames come is not the property).
        await asyncio.gather(start(a, PROMPT), start(b, "a blue square moving left on a gray background"))
        n = FIRST + 2 * LATER
        got_a, got_b = await asyncio.gather(take(a, n), take(b, n))
        assert a.state.running and b.state.running and not a.state.paused and not b.state.paused
        more_a, more_b = await asyncio.gather(take(a, LATER), take(b, LATER))  # both go on
        got_a, got_b = got_a + more_a, got_b + more_b
        assert [f.index for f in got_a] == [f.index for f in got_b] == list(range(n + LATER))
        assert any((x.image != y.image).any() for x, y in zip(got_a, got_b))  # two different videos
        workers = info(cluster_process)["workers"]
        assert {w["state"] for w in workers} == {"busy"}
        assert len({w["pid"] for w in workers}) == 2
        assert not waiting.done() and c.queue_position == 1  # still waiting

        await a.close()  # its session ends after the grace period: c gets the worker
        await asyncio.wait_for(waiting, 30)
        assert c.connected and c.queue_position is None
        assert c.session_id not in (a.session_id, b.session_id)
        assert [(q.position, q.queue_length) for q in told] == [(1, 1)]
        await start(c)
        assert len(await take(c, FIRST)) == FIRST
        assert b.connected and len(await take(b, LATER)) == LATER  # b never noticed
    finally:
        for r in (a, b, c):
            await r.close()


async def test_who_may_join_and_command_a_session(cluster_process: RunnerProcess) -> None:
    """The owner's two keys: the session id joins as a director (every command), the viewer key
    as a viewer (frames and state, no command); a stranger (no key) can neither list, join nor
    command the session."""
    wait_idle(cluster_process)
    url = cluster_process.url
    async with Reactor(url, command_timeout=30) as owner:
        key, view_key = owner.session_id, owner.hello.viewer_session_id
        assert owner.hello.role == "director" and key and view_key and key != view_key
        # /info lists no key (a stranger holding the token reads it too)
        listing = httpx.get(cluster_process.http_url + "/info", timeout=5).text
        assert key not in listing and view_key not in listing
        assert [s["clients"] for s in json.loads(listing)["sessions"]] == [1]
        # a stranger's guesses, near misses included, join nothing and learn nothing
        near = [key[:-1] + ("A" if key[-1] != "A" else "B"), key[1:], key + "x", view_key.swapcase()]
        for guess in ["not-a-session", *near]:
            errors: list[ErrorMessage] = []
            stranger = Reactor(url, session=guess)
            stranger.on("error", errors.append)
            with pytest.raises(ConnectionClosedError) as refused:
                await stranger.connect()
            assert refused.value.code == 4404 and [e.code for e in errors] == ["no_such_session"]
            assert key not in refused.value.reason and key not in errors[0].message

        async with (
            Reactor(url, session=key, command_timeout=30) as director,
            Reactor(url, session=view_key, command_timeout=30) as viewer,
        ):
            assert director.session_id == key and director.hello.role == "director"
            assert director.hello.viewer_session_id == view_key
            # the viewer learns only the viewer key: it cannot become a director
            assert viewer.session_id == view_key and viewer.hello.role == "viewer"
            assert viewer.hello.viewer_session_id is None
            assert health(cluster_process)["sessions"] == 1  # one session, three clients
            commands: list[Callable[[], Awaitable[Any]]] = [
                lambda: viewer.schedule_prompt("a green square moving up on a navy background", 0),
                viewer.start,
                viewer.reset,
            ]
            for command in commands:
                with pytest.raises(CommandError) as refused_command:
                    await command()
                assert refused_command.value.code == "read_only"
            assert (await viewer.get_state()).scheduled_prompts == {}  # it may ask; nothing was scheduled
            await start(owner)
            mine, ours, theirs = await asyncio.gather(
                take(owner, FIRST + LATER), take(director, FIRST + LATER), take(viewer, FIRST + LATER)
            )
            assert [f.index for f in mine] == [f.index for f in theirs] == list(range(FIRST + LATER))
            assert all((x.image == y.image).all() for x, y in zip(mine, theirs))
            assert all((x.image == y.image).all() for x, y in zip(mine, ours))
            assert owner.state.scheduled_prompts == {0: PROMPT}  # the owner's prompt, not the viewer's
            for command in (viewer.pause, viewer.reset):
                with pytest.raises(CommandError) as refused_command:
                    await command()
                assert refused_command.value.code == "read_only"
            assert owner.state.running and not owner.state.paused
            await director.pause()  # a co-director steers
            await owner.wait_for("state", lambda s: s.paused, timeout=10)
            sessions = info(cluster_process)["sessions"]
            assert [(s["clients"], s["viewers"]) for s in sessions] == [(3, 1)]


async def test_killing_a_worker_ends_only_its_session(cluster_process: RunnerProcess) -> None:
    wait_idle(cluster_process)
    url = cluster_process.url
    victim, bystander = Reactor(url, command_timeout=30), reactor_from("127.0.0.2", url, command_timeout=30)
    errors: list[ErrorMessage] = []
    victim.on("error", errors.append)
    try:
        await victim.connect()  # the only session yet: the only busy worker is the victim's
        before = info(cluster_process)["workers"]
        worker = next(w for w in before if w["state"] == "busy")
        await bystander.connect()
        await asyncio.gather(start(victim), start(bystander))
        await asyncio.gather(take(victim, FIRST), take(bystander, FIRST))
        os.kill(worker["pid"], signal.SIGKILL)  # as the OOM killer would

        with pytest.raises(ConnectionClosedError) as closed:
            await take(victim, 10_000, timeout=30)
        assert closed.value.code == 1011 and "worker lost" in closed.value.reason
        assert [e.code for e in errors] == ["worker_lost"]
        assert "session is over" in errors[0].message
        # the other session did not notice
        assert len(await take(bystander, 2 * LATER)) == 2 * LATER and bystander.connected

        # Ray restarts the worker; the cluster serves a new session on it
        async with Reactor(url, command_timeout=30, queue_timeout=120, connect_timeout=60) as fresh:
            assert fresh.session_id not in (victim.session_id, bystander.session_id)
            await start(fresh)
            assert len(await take(fresh, FIRST)) == FIRST
        after = {w["id"]: w for w in info(cluster_process)["workers"]}
        assert after[worker["id"]]["restarts"] == worker["restarts"] + 1
        assert after[worker["id"]]["pid"] != worker["pid"]
        assert health(cluster_process)["workers_ready"] == 2
    finally:
        await victim.close()
        await bystander.close()


async def test_one_address_cannot_hold_every_worker(cluster_process: RunnerProcess) -> None:
    """At most one session per address here (every worker but one): a second session from the
    same address waits, and another address gets the free worker past it."""
    wait_idle(cluster_process)
    url = cluster_process.url
    first = Reactor(url, command_timeout=30)
    second = Reactor(url, command_timeout=30, queue_timeout=60)
    other = reactor_from("127.0.0.2", url, command_timeout=30)
    try:
        await first.connect()
        waiting = asyncio.create_task(second.connect())
        await eventually(lambda: second.queue_position == 1, "the second session of one address waits")
        h = health(cluster_process)
        assert (h["workers_busy"], h["queue_length"]) == (1, 1)  # a worker is free, yet it waits
        await other.connect()  # another address: the free worker, past the waiting client
        assert other.session_id and not waiting.done() and second.queue_position == 1
        assert health(cluster_process)["workers_busy"] == 2
        assert info(cluster_process)["max_sessions_per_address"] == 1
        await first.close()  # its address holds no session now: the waiting client gets one
        await asyncio.wait_for(waiting, 30)
        assert second.session_id not in (first.session_id, other.session_id)
    finally:
        for r in (first, second, other):
            await r.close()


async def test_a_closed_session_frees_its_worker_while_others_wait(cluster_process: RunnerProcess) -> None:
    """A session whose clients all left is not kept for its grace period while a client waits:
    it ends at once ("reclaimed"), not when its grace period runs out ("left")."""
    wait_idle(cluster_process)
    url = cluster_process.url
    before = info(cluster_process)["sessions_ended"]
    a, b = Reactor(url, command_timeout=30), reactor_from("127.0.0.2", url, command_timeout=30)
    c = reactor_from("127.0.0.3", url, command_timeout=30, queue_timeout=60)
    try:
        await asyncio.gather(a.connect(), b.connect())
        waiting = asyncio.create_task(c.connect())
        await eventually(lambda: c.queue_position == 1, "c waits")
        worker = next(w["id"] for w in info(cluster_process)["workers"] if w["state"] == "busy")
        await a.close()
        await asyncio.wait_for(waiting, 30)
        after = info(cluster_process)["sessions_ended"]
        assert after["reclaimed"] == before["reclaimed"] + 1  # ended for c, at once
        assert after["left"] == before["left"]  # not by its grace period
        # a's way back is closed: its session is over, c holds a worker
        rejoin = Reactor(url, session=a.session_id)
        with pytest.raises(ConnectionClosedError) as refused:
            await rejoin.connect()
        assert refused.value.code == 4404
        assert health(cluster_process)["workers_busy"] == 2 and worker in {0, 1}
    finally:
        for r in (a, b, c):
            await r.close()


async def test_wrong_tokens_at_a_worker_port_do_not_block_joins(cluster_process: RunnerProcess) -> None:
    """A worker listens on loopback only (its gateway is on this machine) and counts no failed
    tokens: strangers hammering its port with wrong ones do not lock the gateway out."""
    wait_idle(cluster_process)
    url = cluster_process.url
    async with Reactor(url, command_timeout=30) as owner:
        busy = next(w for w in info(cluster_process)["workers"] if w["state"] == "busy")
        session_ports = []
        for address, port in listening_sockets(busy["pid"]):
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/info", timeout=2, headers={"Host": "127.0.0.1"})
            except httpx.HTTPError:
                continue  # one of Ray's own ports (gRPC)
            if r.status_code == 401 and r.json().get("error") == "unauthorized":
                session_ports.append((address, port))
        assert len(session_ports) == 1, listening_sockets(busy["pid"])
        address, port = session_ports[0]
        assert address == "127.0.0.1"  # not the LAN address
        statuses = [
            httpx.get(
                f"http://127.0.0.1:{port}/info", timeout=5, headers={"Authorization": f"Bearer wrong-{i}"}
            ).status_code
            for i in range(15)
        ]
        assert statuses == [401] * 15  # no 429: nothing to lock the gateway's address out
        async with Reactor(url, session=owner.session_id, command_timeout=30) as joined:
            await start(joined)
            assert len(await take(owner, FIRST)) == FIRST


def test_health_and_info_show_workers_sessions_and_queue(cluster_process: RunnerProcess) -> None:
    wait_idle(cluster_process)
    h = health(cluster_process)
    assert h["status"] == "ok" and h["workers"] == h["workers_ready"] == 2
    assert h["sessions"] == h["queue_length"] == 0
    i = info(cluster_process)
    assert i["cluster"] and i["preset"] == "demo" and i["max_queue"] == 64 and i["grace_period"] == 1.0
    assert i["ray_auth"] == "token"  # Ray's own ports ask for Ray's token (docs/cluster.md)
    assert [w["state"] for w in i["workers"]] == ["free", "free"]
    assert all(w["device"] == "cpu" and w["pid"] for w in i["workers"])


def test_a_reactor_client_gets_its_own_session_and_video_from_a_worker(
    cluster_process: RunnerProcess,
) -> None:
    """Reactor's official Python client (`reactor-sdk`, local mode) against the cluster: its
    `/start_session` gets a session on a worker, the signalling goes through the gateway and the
    video comes over WebRTC from the worker (on the machine's non-loopback address: libwebrtc
    ignores loopback candidates); a second `/start_session` of the same address is refused."""
    pytest.importorskip("aiortc", reason="the webrtc extra is not installed")
    pytest.importorskip("reactor_sdk", reason="reactor-sdk==1.13.0 (dev extra) is not installed")
    eventually_sync(lambda: health(cluster_process)["workers_busy"] == 0, "the earlier sessions ended")
    done = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "reactor_sdk_client.py"), "cluster", cluster_process.http_url],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stderr[-4000:]}\ncluster:\n{cluster_process.stderr[-4000:]}"
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["connect_s"] < 15 and len(r["session_id"]) == 16  # a director key, not a label
    assert "reply" in r["start"] and "reply" in r["state"], (r["start"], r["state"])
    assert r["state"]["reply"]["data"]["running"] is True
    assert len(r["frames"]) >= 24 and r["frames"][0][2] == [64, 64, 3]
    assert [c for _, c, _ in r["frames"][:20]].count("red") >= 18
    assert "error" in r["second"] and "503" in r["second"]["error"], r["second"]
    assert r["session_id"] not in json.dumps(info(cluster_process))
    eventually_sync(lambda: health(cluster_process)["workers_busy"] == 0, "stop_session ended the session")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is `pid` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            out.append((int(entry.name), command))
    return out


def test_rays_own_ports_refuse_a_program_without_rays_token(cluster_process: RunnerProcess) -> None:
    """The cluster's Ray (its GCS listens on every interface) runs with Ray's token
    authentication: a gRPC call without the token is refused (with RAY_AUTH_MODE=disabled the same
    call is answered: checked by hand, `ray[serve]>=2.60`)."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    gcs = [pid for pid, command in children(cluster_process.pid) if "gcs_server" in command]
    assert len(gcs) == 1, children(cluster_process.pid)
    ports = {port for _, port in listening_sockets(gcs[0])}
    assert ports
    refused = []
    for port in ports:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
            with pytest.raises(grpc.RpcError) as call:
                stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=10)
            refused.append(call.value.code())
    assert refused == [grpc.StatusCode.UNAUTHENTICATED] * len(ports)
    assert info(cluster_process)["ray_auth"] == "token"


#: Runs the CLI in a fresh interpreter and says whether it got as far as importing Ray.
_CLI_THEN_RAY = (
    "import sys; from longlive_runner.cli import main; code = main(sys.argv[1:]); "
    "print('ray imported:', 'ray' in sys.modules, file=sys.stderr); sys.exit(code)"
)


def test_refuses_a_public_address_without_a_token_before_starting_ray() -> None:
    # "Before starting Ray" is measured, not timed: the refusal comes before Ray is even imported.
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_THEN_RAY, "cluster", "--host", "0.0.0.0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "LONGLIVE_TOKEN"},
    )
    assert proc.returncode == 2 and "without a token" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "ray imported: False" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_THEN_RAY, "cluster", "--model", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
    assert "ray imported: False" in proc.stderr


def test_the_live_page_gets_a_session_shares_it_and_waits_in_the_queue(
    cluster_process: RunnerProcess,
) -> None:
    from _browser import launch_chromium

    with launch_chromium() as browser:
        wait_idle(cluster_process)
        base = cluster_process.http_url
        context = browser.new_context(bypass_csp=True)
        errors: list[str] = []
        stack = contextlib.ExitStack()  # the other address's connection

        def open_page(url: str) -> Any:
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            return page

        try:
            owner = open_page(base + "/")
            owner.wait_for_selector('#status[data-status="connected"]')
            owner.wait_for_function("location.search.includes('session=')")  # the address to share
            session = parse_qs(urlsplit(owner.url).query)["session"][0]
            assert session in owner.text_content("#model-info")
            viewer = open_page(owner.url)  # the shared address joins the same session
            viewer.wait_for_selector('#status[data-status="connected"]')
            assert viewer.url == owner.url
            sessions = info(cluster_process)["sessions"]
            assert [(s["clients"], s["viewers"]) for s in sessions] == [(2, 0)]
            # the owner's page offers a link that only watches
            watch = open_page(owner.get_attribute("#viewer-link", "href") or "")
            watch.wait_for_selector('#status[data-status="connected"]')
            assert "view only" in watch.text_content("#model-info")
            assert session not in watch.url and watch.query_selector("#viewer-link") is None
            assert [s["viewers"] for s in info(cluster_process)["sessions"]] == [1]
            watch.close()

            # another address holds the second worker (this one may hold one session only)
            where = urlsplit(cluster_process.url)
            sock = socket.create_connection((where.hostname, where.port), source_address=("127.0.0.2", 0))
            other = stack.enter_context(sync_connect(cluster_process.url, sock=sock))
            assert json.loads(other.recv(timeout=30))["data"]["session_id"]
            waiting = open_page(base + "/")  # every worker busy (and this address's one): the queue
            waiting.wait_for_selector('#status[data-status="queued"]')
            assert "1 of 1" in waiting.text_content("#status")
            assert "Every worker is busy" in waiting.text_content("#connection-banner")
            owner.close()
            viewer.close()  # the session ends (at once: a page waits): the waiting page gets it
            waiting.wait_for_selector('#status[data-status="connected"]')
            assert session not in waiting.url and "session=" in waiting.url
            assert not errors, errors
        finally:
            context.close()
            stack.close()
