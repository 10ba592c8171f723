"""Frame transport: 480x832 RGB frames from the runner to the client, ours against a bare websocket.

    python benchmarks/bench_transport.py                      # defaults: 20-block bursts, 5 reps
    python benchmarks/bench_transport.py --blocks 40 --reps 7 --latency-blocks 40

THE MODEL IS REPLACED in this benchmark (and only here): the runner is given a stand-in pipeline
(`SyntheticPipeline` below) whose generator returns precomputed random uint8 frames of 480x832
instead of running the DiT and the VAE. Everything after the generator is the real code: the
`Runner` hub (session, generation thread, per-peer queues, frame fan-out), `RunnerServer`
(websocket server), the client `Reactor` over `WebSocketTransport`, and the in-process
`LocalConnection` (`Reactor.local`). So the figures are the cost of moving frames, not of making
them.

Measured side by side in one run, interleaved, each repetition on a fresh connection:

1. throughput (frames/s and MB/s at the consumer, first frame to last frame of a burst):
   - ours/ws:  runner process (hub + server) -> `Reactor(url).frames()` in this process;
   - bare/ws:  a plain `websockets` server process sending the same number of messages of the same
     size (28-byte header + 480*832*3 pixels, encoded once up front) -> a plain `websockets`
     client `recv()` loop in this process. Same websockets options (no compression, 16 MiB
     max_size) as ours;
   - ours/local: `Reactor.local(pipeline=stand-in)` in this process (no encoding, no socket);
   - before/ws: ours/ws with the server as it was before docs/performance.md's fix (a new `bytes`
     object per frame sent, `OutFrame.encoded()`, instead of one reused buffer); `--no-before`
     leaves it out.
   Also the CPU time per frame of the sending process and of this process (Linux /proc).
   In the burst the stand-in returns blocks at once, and the runner's per-client queue is raised
   to hold the whole burst (`max_queued_frames`), so no frame is dropped and the transport is the
   bottleneck.
2. latency (block decoded -> its frames in the client's hands): the stand-in sleeps
   `--block-interval` s per block (as if the model computed; 0.75 s = 12 frames at 16 fps, real
   time), notes the time it returns the block (CLOCK_MONOTONIC, system-wide on Linux, so the two
   processes share it), and the client notes when it gets the block's first and last frame from
   `frames()`. Default queue (48 frames), as `longlive-runner serve` runs.

Targets: ours/ws >= 0.8x bare/ws; local >= 5x ours/ws. Prints a table and a last `summary:` line.
Internal roles (`--role runner|bare`) are the two server processes this script starts itself.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

HEIGHT, WIDTH = 480, 832
FRAME_HEADER = 28
MAX_SIZE = 16 * 1024 * 1024
PROMPT = "synthetic frames"


def now_ns() -> int:
    return time.monotonic_ns()  # CLOCK_MONOTONIC: comparable across processes on Linux


def frames_in_video(blocks: int) -> int:
    return 9 + 12 * (blocks - 1)


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


# ----------------------------------------------------------------------------------------------
# The stand-in for the model (this benchmark only)
# ----------------------------------------------------------------------------------------------
def make_synthetic_pipeline(height: int, width: int, blocks: int, interval: float) -> Any:
    """A `Pipeline` stand-in: what `Runner` uses of a pipeline, with precomputed frames.

    `Runner` reads `config` (sizes, fps, block layout: the tiny preset's layout at the requested
    resolution), `device`, `dtype`, `text_encoder` (None: no token-count warnings) and calls
    `generator(seed)`; the generator's `generate_block(prompt)` returns a real
    `longlive_runner.model.generator.Block` holding precomputed uint8 frames [9 or 12, H, W, 3]. After
    `blocks` blocks it raises `FrameLimitReached("max_frames")`, as the real generator does at
    the end of the video. `decoded` records (seed, start_frame) -> the monotonic time (ns) each
    block was handed back.
    """
    import torch

    from longlive_runner.model.config import get_preset
    from longlive_runner.model.generator import Block, FrameLimitReached

    base = get_preset("tiny")
    config = dataclasses.replace(
        base,
        name=f"synthetic-{height}x{width}",
        stream=dataclasses.replace(base.stream, height=height, width=width),
    )
    pixels = np.random.default_rng(0).integers(0, 256, (12, height, width, 3), dtype=np.uint8)

    class SyntheticGenerator:
        def __init__(self, pipe: SyntheticPipeline, seed: int) -> None:
            self.pipe = pipe
            self.reset(seed)

        def reset(self, seed: int | None = None) -> None:
            if seed is not None:
                self.seed = int(seed)
            self.current_start_frame = 0
            self.finished: str | None = None
            self.prompt: str | None = None

        def generate_block(self, prompt: str) -> Block:
            if self.current_start_frame // 3 >= blocks:
                self.finished = "max_frames"
            if self.finished is not None:
                raise FrameLimitReached(self.finished)
            if interval > 0:
                time.sleep(interval)  # the model "computing" (the GIL is free, as in torch ops)
            s = self.current_start_frame
            frames = pixels[:9] if s == 0 else pixels
            switched = self.prompt is not None and prompt != self.prompt
            block = Block(s, frames, prompt, switched, self.prompt if switched else None)
            self.prompt = prompt
            self.current_start_frame = s + 3
            self.pipe.decoded[f"{self.seed}:{s}"] = now_ns()
            return block

    class SyntheticPipeline:
        def __init__(self) -> None:
            self.config = config
            self.device = torch.device("cpu")
            self.dtype = torch.uint8
            self.text_encoder = None
            self.decoded: dict[str, int] = {}

        def generator(self, seed: int = 0) -> SyntheticGenerator:
            return SyntheticGenerator(self, seed)

    return SyntheticPipeline()


# ----------------------------------------------------------------------------------------------
# Server processes (started by this script)
# ----------------------------------------------------------------------------------------------
def _stop_on_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def wait() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait, daemon=True).start()


async def role_runner(args: argparse.Namespace) -> None:
    """The real `Runner` + `RunnerServer` over the stand-in pipeline, on a free loopback port."""
    from longlive_runner.serving.hub import Runner
    from longlive_runner.serving.server import RunnerServer

    if args.fresh_alloc:
        # The server before the fix of this benchmark's finding: one new `bytes` per frame sent.
        from longlive_runner.serving.hub import OutFrame

        OutFrame.encode_into = lambda self, buffer: memoryview(self.encoded())  # type: ignore[method-assign]
    pipe = make_synthetic_pipeline(args.height, args.width, args.blocks, args.block_interval)
    runner = Runner(pipe, max_queued_frames=args.max_queued_frames, grace_period=None)
    server = RunnerServer(runner)
    await runner.start()
    await server.start("127.0.0.1", 0)
    stop = asyncio.Event()
    _stop_on_stdin_eof(asyncio.get_running_loop(), stop)
    print(f"PORT {server.port}", flush=True)
    await stop.wait()
    await server.close()
    await runner.close()
    print("DECODED " + json.dumps(pipe.decoded), flush=True)


async def role_bare(args: argparse.Namespace) -> None:
    """A plain websockets server: on "go", sends the burst's messages as fast as it can."""
    from websockets.asyncio.server import serve

    from longlive.protocol import FrameHeader, encode_frame

    pixels = np.random.default_rng(0).integers(0, 256, (12, args.height, args.width, 3), dtype=np.uint8)
    messages = []
    for v in range(frames_in_video(args.blocks)):
        start = 0 if v < 9 else 3 * ((v - 9) // 12 + 1)
        n = 9 if v < 9 else 12
        i = v if v < 9 else (v - 9) % 12
        h = FrameHeader(v, start, i, n, args.height, args.width, 0)
        messages.append(encode_frame(h, pixels[i]))

    async def handler(ws: Any) -> None:
        async for text in ws:
            if text == "go":
                for m in messages:
                    await ws.send(m)

    stop = asyncio.Event()
    _stop_on_stdin_eof(asyncio.get_running_loop(), stop)
    async with serve(handler, "127.0.0.1", 0, compression=None, max_size=MAX_SIZE) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await stop.wait()


class ServerProcess:
    """One of the roles above in a child process (same interpreter, same niceness)."""

    def __init__(self, role: str, args: argparse.Namespace, **overrides: Any) -> None:
        opts = {
            "blocks": args.blocks,
            "block_interval": 0.0,
            "max_queued_frames": 48,
            "height": args.height,
            "width": args.width,
            "fresh_alloc": 0,
        }
        opts.update(overrides)
        cmd = [sys.executable, os.path.abspath(__file__), "--role", role]
        for k, v in opts.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"{role} process failed to start (exit {self.proc.wait()})")
        self.url = f"ws://127.0.0.1:{int(line.split()[1])}"

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (Linux /proc; NaN elsewhere)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return float("nan")

    def stop(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(input="", timeout=120)
        for line in out.splitlines():
            if line.startswith("DECODED "):
                return dict(json.loads(line[len("DECODED ") :]))
        return {}


# ----------------------------------------------------------------------------------------------
# Clients (this process)
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Burst:
    frames: int
    seconds: float  # first frame to last frame at the consumer
    nbytes: int
    server_cpu_ms: float = float("nan")  # CPU time per frame of the sending process
    client_cpu_ms: float = float("nan")  # CPU time per frame of this process (client; local: both)

    @property
    def fps(self) -> float:
        return (self.frames - 1) / self.seconds

    @property
    def mbps(self) -> float:
        return self.fps * self.nbytes / 1e6


async def burst_reactor(reactor: Any, n: int, seed: int) -> Burst:
    """Start a video on `reactor` and read `n` frames from `frames()` (ours, either transport)."""
    async with reactor:
        await reactor.schedule_prompt(PROMPT, 0)
        await reactor.start(seed=seed)
        count, nbytes, t_first = 0, 0, 0
        async for frame in reactor.frames():
            if count == 0:
                t_first = now_ns()
            count += 1
            nbytes += frame.image.nbytes + FRAME_HEADER
            if count == n:
                break
        t_last = now_ns()
        await reactor.reset()
    return Burst(n, (t_last - t_first) / 1e9, nbytes // n)


async def burst_bare(url: str, n: int) -> Burst:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=MAX_SIZE) as ws:
        await ws.send("go")
        nbytes, t_first = 0, 0
        for i in range(n):
            msg = await ws.recv()
            if i == 0:
                t_first = now_ns()
            nbytes += len(msg)
        t_last = now_ns()
    return Burst(n, (t_last - t_first) / 1e9, nbytes // n)


async def latency_reactor(reactor: Any, blocks: int, seed: int) -> dict[str, tuple[int, int]]:
    """Per block "seed:start_frame" -> (first frame, last frame) arrival times (ns)."""
    n = frames_in_video(blocks)
    arrivals: dict[str, tuple[int, int]] = {}
    first: dict[int, int] = {}
    async with reactor:
        await reactor.schedule_prompt(PROMPT, 0)
        await reactor.start(seed=seed)
        count = 0
        async for frame in reactor.frames():
            t = now_ns()
            count += 1
            if frame.index_in_block == 0:
                first[frame.start_frame] = t
            if frame.index_in_block == frame.frames_in_block - 1:
                arrivals[f"{seed}:{frame.start_frame}"] = (first.get(frame.start_frame, t), t)
            if count == n:
                break
        await reactor.reset()
    if reactor.frames_dropped or reactor.frames_dropped_by_runner:
        print(f"# warning: {reactor.frames_dropped_by_runner} frames dropped by the runner", file=sys.stderr)
    return arrivals


def block_latencies(
    decoded: dict[str, int], arrivals: dict[str, tuple[int, int]]
) -> tuple[list[float], list[float]]:
    first, last = [], []
    for key, (t_first, t_last) in arrivals.items():
        if key in decoded and not key.endswith(":0"):  # block 0 (9 frames, connection warm-up) left out
            first.append((t_first - decoded[key]) / 1e6)
            last.append((t_last - decoded[key]) / 1e6)
    return first, last


async def within(coro: Any, timeout: float) -> Any:
    return await asyncio.wait_for(coro, timeout)


async def measured(coro: Any, timeout: float, n: int, server: ServerProcess | None = None) -> Burst:
    """Run a burst; note the CPU time per frame of this process and of the server process."""
    s0 = server.cpu_seconds() if server is not None else float("nan")
    c0 = time.process_time()
    burst: Burst = await within(coro, timeout)
    burst.client_cpu_ms = (time.process_time() - c0) / n * 1e3
    if server is not None:
        burst.server_cpu_ms = (server.cpu_seconds() - s0) / n * 1e3
    return burst


# ----------------------------------------------------------------------------------------------
async def bench(args: argparse.Namespace) -> int:
    from longlive import Reactor

    n = frames_in_video(args.blocks)
    frame_mb = (FRAME_HEADER + args.height * args.width * 3) / 1e6
    print(f"# transport: {args.height}x{args.width} RGB frames ({frame_mb:.2f} MB each), model replaced by "
          f"precomputed frames; {os.cpu_count()} cores; nice {os.nice(0)}")  # fmt: skip
    print(f"# throughput: bursts of {n} frames ({args.blocks} blocks), {args.reps} reps interleaved")

    # --- throughput ---------------------------------------------------------------------------
    local_pipe = make_synthetic_pipeline(args.height, args.width, args.blocks, 0.0)
    q = n + 24
    servers = {
        "ours/ws": ServerProcess("runner", args, max_queued_frames=q),
        "bare/ws": ServerProcess("bare", args),
    }
    if not args.no_before:
        servers["before/ws"] = ServerProcess("runner", args, max_queued_frames=q, fresh_alloc=1)
    results: dict[str, list[Burst]] = {k: [] for k in (*servers, "ours/local")}
    try:
        for rep in range(args.warmup + args.reps):
            got: dict[str, Burst] = {}
            for name, srv in servers.items():
                if name == "bare/ws":
                    coro = burst_bare(srv.url, n)
                else:
                    coro = burst_reactor(Reactor(srv.url, max_buffered_frames=q), n, rep)
                got[name] = await measured(coro, args.timeout, n, srv)
            local = Reactor.local(
                pipeline=local_pipe, runner_options={"max_queued_frames": q}, max_buffered_frames=q
            )
            got["ours/local"] = await measured(burst_reactor(local, n, rep), args.timeout, n)
            tag = "warmup" if rep < args.warmup else f"rep {rep - args.warmup + 1}"
            print(f"{tag:>8}  " + "  ".join(f"{k} {b.fps:8.1f} fps" for k, b in got.items()))
            if rep >= args.warmup:
                for k, b in got.items():
                    results[k].append(b)
    finally:
        for srv in servers.values():
            srv.stop()

    med = {k: statistics.median(b.fps for b in v) for k, v in results.items()}
    med_mb = {k: statistics.median(b.mbps for b in v) for k, v in results.items()}
    ratio_ws = statistics.median(o.fps / b.fps for o, b in zip(results["ours/ws"], results["bare/ws"]))
    ratio_local = statistics.median(
        loc.fps / o.fps for loc, o in zip(results["ours/local"], results["ours/ws"])
    )
    print()
    print(f"{'path':<12} {'frames/s':>10} {'MB/s':>9} {'min fps':>9} {'max fps':>9} "
          f"{'server CPU':>11} {'client CPU':>11}   (medians of {args.reps}; CPU in ms per frame)")  # fmt: skip
    for k, v in results.items():
        fps = [b.fps for b in v]
        srv_cpu = statistics.median(b.server_cpu_ms for b in v)
        cli_cpu = statistics.median(b.client_cpu_ms for b in v)
        print(f"{k:<12} {med[k]:>10.1f} {med_mb[k]:>9.1f} {min(fps):>9.1f} {max(fps):>9.1f} "
              f"{srv_cpu:>11.2f} {cli_cpu:>11.2f}")  # fmt: skip
    print("(ours/local: the runner and the client share this process; its CPU is under 'client CPU')")
    print(f"ours/ws vs bare/ws   {ratio_ws:.3f}x  (median of per-rep ratios; target >= 0.8)")
    print(f"local vs ours/ws     {ratio_local:.1f}x  (target >= 5)")
    if "before/ws" in results:
        before = statistics.median(o.fps / b.fps for o, b in zip(results["before/ws"], results["bare/ws"]))
        print(
            f"before/ws vs bare/ws {before:.3f}x  (the server before the fix in docs/performance.md, same run)"
        )

    # --- latency ----------------------------------------------------------------------------
    print()
    print(f"# latency: {args.latency_blocks} blocks paced at {args.block_interval:.2f} s each "
          f"(decoded -> first / last frame of the block out of Reactor.frames(); block 0 left out)")  # fmt: skip
    lat_srv = ServerProcess("runner", args, blocks=args.latency_blocks, block_interval=args.block_interval)
    lat_pipe = make_synthetic_pipeline(args.height, args.width, args.latency_blocks, args.block_interval)
    lat_timeout = args.timeout + args.latency_blocks * args.block_interval * 3
    try:
        ws_arr = await within(latency_reactor(Reactor(lat_srv.url), args.latency_blocks, 1000), lat_timeout)
        local_arr = await within(
            latency_reactor(Reactor.local(pipeline=lat_pipe), args.latency_blocks, 1000), lat_timeout
        )
    finally:
        decoded = lat_srv.stop()
    ws_first, ws_last = block_latencies(decoded, ws_arr)
    lo_first, lo_last = block_latencies(lat_pipe.decoded, local_arr)
    floor_ms = 12 / med["bare/ws"] * 1e3
    print(
        f"{'path':<12} {'first p50':>10} {'first p99':>10} {'last p50':>10} {'last p99':>10}   ms (n={len(ws_last)})"
    )
    for name, f, la in (("ours/ws", ws_first, ws_last), ("ours/local", lo_first, lo_last)):
        print(f"{name:<12} {percentile(f, 50):>10.1f} {percentile(f, 99):>10.1f} "
              f"{percentile(la, 50):>10.1f} {percentile(la, 99):>10.1f}")  # fmt: skip
    print(f"reference: 12 frames at the bare websocket's median rate take {floor_ms:.1f} ms")

    ok = ratio_ws >= 0.8 and ratio_local >= 5
    print(
        f"summary: ours_ws_fps={med['ours/ws']:.1f} bare_ws_fps={med['bare/ws']:.1f} ws_ratio={ratio_ws:.3f} "
        f"local_fps={med['ours/local']:.1f} local_ratio={ratio_local:.1f} "
        f"block_latency_ms_p50={percentile(ws_last, 50):.1f} p99={percentile(ws_last, 99):.1f} "
        f"local_latency_ms_p50={percentile(lo_last, 50):.1f} "
        f"server_cpu_ms_per_frame={statistics.median(b.server_cpu_ms for b in results['ours/ws']):.2f} "
        f"bare_cpu_ms_per_frame={statistics.median(b.server_cpu_ms for b in results['bare/ws']):.2f} "
        f"cores={os.cpu_count()} {'PASS' if ok else 'MISS'}"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--blocks", type=int, default=20, help="blocks per throughput burst (9 + 12*(n-1) frames)"
    )
    ap.add_argument("--reps", type=int, default=5, help="measured repetitions of each path")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured repetitions first")
    ap.add_argument("--latency-blocks", type=int, default=24)
    ap.add_argument("--block-interval", type=float, default=0.75, help="seconds per block in the latency run")
    ap.add_argument("--height", type=int, default=HEIGHT)
    ap.add_argument("--width", type=int, default=WIDTH)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per repetition before giving up")
    ap.add_argument("--role", choices=["runner", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--max-queued-frames", type=int, default=48, help=argparse.SUPPRESS)
    ap.add_argument("--fresh-alloc", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument(
        "--no-before",
        action="store_true",
        help="skip the 'before' row (the server as it was: a new bytes object per frame)",
    )
    args = ap.parse_args()
    if args.blocks < 2 or args.latency_blocks < 3:
        ap.error("--blocks must be >= 2 and --latency-blocks >= 3")
    if args.role == "runner":
        asyncio.run(role_runner(args))
        return 0
    if args.role == "bare":
        asyncio.run(role_bare(args))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
