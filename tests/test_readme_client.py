"""The README's "client in 10 lines", run as a new user runs it, against one `serve` process.

`longlive-runner serve --model demo` with its defaults (real-time pace, 30 s grace period): the
snippet, taken from README.md as it stands, runs twice in a row, the second time while another
client watches the first run's paused video; both runs must succeed and get their 10 s of
frames. And when the script ends, the runner stops generating: no block is made for no one.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _runner_process import RunnerProcess, start_runner
from longlive import Reactor

README = Path(__file__).resolve().parents[1] / "README.md"
DEFAULT_URL = "ws://127.0.0.1:8765"

# Counts the frames the snippet's `reactor.frames()` yields, and prints them at exit.
PRELUDE = """
import atexit, json, longlive
_seen = []
_frames = longlive.Reactor.frames
async def _counting(self):
    async for frame in _frames(self):
        _seen.append([frame.generation, frame.index])
        yield frame
longlive.Reactor.frames = _counting
atexit.register(lambda: print("FRAMES " + json.dumps(_seen)))
"""


def readme_client_snippet() -> str:
    text = README.read_text()
    section = text.split("## The client in 10 lines", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README lost its client snippet"
    code = match.group(1)
    assert DEFAULT_URL in code and "asyncio.run(main())" in code
    return code


@pytest.fixture(scope="module")
def served() -> Iterator[RunnerProcess]:
    with start_runner(model="demo") as proc:  # serve's defaults otherwise
        yield proc


def info(runner: RunnerProcess) -> dict:
    return httpx.get(runner.http_url + "/info", timeout=10).json()


def run_snippet(runner: RunnerProcess) -> list[list[int]]:
    code = readme_client_snippet().replace(DEFAULT_URL, runner.url)
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    # A newcomer sees it run: a line per second of video, from the first frame on.
    shown = [ln for ln in proc.stdout.splitlines() if ln.startswith("frame ")]
    assert shown[:2] == ["frame 0: 0 s, 64x64", "frame 16: 1 s, 64x64"], proc.stdout
    assert shown[-1] == "frame 160: 10 s, 64x64" and len(shown) == 11, proc.stdout
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("FRAMES ")][-1]
    seen: list[list[int]] = json.loads(line.removeprefix("FRAMES "))
    return seen


def check_frames(seen: list[list[int]]) -> int:
    """The snippet saw one video from its start to 10 s, every frame; its generation."""
    generations = {g for g, _ in seen}
    assert len(generations) == 1, generations
    indices = [i for _, i in seen]
    assert indices == list(range(len(indices))), "frames missing or out of order"
    assert len(indices) == 161  # frames 0..160: frame 160 is at 10 s, where it stops
    return generations.pop()


def wait_until_settled(runner: RunnerProcess, timeout: float = 30) -> dict:
    """Wait until no block is being generated; the last /info."""
    deadline = time.monotonic() + timeout
    while True:
        now = info(runner)
        if not now["generating"] or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def test_the_readme_client_runs_twice_in_a_row_and_the_runner_rests_between(served: RunnerProcess) -> None:
    first = check_frames(run_snippet(served))

    # The script ended: its client left, the video is paused at once (not after the grace period).
    after = info(served)
    assert after["clients"] == 0 and after["phase"] == "paused", after
    settled = wait_until_settled(served)
    assert settled["phase"] == "paused" and settled["generation"] == first

    # The same script again, at once, while another client watches that paused video (within the
    # grace period): it starts its own, and the watcher is told the paused one was reset.
    async def again_beside_a_paused_video() -> int:
        async with Reactor(served.url) as other:
            assert other.state.running and other.state.paused and other.generation == first
            # Nothing was generated for no one: the next client finds the video where it settled.
            assert other.state.current_start_frame == settled["current_start_frame"]
            assert info(served)["blocks_generated"] == settled["blocks_generated"]
            ended = asyncio.get_running_loop().create_future()
            other.on_generation_finished(lambda msg: ended.done() or ended.set_result(msg.reason))
            second = check_frames(await asyncio.to_thread(run_snippet, served))
            assert await asyncio.wait_for(ended, 10) == "reset"
            assert other.generation == second
            return second

    assert asyncio.run(again_beside_a_paused_video()) == first + 1
