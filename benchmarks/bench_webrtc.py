"""Raw websocket frames against compressed WebRTC video, side by side in one run.

    sudo python benchmarks/bench_webrtc.py                 # defaults: 6 s per run, 1 rep
    sudo python benchmarks/bench_webrtc.py --seconds 10 --reps 2 --rtt 200

What runs: `longlive-runner serve`'s own pieces (`Runner`, `RunnerServer` with a token, the
Reactor front attached as `serve` does) in one network namespace, bound to a veth address; each
client in a second namespace, across the veth pair (WebRTC ignores loopback, and the veth's byte
counters are then exactly the bytes on the wire). Needs root and iproute2.

- ws: our SDK, `longlive.Reactor(ws://..., token=...)`, raw RGB frames (docs/protocol.md, 4);
- webrtc: Reactor's Python client `reactor-sdk` 1.13.0 in its coordinator mode with the
  runner's token as the JWT, VP8 decoded to numpy RGB by the client.

Two scenes: `synthetic` (a 480x832 moving scene: a coloured disc crossing a textured gradient;
THE MODEL IS REPLACED by precomputed frames, so the figures are the cost of moving frames) and
`demo` (the embedded demo model, 64x64, generating for real on the CPU: its server CPU includes
the model). Both paced as `serve` (16 fps, at most 2 blocks ahead).

Per run, measured over `--seconds` from the first frame: frames delivered and fps; bytes/s on
the wire (both directions, the client's veth); CPU time per delivered frame of the server process
and of the client process; time from `start` to the first frame; then the command round trip
(`get_state`, `--rtt` times: p50 / p99). Prints a table and a last `summary:` JSON line.
Internal roles (`--role server|client`) are the processes this script starts itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/_netns.py: the namespaces

TOKEN = "bench-webrtc-token-0123456789abcdef"
PROMPT = "a red circle moving right on a black background"
LOOP_FRAMES = 48


# ----------------------------------------------------------------------------------------------
# The synthetic scene
# ----------------------------------------------------------------------------------------------
def synthetic_frames(height: int, width: int, n: int = LOOP_FRAMES) -> np.ndarray:
    """`n` frames of a moving scene: a textured gradient with a disc crossing it (loops)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [60 + 80 * x / width, 40 + 60 * y / height, 90 + 40 * np.sin(x / 23.0) * np.cos(y / 17.0)], axis=-1
    )
    texture = np.random.default_rng(0).integers(0, 24, (height, width, 1)).astype(np.float32)
    frames = np.empty((n, height, width, 3), np.uint8)
    r = min(height, width) / 6
    for i in range(n):
        cx = (i / n) * (width + 2 * r) - r
        cy = height / 2 + height / 4 * np.sin(2 * np.pi * i / n)
        disc = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
        img = base + texture
        img[disc] = (230, 40, 40)
        frames[i] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def synthetic_pipeline(height: int, width: int) -> Any:
    """What `Runner` uses of a pipeline, generating from `synthetic_frames` (see the docstring)."""
    import dataclasses

    import torch

    from longlive_runner.model.config import get_preset
    from longlive_runner.model.generator import Block

    base = get_preset("tiny")
    config = dataclasses.replace(
        base,
        name=f"synthetic-{height}x{width}",
        stream=dataclasses.replace(base.stream, height=height, width=width),
    )
    loop = synthetic_frames(height, width)

    class Generator:
        def __init__(self, seed: int) -> None:
            self.reset(seed)

        def reset(self, seed: int | None = None) -> None:
            self.current_start_frame = 0
            self.video_frame = 0
            self.prompt: str | None = None

        def generate_block(self, prompt: str) -> Block:
            n = 9 if self.current_start_frame == 0 else 12
            idx = [(self.video_frame + i) % LOOP_FRAMES for i in range(n)]
            block = Block(self.current_start_frame, loop[idx], prompt, False, None)
            self.current_start_frame += 3
            self.video_frame += n
            time.sleep(0.05)  # a little "model" time
            return block

    class Pipeline:
        def __init__(self) -> None:
            self.config = config
            self.device = torch.device("cpu")
            self.dtype = torch.uint8
            self.text_encoder = None

        def generator(self, seed: int = 0) -> Generator:
            return Generator(seed)

    return Pipeline()


# ----------------------------------------------------------------------------------------------
# Roles
# ----------------------------------------------------------------------------------------------
async def role_server(args: argparse.Namespace) -> None:
    from longlive_runner import load_pipeline
    from longlive_runner.serving.hub import Runner
    from longlive_runner.serving.reactor.serve import attach
    from longlive_runner.serving.server import RunnerServer

    pipe = synthetic_pipeline(480, 832) if args.scene == "synthetic" else load_pipeline("demo")
    runner = Runner(pipe, pace="realtime", grace_period=None, max_peers=8)
    server = RunnerServer(runner, token=TOKEN)
    options = argparse.Namespace(
        webrtc="on", ice_server=[], webrtc_max_connections=8, max_clients_per_address=8
    )
    reactor = attach(server.front, runner, options)
    assert reactor is not None, "the webrtc extra is not installed"
    await runner.start()
    await server.start(args.host, 0)
    print(f"PORT {server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(
        target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)), daemon=True
    ).start()
    await stop.wait()
    await reactor.close()
    await server.close()
    await runner.close()


def _wire_bytes(dev: str) -> int:
    total = 0
    for name in ("rx_bytes", "tx_bytes"):
        with open(f"/sys/class/net/{dev}/statistics/{name}") as f:
            total += int(f.read())
    return total


def _cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


async def client_ws(args: argparse.Namespace) -> dict[str, Any]:
    from longlive import Reactor

    out: dict[str, Any] = {}
    async with Reactor(f"ws://{args.host}:{args.port}", token=TOKEN) as reactor:
        await reactor.reset()
        await reactor.schedule_prompt(PROMPT, timestamp=0)
        t_start = time.monotonic()
        await reactor.start()
        frames = 0
        async for _frame in reactor.frames():
            if frames == 0:
                out["first_frame_s"] = time.monotonic() - t_start
                w0, c0, t0 = _wire_bytes(args.dev), _cpu(), time.monotonic()
            frames += 1
            if time.monotonic() - t0 >= args.seconds:
                break
        t1 = time.monotonic()
        out.update(frames=frames - 1, seconds=t1 - t0, wire=_wire_bytes(args.dev) - w0, cpu=_cpu() - c0)
        rtts = []
        for _ in range(args.rtt):
            s = time.perf_counter()
            await reactor.get_state()
            rtts.append(time.perf_counter() - s)
        out["rtt"] = rtts
        await reactor.reset()
    return out


async def client_webrtc(args: argparse.Namespace) -> dict[str, Any]:
    from reactor_sdk import Reactor

    out: dict[str, Any] = {}
    reactor = Reactor("longlive", jwt=TOKEN, api_url=f"http://{args.host}:{args.port}")
    got: list[float] = []
    first = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_frame(rgb: np.ndarray) -> None:
        got.append(time.monotonic())
        if len(got) == 1:
            loop.call_soon_threadsafe(first.set)

    t_connect = time.monotonic()
    await asyncio.wait_for(reactor.connect(), 30)
    out["connect_s"] = time.monotonic() - t_connect
    reactor.track("main_video").on_frame(on_frame)
    await reactor.send_command("reset", {})
    await reactor.send_command("schedule_prompt", {"new_prompt": PROMPT, "timestamp": 0})
    t_start = time.monotonic()
    await reactor.send_command("start", {})
    await asyncio.wait_for(first.wait(), 30)
    out["first_frame_s"] = got[0] - t_start
    w0, c0, t0, n0 = _wire_bytes(args.dev), _cpu(), time.monotonic(), len(got)
    await asyncio.sleep(args.seconds)
    t1, n1 = time.monotonic(), len(got)
    out.update(frames=n1 - n0, seconds=t1 - t0, wire=_wire_bytes(args.dev) - w0, cpu=_cpu() - c0)
    rtts = []
    for _ in range(args.rtt):
        s = time.perf_counter()
        await reactor.send_command("get_state", {})
        rtts.append(time.perf_counter() - s)
    out["rtt"] = rtts
    await reactor.send_command("reset", {})
    await reactor.disconnect()
    return out


def role_client(args: argparse.Namespace) -> None:
    fn = client_ws if args.transport == "ws" else client_webrtc
    print(json.dumps(asyncio.run(fn(args))), flush=True)


# ----------------------------------------------------------------------------------------------
# The orchestrator
# ----------------------------------------------------------------------------------------------
def _proc_cpu(pid: int) -> float:
    """CPU seconds of process `pid` and its threads (utime + stime, Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_pid(wrapper: int) -> int:
    """The python process under `ip netns exec` (exec'd in place: the same pid)."""
    return wrapper


def run(args: argparse.Namespace) -> None:
    from _machine import cpu_model

    from _netns import Namespaces

    ns = Namespaces()
    ns.delete()
    ns.create()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows: list[dict[str, Any]] = []
    try:
        for scene in args.scenes:
            server = subprocess.Popen(
                [*ns.exec(ns.a), sys.executable, __file__, "--role", "server", "--scene", scene, "--host", ns.address_a],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            )  # fmt: skip
            try:
                assert server.stdout is not None
                line = server.stdout.readline()
                if not line.startswith("PORT"):
                    raise RuntimeError(f"the server did not start: {line!r}")
                port = line.split()[1]
                for rep in range(args.reps):
                    for transport in ("ws", "webrtc"):
                        c0 = _proc_cpu(_server_pid(server.pid))
                        done = subprocess.run(
                            [*ns.exec(ns.b), sys.executable, __file__, "--role", "client", "--transport", transport,
                             "--host", ns.address_a, "--port", port, "--dev", f"{ns.b}0",
                             "--seconds", str(args.seconds), "--rtt", str(args.rtt)],
                            capture_output=True, text=True, timeout=args.seconds + 120, env=env,
                        )  # fmt: skip
                        server_cpu = _proc_cpu(_server_pid(server.pid)) - c0
                        if done.returncode != 0:
                            raise RuntimeError(f"{transport} client failed:\n{done.stderr[-3000:]}")
                        r = json.loads(done.stdout.strip().splitlines()[-1])
                        rtt = sorted(r["rtt"])
                        rows.append(
                            {
                                "scene": scene,
                                "transport": transport,
                                "rep": rep,
                                "fps": r["frames"] / r["seconds"],
                                "wire_MBps": r["wire"] / r["seconds"] / 1e6,
                                "wire_bytes_per_frame": r["wire"] / max(r["frames"], 1),
                                "client_cpu_ms_per_frame": 1000 * r["cpu"] / max(r["frames"], 1),
                                # the server's CPU over the whole client run (connect, start, the
                                # window, the round trips), per frame of the window
                                "server_cpu_ms_per_frame": 1000 * server_cpu / max(r["frames"], 1),
                                "first_frame_s": r["first_frame_s"],
                                "rtt_p50_ms": 1000 * statistics.median(rtt),
                                "rtt_p99_ms": 1000 * rtt[min(len(rtt) - 1, int(0.99 * len(rtt)))],
                            }
                        )
            finally:
                if server.stdin is not None:
                    server.stdin.close()
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
    finally:
        ns.delete()
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs; {args.seconds:g} s per run, {args.rtt} round trips"
    )
    head = ("scene", "transport", "fps", "wire_MBps", "wire_bytes_per_frame", "client_cpu_ms_per_frame",
            "server_cpu_ms_per_frame", "first_frame_s", "rtt_p50_ms", "rtt_p99_ms")  # fmt: skip
    print(" | ".join(head))
    for row in rows:
        print(" | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in head))
    print("summary: " + json.dumps(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--role", choices=("server", "client"), default=None)
    p.add_argument("--scenes", nargs="+", default=["synthetic", "demo"], choices=("synthetic", "demo"))
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--rtt", type=int, default=100)
    p.add_argument("--scene", default="synthetic")
    p.add_argument("--transport", default="ws")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--dev", default="lo")
    args = p.parse_args()
    if args.role == "server":
        asyncio.run(role_server(args))
    elif args.role == "client":
        role_client(args)
    else:
        if os.geteuid() != 0:
            raise SystemExit("bench_webrtc.py needs root (it creates network namespaces)")
        run(args)


if __name__ == "__main__":
    main()
