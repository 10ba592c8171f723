"""Reactor's official JS SDK (`@reactor-team/js-sdk` 2.9.0, the current npm release) drives
`longlive-runner serve` in Chromium (Playwright), changing only its URL (local mode).

That release posts its offer to the flat `.../transport/webrtc/sdp_params` route, opens only the
`data` channel, never sends `resume_track` and speaks the v0 JSON framing: refusals reach it as
`command_error` messages. The SDK is installed pinned from npm (tests/reactor_js/package.json)
into tests/reactor_js/node_modules (ignored by git) and bundled with esbuild with the page's
scenarios (tests/reactor_js/entry.js); Chromium runs in the network namespace (tests/_netns.py).
Without npm, or Chromium, the test is skipped (LONGLIVE_REQUIRE_BROWSER=1: a failure).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _browser import REQUIRE_ENV as REQUIRE_BROWSER
from _browser import find_chromium
from _netns import Namespaces, Serve, make_netns, run_serve

pytest.importorskip("aiortc", reason="the webrtc extra is not installed")

HERE = Path(__file__).resolve().parent
JS = HERE / "reactor_js"
BLUE = "a blue square moving down on a black background"


def _missing(why: str) -> None:
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{REQUIRE_BROWSER}=1 but {why}")
    pytest.skip(f"REACTOR JS TEST NOT RUN: {why}")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("npm") is None:
        _missing("npm is not installed")
    sdk = JS / "node_modules" / "@reactor-team" / "js-sdk" / "package.json"
    esbuild = JS / "node_modules" / ".bin" / "esbuild"
    if not sdk.exists() or json.loads(sdk.read_text())["version"] != "2.9.0" or not esbuild.exists():
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"],
            cwd=JS, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    out = tmp_path_factory.mktemp("reactor_js") / "bundle.js"
    subprocess.run(
        [str(esbuild), "entry.js", "--bundle", "--format=iife", "--platform=browser", f"--outfile={out}", "--log-level=warning"],
        cwd=JS, check=True, timeout=120,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def netns() -> Iterator[Namespaces]:
    yield from make_netns()


@pytest.fixture(scope="module")
def serve(netns: Namespaces) -> Iterator[Serve]:
    yield from run_serve(netns)


def test_js_sdk_drives_serve_over_webrtc(netns: Namespaces, serve: Serve, bundle: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        _missing("no Chromium")
    cmd = [
        *netns.exec(netns.a),
        sys.executable,
        str(HERE / "reactor_js_client.py"),
        "main",
        serve.url,
        str(bundle),
    ]
    env = {**os.environ, "LONGLIVE_CHROMIUM": str(chromium)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"{done.stderr[-4000:]}\nserve:\n{serve.stderr[-3000:]}"
    r: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    marks, frames = r["marks"], r["frames"]
    assert r["status"] == "ready" and r["connect_s"] < 15
    assert r["errors"] == []
    messages = [m["msg"] for m in r["messages"]]

    playing = [f for f in frames if marks["start"] <= f[0] <= marks["pause"]]
    assert playing, serve.stderr[-3000:]
    first = playing[0][0]
    assert first - marks["start"] < 4.0  # time to first frame (the browser's jitter buffer included)
    assert playing[-1][0] - first >= 3.0
    steady = [f for f in playing if f[0] >= first + 0.5]
    fps = (len(steady) - 1) / (steady[-1][0] - steady[0][0])
    assert len(steady) >= 40 and fps <= 19.0, (len(steady), fps)  # paced at 16 fps, never faster
    assert playing[0][2] == [64, 64]
    colours = [f[1] for f in frames if marks["start"] <= f[0] <= marks["paused_from"]]
    assert colours[:10].count("red") >= 9, colours[:10]
    first_blue = colours.index("blue")
    assert colours[first_blue + 3 :].count("red") == 0

    # v0: no replies; a refusal is a command_error message from the model
    errors = [m["data"] for m in messages if m.get("type") == "command_error"]
    assert errors and errors[0]["command"] == "resume" and errors[0]["code"] == "not_paused"
    progress = [m["data"]["current_start_frame"] for m in messages if m.get("type") == "progress"]
    assert progress[:3] == [0, 3, 6]
    assert any(
        m.get("type") == "event"
        and m["data"].get("event") == "prompt_switched"
        and m["data"]["new_prompt"] == BLUE
        for m in messages
    )
    assert any(
        m.get("type") == "state" and m["data"]["current_frame"] == 0 and m["data"]["running"] is False
        for m in messages
    )  # fmt: skip  (after reset; get_state answers v0 with a state message)
    # pause stops the video, resume restarts it
    assert not [f for f in frames if marks["paused_from"] <= f[0] <= marks["paused_to"]]
    assert len([f for f in frames if marks["paused_to"] < f[0] <= marks["resumed_to"]]) >= 5
    # reconnect (disconnect(true) + reconnect(), the flat route again): video again
    assert r["reconnected_status"] == "ready"
    assert len([f for f in frames if marks["reconnect"] < f[0] <= marks["end"]]) >= 10
