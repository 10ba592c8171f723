"""Command round trips while the runner generates, and the time from `start` to the first frame.

    python benchmarks/bench_commands.py                     # tiny preset, real server process
    python benchmarks/bench_commands.py --commands 400 --model tiny --server-threads 1

A real `longlive-runner serve --model tiny` process is started on a free loopback port (torch's
default thread count unless `--server-threads`); this process is the client (`longlive.Reactor`).

1. start -> first frame (`--starts` repetitions): `reset`, `schedule_prompt(.., 0)`, then the time
   from calling `start()` to the first frame out of `Reactor.frames()` (includes generating and
   decoding the first block: model-bound, reported as is).
2. round trips while generating: the video runs; every 0-20 ms (random, seeded) the client sends
   `schedule_prompt(prompt, current_start_frame + 3)` (the documented way to switch at the next
   block; three prompts in turn, so the runner keeps switching) and times the call: from sending
   to the `ack` *and* the `state` broadcast that follows it, which is when `schedule_prompt()`
   returns. `get_state()` (ack only) is timed in between, for reference.

Target: schedule_prompt p99 < 20 ms on loopback with the tiny preset. Prints a table and a last
`summary:` line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

# serve_process.py (a real serve process on a free port) lives with the tests, not in the package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serve_process import RunnerProcess, start_runner  # noqa: E402

PROMPTS = [
    "a red circle moving left on a black background",
    "a blue square moving up on a gray background",
    "a green triangle spinning on a white background",
]


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def start_server(model: str, threads: int) -> RunnerProcess:
    """`python -m longlive_runner serve` on a free port, `threads` torch threads (0: torch's default)."""
    env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    # --pace fast: the round trips are measured while the runner generates flat out, as before
    # serve paced to real time by default (bench_pacing.py measures the pacing itself).
    return start_runner("--grace-period", "off", "--pace", "fast", model=model, timeout=300, env=env)


async def first_frame_after_start(reactor, seed: int) -> float:
    await reactor.reset()
    await reactor.schedule_prompt(PROMPTS[0], 0)
    frames = reactor.frames()
    t0 = time.perf_counter()
    await reactor.start(seed=seed)
    await frames.__anext__()
    dt = time.perf_counter() - t0
    await frames.aclose()
    return dt


async def bench(args: argparse.Namespace) -> int:
    from longlive import Reactor

    print(f"# commands: longlive-runner serve --model {args.model} (process), client in this process; "
          f"{os.cpu_count()} cores; nice {os.nice(0)}; server threads "
          f"{args.server_threads or 'torch default'}")  # fmt: skip
    t = time.perf_counter()
    server = start_server(args.model, args.server_threads)
    print(f"# runner ready in {time.perf_counter() - t:.1f} s at {server.url}")
    try:
        async with Reactor(server.url, command_timeout=60, max_buffered_frames=8) as reactor:
            # 1. start -> first frame
            starts = [await first_frame_after_start(reactor, seed) for seed in range(args.starts)]
            print("start -> first frame: " + " ".join(f"{s * 1e3:.0f}" for s in starts) + " ms")

            # 2. round trips while generating
            await reactor.reset()
            await reactor.schedule_prompt(PROMPTS[0], 0)
            await reactor.start(seed=1)
            await reactor.wait_for_frame(6, timeout=300)  # two blocks done: steady state
            switches = 0

            def count_switch(_msg: object) -> None:
                nonlocal switches
                switches += 1

            reactor.on_prompt_switched(count_switch)
            rng = random.Random(0)
            sched: list[float] = []
            state: list[float] = []
            csf0, t_begin = reactor.current_start_frame, time.perf_counter()
            for i in range(args.commands):
                await asyncio.sleep(rng.uniform(0, 0.02))
                t0 = time.perf_counter()
                await reactor.schedule_prompt(PROMPTS[i % 3], reactor.current_start_frame + 3)
                sched.append((time.perf_counter() - t0) * 1e3)
                if i % 2 == 0:
                    t0 = time.perf_counter()
                    await reactor.get_state()
                    state.append((time.perf_counter() - t0) * 1e3)
            elapsed = time.perf_counter() - t_begin
            blocks = (reactor.current_start_frame - csf0) // 3
            reactor.off(count_switch)
            await reactor.reset()
    finally:
        server.stop()

    print()
    print(f"{'command':<26} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, xs in (("schedule_prompt (+state)", sched), ("get_state", state)):
        print(f"{name:<26} {len(xs):>5} {percentile(xs, 50):>8.2f} {percentile(xs, 90):>8.2f} "
              f"{percentile(xs, 99):>8.2f} {max(xs):>8.2f}")  # fmt: skip
    print(f"while generating: {blocks} blocks in {elapsed:.1f} s ({blocks / elapsed:.2f} blocks/s), "
          f"{switches} of them prompt switches (KV re-cache)")  # fmt: skip
    s50 = statistics.median(starts)
    print(f"start -> first frame: median {s50 * 1e3:.0f} ms over {len(starts)} starts (min {min(starts) * 1e3:.0f}, "
          f"max {max(starts) * 1e3:.0f})")  # fmt: skip
    p99 = percentile(sched, 99)
    ok = p99 < 20.0
    print(f"summary: schedule_p50_ms={percentile(sched, 50):.2f} schedule_p99_ms={p99:.2f} "
          f"get_state_p99_ms={percentile(state, 99):.2f} start_to_first_frame_ms={s50 * 1e3:.0f} "
          f"blocks_per_s={blocks / elapsed:.2f} cores={os.cpu_count()} {'PASS' if ok else 'MISS'}")  # fmt: skip
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--commands", type=int, default=300, help="schedule_prompt calls timed")
    ap.add_argument("--starts", type=int, default=5, help="start -> first frame repetitions")
    ap.add_argument(
        "--server-threads", type=int, default=0, help="OMP_NUM_THREADS of the runner (0: torch's default)"
    )
    args = ap.parse_args()
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
