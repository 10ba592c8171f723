"""CPU use of a real `longlive-runner serve` process: idle, paced to real time, and unpaced.

    python benchmarks/bench_pacing.py                  # the demo model, 10 s per generating phase
    python benchmarks/bench_pacing.py --seconds 20 --model tiny

CPU use is the runner process's CPU time (user + system, from /proc; Linux) divided by wall
time over a phase: 1.0 is one core busy. In one run, one after the other:

1. idle: `serve --model demo` (real-time pace, the default) with no client;
2. paced: one client watches a video for `--seconds` (`serve`'s default, `--pace realtime`);
3. left: the client has gone; the runner paused at once (docs/protocol.md, section 1.1);
4. unpaced: the same with a second runner started with `--pace fast` (as fast as it can).

Each generating phase also reports the video frames the client received per second (real time
is 16) and the most it was ahead of playback. Prints a table and one `summary:` line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # serve_process.py: a real serve process, shared with the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import cpu_model  # noqa: E402

PROMPTS = (
    "a red circle moving right on a black background",
    "a blue square moving down on a gray background",
)
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (threads included), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


class Phase:
    def __init__(self, name: str, pid: int) -> None:
        self.name, self.pid = name, pid
        self.frames = 0
        self.max_lead = 0.0

    def __enter__(self) -> Phase:
        self.cpu0, self.t0 = cpu_seconds(self.pid), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = (cpu_seconds(self.pid) - self.cpu0) / self.wall

    def row(self) -> str:
        fps = f"{self.frames / self.wall:6.1f}" if self.frames else "     -"
        lead = f"{self.max_lead:5.1f}" if self.frames else "    -"
        return (
            f"{self.name:<28} {self.wall:6.1f} s   CPU {self.cpu:5.2f} cores   {fps} frames/s   lead {lead}"
        )


async def watch(url: str, seconds: float, phase: Phase, fps: float) -> None:
    """One client: a new video, frames read for `seconds` of wall time after the first frame."""
    from longlive import Reactor

    async with Reactor(url) as reactor:
        await reactor.reset()
        await reactor.schedule_prompt(PROMPTS[0], 0)
        await reactor.schedule_prompt(PROMPTS[1], 24)
        await reactor.start()
        first = None
        async for frame in reactor.frames():
            now = time.perf_counter()
            first = now if first is None else first
            phase.frames += 1
            # frames received but not yet due on a 16 fps clock started by the first one
            phase.max_lead = max(phase.max_lead, (frame.index + 1) - (now - first) * fps)
            if now - first >= seconds:
                break


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="model for both runners (default demo)")
    ap.add_argument("--seconds", type=float, default=10.0, help="wall seconds per generating phase")
    ap.add_argument("--idle", type=float, default=5.0, help="wall seconds per idle phase")
    args = ap.parse_args(argv)
    if not Path("/proc/self/stat").exists():
        print("bench_pacing.py reads CPU times from /proc: Linux only", file=sys.stderr)
        return 2

    import httpx

    from serve_process import start_runner

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; model {args.model}; torch threads: runner default")
    phases: list[Phase] = []
    with start_runner("--grace-period", "off", model=args.model) as paced:
        fps = float(httpx.get(paced.http_url + "/info", timeout=10).json()["fps"])
        time.sleep(1.0)  # let the load settle
        with Phase("idle (no client)", paced.pid) as p:
            time.sleep(args.idle)
        phases.append(p)
        with Phase("paced (--pace realtime)", paced.pid) as p:
            asyncio.run(watch(paced.url, args.seconds, p, fps))
        phases.append(p)
        time.sleep(0.5)  # the block in flight when the client left
        with Phase("client left (paused)", paced.pid) as p:
            time.sleep(args.idle)
        phases.append(p)
    with start_runner("--grace-period", "off", "--pace", "fast", model=args.model) as fast:
        time.sleep(1.0)
        with Phase("unpaced (--pace fast)", fast.pid) as p:
            asyncio.run(watch(fast.url, args.seconds, p, fps))
        phases.append(p)

    for phase in phases:
        print(phase.row())
    idle, paced_p, left, fast_p = phases
    print(
        f"summary: CPU idle {idle.cpu:.2f}, paced {paced_p.cpu:.2f}, unpaced {fast_p.cpu:.2f} cores "
        f"(paced/unpaced {paced_p.cpu / max(fast_p.cpu, 1e-9):.2f}); after the last client left "
        f"{left.cpu:.2f}; delivered {paced_p.frames / paced_p.wall:.1f} vs {fast_p.frames / fast_p.wall:.1f} "
        f"frames/s (real time {fps:g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
