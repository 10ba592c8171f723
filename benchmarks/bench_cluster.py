"""The cluster's two figures, side by side in one run (docs/cluster.md, docs/performance.md):

1. **scaling**: video frames/s of 2 sessions on 2 workers together vs 1 session on 1 worker;
2. **the gateway's cost**: frames/s of one session through the cluster endpoint (client ->
   gateway -> worker) vs `longlive-runner serve` directly (client -> runner), same model.

    python benchmarks/bench_cluster.py                    # demo model, 2 CPU workers, 7 rounds
    python benchmarks/bench_cluster.py --model tiny --blocks 40 --rounds 5

Both the cluster (`longlive-runner cluster --workers 2`, its own local Ray instance) and `serve`
run unpaced (`--pace fast`: as fast as the model can; the default `realtime` would hold every
session at 16 fps) with one torch thread per worker (`OMP_NUM_THREADS=1`: a Ray CPU worker gets
one CPU). Each measurement is one SDK client per session that schedules a prompt, starts, and
counts the frames it receives over `--blocks` blocks after the first; frames/s is frames over the
time between its first and last frame. Each round measures the three configurations back to back
(serve, cluster 1 session, cluster 2 sessions; the order alternates), and the two ratios are taken
within each round, so that a shared machine's load, which drifts over seconds, hits both sides of
a ratio alike; the medians over the rounds are reported, then one `summary:` line.

Ideal scaling is 2.0 with a core (or GPU) per worker to spare; on a machine with fewer free cores
than workers plus the gateway and the client, the workers share them and the ratio says how much.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # serve_process.py: a real serve process, shared with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPTS = (
    "a red circle moving right on a black background",
    "a blue square moving left on a gray background",
)


async def session_fps(url: str, blocks: int, prompt: str, first: int, later: int) -> float:
    """One client, one session: video frames/s over `blocks` blocks after the first."""
    from longlive import Reactor

    async with Reactor(url, command_timeout=60, queue_timeout=120, max_buffered_frames=4096) as reactor:
        await reactor.reset()  # serve: a clean session (a cluster session is new anyway)
        await reactor.schedule_prompt(prompt, 0)
        await reactor.start()
        wanted = first + blocks * later
        n, t_first, t_last = 0, 0.0, 0.0
        async for _ in reactor.frames():
            n += 1
            if n == first:  # the first block ends: the clock starts
                t_first = time.perf_counter()
            if n == wanted:
                t_last = time.perf_counter()
                break
        await reactor.pause()
    return blocks * later / (t_last - t_first)


async def measure(url: str, sessions: int, blocks: int, first: int, later: int) -> list[float]:
    return list(
        await asyncio.gather(
            *(session_fps(url, blocks, PROMPTS[i % len(PROMPTS)], first, later) for i in range(sessions))
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="model (default demo)")
    ap.add_argument("--blocks", type=int, default=12, help="measured blocks per session (default 12)")
    ap.add_argument("--rounds", type=int, default=7, help="rounds of the three configurations (default 7)")
    ap.add_argument("--device", default="cpu", help="torch device of serve and the workers (default cpu)")
    args = ap.parse_args(argv)

    from _machine import cpu_model

    from serve_process import start_cluster, start_runner

    env = {"OMP_NUM_THREADS": "1"}
    common = ["--device", args.device, "--pace", "fast"]
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs; model {args.model}; {args.blocks} blocks per session"
    )
    started = time.perf_counter()
    serve = start_runner(*common, "--grace-period", "off", model=args.model, env=env)
    cluster = start_cluster(
        *common,
        "--grace-period",
        "0",
        "--max-sessions-per-address",
        "2",
        workers=2,
        model=args.model,
        env=env,
    )
    print(f"serve and a 2-worker cluster started in {time.perf_counter() - started:.1f} s")
    first, later = 9, 12
    results: dict[str, list[float]] = {
        "serve, 1 session": [],
        "cluster, 1 session": [],
        "cluster, 2 sessions": [],
    }
    try:
        asyncio.run(measure(cluster.url, 2, 2, first, later))  # warm-up: both workers, the gateway
        asyncio.run(measure(serve.url, 1, 2, first, later))
        for r in range(args.rounds):
            runs = [
                ("serve, 1 session", serve.url, 1),
                ("cluster, 1 session", cluster.url, 1),
                ("cluster, 2 sessions", cluster.url, 2),
            ]
            if r % 2:
                runs.reverse()
            for name, url, sessions in runs:
                fps = asyncio.run(measure(url, sessions, args.blocks, first, later))
                total = sum(fps)
                results[name].append(total)
                each = " + ".join(f"{x:.1f}" for x in fps)
                print(
                    f"round {r + 1}: {name:20s} {total:7.1f} frames/s"
                    + (f" ({each})" if sessions > 1 else "")
                )
                time.sleep(0.5)  # the cluster frees the session's worker (grace period 0)
    finally:
        cluster.stop(timeout=60)
        serve.stop()
    med = {k: statistics.median(v) for k, v in results.items()}
    print()
    for name, value in med.items():
        print(
            f"median {name:20s} {value:7.1f} video frames/s   (runs: {', '.join(f'{x:.1f}' for x in results[name])})"
        )
    two, one, direct = (
        results["cluster, 2 sessions"],
        results["cluster, 1 session"],
        results["serve, 1 session"],
    )
    scaling = [c / b for c, b in zip(two, one)]
    gateway = [b / a for b, a in zip(one, direct)]
    print(f"per-round 2 sessions / 1 session: {', '.join(f'{x:.2f}' for x in scaling)}")
    print(f"per-round gateway / serve:        {', '.join(f'{x:.2f}' for x in gateway)}")
    print(
        f"summary: 2 sessions on 2 workers / 1 session on 1 worker = {statistics.median(scaling):.2f}x "
        f"aggregate frames/s (ideal 2.00); through the gateway / serve directly = "
        f"{statistics.median(gateway):.2f}x (medians of per-round ratios, {args.rounds} rounds)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
