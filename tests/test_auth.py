"""Access control of `longlive-runner serve` (docs/protocol.md, section 1.3) and the SDK's `token=`.

One real runner for the module, started with `LONGLIVE_TOKEN` set and `--log-level debug`, so the
last test can check that the token never reached its log even at the chattiest level.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from _runner_process import RunnerProcess, start_runner
from longlive import ConnectError, ConnectionClosedError, Reactor
from longlive_runner.cli import main
from longlive_runner.serving import access as access_mod
from longlive_runner.serving.access import AccessConfig, AccessPolicy, RequestFacts
from longlive_runner.serving.listen import is_loopback_host, resolve_token
from longlive_runner.serving.logs import RedactingFormatter

TOKEN = "ll-" + secrets.token_urlsafe(24)
WRONG = "ll-" + secrets.token_urlsafe(24)
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def secured() -> Iterator[RunnerProcess]:
    with start_runner("--log-level", "debug", env={"LONGLIVE_TOKEN": TOKEN}) as runner:
        yield runner


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LONGLIVE_TOKEN", raising=False)


# --- starting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_token", [None, ""])
def test_a_non_loopback_bind_without_a_token_is_refused_at_start(
    env_token: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `python -m longlive_runner` is `sys.exit(main())`: main's return value is the exit status.
    if env_token is not None:
        monkeypatch.setenv("LONGLIVE_TOKEN", env_token)  # set but empty: no token
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        assert main(["serve", "--model", "tiny", "--host", host, "--port", "0"]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert "without a token" in lines[0] and "LONGLIVE_TOKEN" in lines[0] and host in lines[0]


def test_loopback_detection_and_token_sources() -> None:
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "", "192.168.1.20", "10.0.0.1", "2001:db8::1"):
        assert not is_loopback_host(host), host
    assert resolve_token("cli", {"LONGLIVE_TOKEN": "env"}) == "cli"
    assert resolve_token(None, {"LONGLIVE_TOKEN": "env"}) == "env"
    assert resolve_token(None, {"LONGLIVE_TOKEN": ""}) is None and resolve_token(None, {}) is None


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = access_mod.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access_mod.hmac, "compare_digest", spy)
    policy = AccessPolicy(AccessConfig(token=TOKEN))

    def authorized(path: str = "/", **headers: str) -> bool:
        facts = RequestFacts(
            "GET", path, host=("127.0.0.1:8765",), authorization=tuple(headers.values()), peer="192.0.2.1"
        )
        return policy.check(facts, now=0.0) is None

    assert authorized(Authorization=f"Bearer {TOKEN}")
    assert authorized(Authorization=f"bearer   {TOKEN} ")
    assert authorized(f"/?token={TOKEN}")
    assert not authorized(Authorization=f"Bearer {WRONG}")
    assert not authorized(Authorization=f"Basic {TOKEN}")
    assert not authorized(f"/?token={TOKEN[:-1]}")
    assert not authorized()
    assert len(calls) == 5 and all(b == TOKEN.encode() for _, b in calls)


def test_the_log_formatter_masks_credentials() -> None:
    fmt = RedactingFormatter("%(message)s", secrets=(TOKEN,))
    for text in (
        f"< Authorization: Bearer {WRONG}",
        f"< GET /?a=1&token={WRONG} HTTP/1.1",
        f"the token is {TOKEN}",
    ):
        out = fmt.redact(text)
        assert TOKEN not in out and WRONG not in out and "***" in out


# --- HTTP ----------------------------------------------------------------------------------------
def test_health_is_open_info_needs_the_token(secured: RunnerProcess) -> None:
    base = secured.http_url
    health = httpx.get(base + "/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}

    for headers in ({}, {"Authorization": f"Bearer {WRONG}"}, {"Authorization": TOKEN}):
        info = httpx.get(base + "/info", headers=headers, timeout=10)
        assert info.status_code == 401 and info.json()["error"] == "unauthorized"
        assert info.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in info.text
    ok = httpx.get(base + "/info", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["preset"] == "tiny"
    assert httpx.get(base + "/info", params={"token": TOKEN}, timeout=10).status_code == 200


# --- WebSocket -----------------------------------------------------------------------------------
async def test_the_handshake_needs_the_token(secured: RunnerProcess) -> None:
    for headers in (None, {"Authorization": f"Bearer {WRONG}"}):
        with pytest.raises(InvalidStatus) as info:
            await connect(secured.url, additional_headers=headers, open_timeout=TIMEOUT)
        assert info.value.response.status_code == 401
    async with connect(
        secured.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, open_timeout=TIMEOUT
    ) as ws:
        assert '"hello"' in await ws.recv()
    async with connect(f"{secured.url}/?token={TOKEN}", open_timeout=TIMEOUT) as ws:  # browsers
        assert '"hello"' in await ws.recv()


async def test_the_sdk_sends_the_token(secured: RunnerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    refused = Reactor(secured.url, connect_timeout=TIMEOUT)
    with pytest.raises(ConnectError, match="401.*requires a token.*LONGLIVE_TOKEN") as refusal:
        await refused.connect()
    assert refusal.value.status == 401 and isinstance(refusal.value, ConnectionClosedError)
    assert refused.status == "disconnected"
    wrong = Reactor(secured.url, token=WRONG, connect_timeout=TIMEOUT)
    with pytest.raises(ConnectionClosedError, match="401.*token was refused") as info:
        await wrong.connect()
    assert WRONG not in str(info.value) and WRONG not in repr(wrong)

    async with Reactor(secured.url, token=TOKEN, connect_timeout=TIMEOUT) as reactor:
        await reactor.reset()
        scheduled = await reactor.schedule_prompt("a red circle", 0)
        assert scheduled.timestamp == 0 and reactor.state.scheduled_prompts == {0: "a red circle"}

    monkeypatch.setenv("LONGLIVE_TOKEN", TOKEN)  # the SDK reads it when no token= is given
    async with Reactor(secured.url, connect_timeout=TIMEOUT) as reactor:
        assert (await reactor.get_state()).scheduled_prompts == {0: "a red circle"}
        await reactor.reset()


# Keep last: it reads the log of everything above.
def test_the_token_never_reaches_the_log(secured: RunnerProcess) -> None:
    httpx.get(secured.http_url + "/info", params={"token": TOKEN}, timeout=10)
    assert secured.stop() == 0
    log = secured.stderr
    assert "DEBUG" in log and "token required" in log  # debug logging was really on
    assert "***" in log  # credentials were seen, and masked
    assert TOKEN not in log and WRONG not in log
    assert "Traceback" not in log
