"""LongLive 2.0's block loop on `tiny2`: cost and memory per chunk stay flat over many chunks.

    python benchmarks/bench_longlive2.py                   # 100 chunks (800 latent frames), decoded
    python benchmarks/bench_longlive2.py --chunks 300 --no-decode

One video through the runner's normal loop (`pipe.generator`, 4 UniPC forwards + 1 clean pass
per chunk), with a new shot (the "The scene transitions. " prefix: shot sink pinned, RoPE offset
+8) every `--shot-every` chunks and a scene cut (memory purged) every `--cut-every`. The RoPE table
is cut to 64 positions (the least a 32-frame cache allows) so the run re-bases its positions
many times. Per window of `--window` chunks it prints the median chunk time (wall clock, and the
CPU time of this thread, which other work on a shared machine does not inflate), the resident
memory and what the KV cache holds; then the last window against the first (ratios from this one
run). Random weights: this measures the loop's cost, not pictures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100, help="chunks to generate (default 100)")
    ap.add_argument("--window", type=int, default=20, help="chunks per reported window (default 20)")
    ap.add_argument("--shot-every", type=int, default=4, help="a new shot every N chunks (default 4)")
    ap.add_argument(
        "--cut-every", type=int, default=40, help="a scene cut every N chunks (default 40; 0: none)"
    )
    ap.add_argument("--rope-positions", type=int, default=64, help="RoPE table length (default 64)")
    ap.add_argument("--no-decode", action="store_true", help="latents only (the DiT loop alone)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args(argv)

    import torch

    from longlive_runner.model.config import SHOT_PREFIX, get_preset
    from longlive_runner.model.pipeline import random_pipeline

    torch.set_num_threads(args.threads)
    base = get_preset("tiny2")
    config = dataclasses.replace(
        base, dit=dataclasses.replace(base.dit, rope_max_positions=args.rope_positions)
    )
    pipe = random_pipeline(config, "cpu", torch.float32, init_seed=0)
    gen = pipe.generator(seed=0, decode=not args.no_decode)
    cache = gen.cache
    print(
        f"# tiny2 ({config.family}), {config.height}x{config.width}, chunks of {config.frames_per_block} latent "
        f"frames, cache {config.stream.cache_frames} frames ({cache.nbytes() / 1e6:.2f} MB), RoPE table "
        f"{args.rope_positions}, shot every {args.shot_every}, cut every {args.cut_every or 'never'}, "
        f"{'latents only' if args.no_decode else 'decoded'}, {args.threads} thread(s)"
    )
    print(
        f"{'chunks':>11} {'wall ms':>8} {'cpu ms':>8} {'RSS MB':>8} {'held':>5} {'shots':>5} {'scene':>5} {'rebases':>7}"
    )
    windows: list[tuple[float, float, float]] = []
    walls: list[float] = []
    cpus: list[float] = []
    k_ptr = cache.k.data_ptr()
    rebases = 0
    last_offset = 0
    video_frames = 0
    for c in range(args.chunks):
        cut = bool(args.cut_every) and c > 0 and c % args.cut_every == 0
        shot = not cut and c % args.shot_every == 0 and c > 0
        prompt = (SHOT_PREFIX if shot else "") + f"shot {c // args.shot_every}"
        t, tc = time.perf_counter(), time.thread_time()
        block = gen.generate_block(prompt, scene_cut=cut)
        walls.append(time.perf_counter() - t)
        cpus.append(time.thread_time() - tc)
        video_frames += block.num_frames
        if cut:
            last_offset = 0  # a new scene starts with a fresh cache
        if cache.position_offset > last_offset:
            rebases += 1
        last_offset = cache.position_offset
        assert cache.k.data_ptr() == k_ptr, "the KV cache was reallocated"
        if (c + 1) % args.window == 0:
            wall, cpu, rss = statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3, rss_mb()
            windows.append((wall, cpu, rss))
            print(
                f"{c + 1 - args.window:>5}-{c:<5} {wall:8.1f} {cpu:8.1f} {rss:8.1f} {cache.valid_frames:5d} "
                f"{gen.shot_index:5d} {gen.scene_index:5d} {rebases:7d}"
            )
            walls, cpus = [], []
    if len(windows) >= 2:
        (w0, c0, r0), (w1, c1, r1) = windows[0], windows[-1]
        print(
            f"last window / first: wall {w1 / w0:.2f}x, CPU {c1 / c0:.2f}x, RSS {r1 / r0:.2f}x "
            f"({args.chunks} chunks, {args.chunks * config.frames_per_block} latent frames, {video_frames} video "
            f"frames, {rebases} re-bases, KV cache never reallocated)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
