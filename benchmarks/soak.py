"""Soak test: two clients drive one runner for a long time, at random; nothing may leak or wedge.

    python benchmarks/soak.py                        # tiny preset, 1000 blocks, a `serve` subprocess
    python benchmarks/soak.py --blocks 200 --seed 3
    python benchmarks/soak.py --url ws://127.0.0.1:8765   # an already running runner (no memory figures)

A real `longlive-runner serve` process is started (CPU, `--threads` torch threads) and two SDK
clients connect to it. Between blocks, at random, one of them schedules prompts (ahead, in the
decided past: re-keyed, and too long for the text encoder: truncated with a warning), removes
one, pauses and (from either client) resumes, resets and restarts, asks for the state, or
reconnects. Both consume every frame and check the order: within a generation video frames come
one after the other, and a gap is allowed only where the runner or the client said it dropped
frames (or across a reconnect).

It prints the blocks generated, the messages exchanged, the errors (unexpected ones must be 0:
an `error` message, a refusal the client did not provoke, a dropped connection, a timeout, frames
out of order) and the runner's peak memory (VmHWM) after the warm-up and at the end, which must
agree within 5%. Exit status 0 when both hold, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from longlive import CommandError, ConnectionClosedError, LongliveError, Reactor

# serve_process.py (a real serve process on a free port) lives with the tests, not in the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_process import RunnerProcess, start_runner  # noqa: E402

PROMPTS = [
    "a red fox in the snow",
    "a blue whale in the sea",
    "a city street at night, light rain",
    "a forest with light through the trees",
    "a cat walking on a wall",
    "a car on a mountain road, camera slowly following",
]
LONG_PROMPT = " ".join(["a slow camera over a sea of light"] * 40)  # past the tiny encoder's 64 tokens
# Refusals the driver provokes on purpose, or that two clients racing each other may get.
EXPECTED_REFUSALS = frozenset(
    {
        "already_applied",
        "no_such_prompt",
        "not_paused",
        "already_paused",
        "not_running",
        "already_running",
        "finished",
        "no_initial_prompt",
    }
)


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def mib(kib: int) -> float:
    return kib / 1024


# ----------------------------------------------------------------------------------------------
# The runner process
# ----------------------------------------------------------------------------------------------
def start_soak_runner(model: str, threads: int) -> RunnerProcess:
    env = {"OMP_NUM_THREADS": str(threads)}
    # --pace fast: the soak keeps the runner generating flat out (serve's default paces to real time).
    return start_runner(
        "--device", "cpu", "--grace-period", "off", "--pace", "fast", model=model, timeout=300, env=env
    )


# ----------------------------------------------------------------------------------------------
# Clients
# ----------------------------------------------------------------------------------------------
@dataclass
class Stats:
    sent: int = 0
    texts: int = 0
    frames: int = 0
    unexpected: list[str] = field(default_factory=list)
    refusals: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    gaps_explained: int = 0

    def fail(self, what: str) -> None:
        self.unexpected.append(what)
        print(f"UNEXPECTED: {what}", flush=True)


class Client:
    """One SDK client that consumes and checks every frame."""

    def __init__(self, name: str, url: str, stats: Stats) -> None:
        self.name, self.stats = name, stats
        self.reactor = Reactor(url, command_timeout=60.0, max_buffered_frames=1024)
        self.reactor.on("*", self._on_text)
        self.last: tuple[int, int] | None = None  # (generation, video frame) of the last frame
        self.drops_seen = 0
        self.reconnected = False
        self.task: asyncio.Task[None] | None = None

    def _on_text(self, msg: Any) -> None:
        self.stats.texts += 1
        if msg.type == "error":
            self.stats.fail(f"{self.name}: runner error: {msg.code}: {msg.message}")
        elif msg.type == "command_error" and getattr(msg, "id", None) is None:
            self.stats.fail(f"{self.name}: broadcast refusal: {msg.code}: {msg.reason}")

    async def start(self) -> None:
        await self.reactor.connect()
        self.task = asyncio.create_task(self._consume(), name=f"frames-{self.name}")

    async def _consume(self) -> None:
        try:
            async for frame in self.reactor.frames():
                self.stats.frames += 1
                self._check(frame.generation, frame.index)
        except ConnectionClosedError as exc:
            self.stats.fail(f"{self.name}: frames() ended: {exc}")

    def _check(self, generation: int, index: int) -> None:
        drops = self.reactor.frames_dropped + self.reactor.frames_dropped_by_runner
        last, self.last = self.last, (generation, index)
        explained = drops > self.drops_seen or self.reconnected
        self.drops_seen, self.reconnected = drops, False
        if last is None or generation > last[0]:
            if index != 0 and not explained and last is not None:
                self.stats.fail(f"{self.name}: generation {generation} began at frame {index}")
            return
        if generation < last[0]:
            self.stats.fail(f"{self.name}: a frame of old generation {generation} after {last[0]}")
        elif index <= last[1]:
            self.stats.fail(f"{self.name}: frame {index} after {last[1]} (generation {generation})")
        elif index != last[1] + 1:
            if explained:
                self.stats.gaps_explained += 1
            else:
                self.stats.fail(f"{self.name}: frames {last[1] + 1}..{index - 1} missing, none dropped")

    async def command(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.stats.sent += 1
        try:
            result = await coro_fn(*args, **kwargs)
        except CommandError as exc:
            self.stats.refusals[exc.code] += 1
            if exc.code not in EXPECTED_REFUSALS:
                self.stats.fail(f"{self.name}: refused {exc.command}: {exc.code}: {exc.reason}")
            return None
        except LongliveError as exc:
            self.stats.fail(f"{self.name}: {type(exc).__name__}: {exc}")
            return None
        for warning in getattr(result, "warnings", ()):
            self.stats.warnings[warning.code] += 1
        return result

    async def reconnect(self) -> None:
        self.stats.sent += 1
        self.reconnected = True
        await self.reactor.reconnect()

    async def close(self) -> None:
        await self.reactor.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)


# ----------------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------------
async def ensure_running(c: Client, rng: random.Random) -> None:
    state = c.reactor.state
    if state.running:
        return
    if state.finished is not None:
        await c.command(c.reactor.reset)
    if 0 not in c.reactor.state.scheduled_prompts:
        await c.command(c.reactor.schedule_prompt, rng.choice(PROMPTS), 0)
    await c.command(c.reactor.start, seed=rng.randrange(2**31))


async def act(clients: list[Client], rng: random.Random, stats: Stats) -> None:
    c = rng.choice(clients)
    r = c.reactor
    await ensure_running(c, rng)
    csf = r.current_start_frame
    action = rng.choices(
        [
            "schedule",
            "schedule_past",
            "long_prompt",
            "remove",
            "pause_resume",
            "reset",
            "get_state",
            "reconnect",
        ],
        weights=[30, 8, 3, 8, 12, 3, 10, 2],
    )[0]
    stats.actions[action] += 1
    if action == "schedule":
        await c.command(
            r.schedule_prompt, rng.choice(PROMPTS), csf + 3 * rng.randint(1, 8) + rng.randint(0, 2)
        )
    elif action == "schedule_past":
        await c.command(r.schedule_prompt, rng.choice(PROMPTS), rng.randint(0, max(csf, 0)))
    elif action == "long_prompt":
        await c.command(r.schedule_prompt, LONG_PROMPT, csf + 3 * rng.randint(1, 4))
    elif action == "remove":
        keys = sorted(r.state.scheduled_prompts)
        if keys:
            await c.command(r.remove_prompt, rng.choice(keys))
    elif action == "pause_resume":
        await c.command(r.pause)
        await asyncio.sleep(rng.uniform(0.05, 1.0))
        other = rng.choice(clients)
        await other.command(other.reactor.resume)
    elif action == "reset":
        await c.command(r.reset)
        await ensure_running(c, rng)
    elif action == "get_state":
        await c.command(r.get_state)
    elif action == "reconnect":
        await c.reconnect()


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    runner = None if args.url else start_soak_runner(args.model, args.threads)
    url = args.url or runner.url  # type: ignore[union-attr]
    http = url.replace("ws://", "http://", 1)
    stats = Stats()
    clients = [Client(name, url, stats) for name in ("a", "b")]
    started = time.monotonic()
    warm_hwm = warm_rss = None
    warm_at = max(args.blocks // 10, 20)
    last_report = blocks = 0
    end_hwm = end_rss = None

    def info() -> dict[str, Any]:
        return httpx.get(http + "/info", timeout=30).json()

    try:
        for c in clients:
            await c.start()
        await clients[0].command(clients[0].reactor.reset)
        blocks0 = info()["blocks_generated"]
        while True:
            await act(clients, rng, stats)
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            blocks = info()["blocks_generated"] - blocks0
            if runner is not None and warm_hwm is None and blocks >= warm_at:
                warm_hwm, warm_rss = _status_kib(runner.pid, "VmHWM"), _status_kib(runner.pid, "VmRSS")
            if blocks - last_report >= args.report_every or blocks >= args.blocks:
                last_report = blocks
                mem = (
                    f", runner RSS {mib(_status_kib(runner.pid, 'VmRSS')):.1f} MiB "
                    f"(peak {mib(_status_kib(runner.pid, 'VmHWM')):.1f})"
                    if runner is not None
                    else ""
                )
                print(
                    f"[{time.monotonic() - started:7.1f} s] {blocks} blocks, {stats.sent} sent, "
                    f"{stats.texts} texts, {stats.frames} frames, {len(stats.unexpected)} unexpected{mem}",
                    flush=True,
                )
            if blocks >= args.blocks:
                break
        for c in clients:
            await c.command(c.reactor.get_state)
        if runner is not None:
            end_hwm, end_rss = _status_kib(runner.pid, "VmHWM"), _status_kib(runner.pid, "VmRSS")
    finally:
        for c in clients:
            try:
                await c.close()
            except Exception as exc:  # report, then go on closing
                stats.fail(f"{c.name}: close failed: {exc!r}")
        status = runner.stop() if runner is not None else 0
    elapsed = time.monotonic() - started
    if runner is not None and "Traceback" in runner.stderr:
        stats.fail("the runner logged a traceback:\n" + runner.stderr[-3000:])
    if status not in (0, None):
        stats.fail(f"the runner exited with status {status}")

    print()
    print(f"blocks generated:   {blocks} in {elapsed:.0f} s ({elapsed / max(blocks, 1):.2f} s per block)")
    print(
        f"messages exchanged: {stats.sent + stats.texts + stats.frames} "
        f"({stats.sent} commands sent; {stats.texts} text messages and {stats.frames} frames received)"
    )
    print(f"actions:            {dict(sorted(stats.actions.items()))}")
    print(f"expected refusals:  {dict(sorted(stats.refusals.items()))}; warnings: {dict(stats.warnings)}")
    print(f"gaps explained by drops or reconnects: {stats.gaps_explained}")
    print(f"errors:             {len(stats.unexpected)} unexpected")
    ok = not stats.unexpected
    if runner is not None and warm_hwm is not None and end_hwm is not None:
        growth = (end_hwm - warm_hwm) / warm_hwm
        print(
            f"runner peak memory: {mib(warm_hwm):.1f} MiB after {warm_at} blocks, {mib(end_hwm):.1f} MiB at the end "
            f"({growth:+.1%}); RSS {mib(warm_rss or 0):.1f} -> {mib(end_rss or 0):.1f} MiB"
        )
        ok = ok and growth <= 0.05
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=1000, help="blocks to generate (default 1000)")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the runner (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random actions")
    ap.add_argument("--url", default=None, help="use this running runner instead of starting one")
    ap.add_argument("--report-every", type=int, default=100, help="print a line every N blocks")
    args = ap.parse_args()
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
