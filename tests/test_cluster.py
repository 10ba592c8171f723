"""`longlive-runner cluster` on a real local Ray cluster: 2 CPU workers with the demo model.

One cluster for the whole test session (tests/_cluster_process.py; skipped loudly without Ray,
a failure under LONGLIVE_REQUIRE_CLUSTER=1 as in CI). Each test waits until the sessions of the
tests before it ended (the cluster's grace period is 1 s). The shared client suite also runs
against this endpoint (tests/test_client_e2e.py, "cluster").
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from _cluster_process import health, info, wait_idle
from _frames import take
from longlive import ConnectionClosedError, ErrorMessage, Queued, Reactor
from serve_process import RunnerProcess

pytestmark = pytest.mark.slow

PROMPT = "a red circle moving right on a black background"
FIRST, LATER = 9, 12


async def start(reactor: Reactor, prompt: str = PROMPT) -> None:
    await reactor.schedule_prompt(prompt, 0)
    await reactor.start()


async def test_three_clients_two_sessions_in_parallel_the_third_queued(
    cluster_process: RunnerProcess,
) -> None:
    wait_idle(cluster_process)
    url = cluster_process.url
    a, b = Reactor(url, command_timeout=30), Reactor(url, command_timeout=30)
    c = Reactor(url, command_timeout=30, queue_timeout=60)
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

        # Both sessions generate at once: blocks of each arrive while the other's do.
        arrivals: dict[str, list[float]] = {"a": [], "b": []}
        a.on_frame(lambda f: arrivals["a"].append(time.monotonic()))
        b.on_frame(lambda f: arrivals["b"].append(time.monotonic()))
        await asyncio.gather(start(a, PROMPT), start(b, "a blue square moving left on a gray background"))
        got_a, got_b = await asyncio.gather(
            take(a, FIRST + 3 * LATER, timeout=60), take(b, FIRST + 3 * LATER, timeout=60)
        )
        assert [f.index for f in got_a] == [f.index for f in got_b] == list(range(FIRST + 3 * LATER))
        assert any((x.image != y.image).any() for x, y in zip(got_a, got_b))  # two different videos
        (a0, a1), (b0, b1) = (arrivals[k][: FIRST + 3 * LATER][:: FIRST + 3 * LATER - 1] for k in "ab")
        assert max(a0, b0) < min(a1, b1), "the two sessions' frames came one after the other"
        workers = info(cluster_process)["workers"]
        assert {w["state"] for w in workers} == {"busy"}
        assert {w["session_id"] for w in workers} == {a.session_id, b.session_id}
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


async def test_a_viewer_joins_by_id_and_sees_the_same_frames(cluster_process: RunnerProcess) -> None:
    wait_idle(cluster_process)
    url = cluster_process.url
    async with Reactor(url, command_timeout=30) as owner:
        async with Reactor(url, session=owner.session_id, command_timeout=30) as viewer:
            assert viewer.session_id == owner.session_id
            assert health(cluster_process)["sessions"] == 1  # one session, two clients
            await start(owner)
            mine, theirs = await asyncio.gather(take(owner, FIRST + LATER), take(viewer, FIRST + LATER))
            assert [f.index for f in mine] == [f.index for f in theirs] == list(range(FIRST + LATER))
            assert all((x.image == y.image).all() for x, y in zip(mine, theirs))
            await viewer.pause()  # a co-director
            await owner.wait_for("state", lambda s: s.paused, timeout=10)
    errors: list[ErrorMessage] = []
    stranger = Reactor(url, session="not-a-session")
    stranger.on("error", errors.append)
    with pytest.raises(ConnectionClosedError) as refused:
        await stranger.connect()
    assert refused.value.code == 4404 and [e.code for e in errors] == ["no_such_session"]


async def test_killing_a_worker_ends_only_its_session(cluster_process: RunnerProcess) -> None:
    wait_idle(cluster_process)
    url = cluster_process.url
    victim, bystander = Reactor(url, command_timeout=30), Reactor(url, command_timeout=30)
    errors: list[ErrorMessage] = []
    victim.on("error", errors.append)
    try:
        await asyncio.gather(victim.connect(), bystander.connect())
        await asyncio.gather(start(victim), start(bystander))
        await asyncio.gather(take(victim, FIRST), take(bystander, FIRST))
        before = info(cluster_process)["workers"]
        worker = next(w for w in before if w["session_id"] == victim.session_id)
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


def test_health_and_info_show_workers_sessions_and_queue(cluster_process: RunnerProcess) -> None:
    wait_idle(cluster_process)
    h = health(cluster_process)
    assert h["status"] == "ok" and h["workers"] == h["workers_ready"] == 2
    assert h["sessions"] == h["queue_length"] == 0
    i = info(cluster_process)
    assert i["cluster"] and i["preset"] == "demo" and i["max_queue"] == 64 and i["grace_period"] == 1.0
    assert [w["state"] for w in i["workers"]] == ["free", "free"]
    assert all(w["device"] == "cpu" and w["pid"] for w in i["workers"])


def test_refuses_a_public_address_without_a_token_before_starting_ray() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "longlive_runner", "cluster", "--host", "0.0.0.0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "LONGLIVE_TOKEN"},
    )
    assert proc.returncode == 2 and "without a token" in proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 30
    proc = subprocess.run(
        [sys.executable, "-m", "longlive_runner", "cluster", "--model", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr


def test_the_live_page_gets_a_session_shares_it_and_waits_in_the_queue(
    cluster_process: RunnerProcess,
) -> None:
    from _browser import launch_chromium

    with launch_chromium() as browser:
        wait_idle(cluster_process)
        base = cluster_process.http_url
        context = browser.new_context(bypass_csp=True)
        errors: list[str] = []

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
            assert [(s["session_id"], s["clients"]) for s in sessions] == [(session, 2)]

            other = open_page(base + "/")  # the second worker
            other.wait_for_selector('#status[data-status="connected"]')
            waiting = open_page(base + "/")  # every worker busy: the queue
            waiting.wait_for_selector('#status[data-status="queued"]')
            assert "1 of 1" in waiting.text_content("#status")
            assert "Every worker is busy" in waiting.text_content("#connection-banner")
            owner.close()
            viewer.close()  # the session ends after the grace period: the waiting page gets it
            waiting.wait_for_selector('#status[data-status="connected"]')
            assert session not in waiting.url and "session=" in waiting.url
            assert not errors, errors
        finally:
            context.close()
