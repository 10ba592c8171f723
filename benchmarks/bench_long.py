"""A long video on the embedded demo model: no length cap, prompts followed, flat cost and memory.

    python benchmarks/bench_long.py                        # 5,001 latent frames (~21 min of video)
    python benchmarks/bench_long.py --frames 1500 --window 300

LongLive's RoPE table ends at latent frame 1024 (about 4.3 min at 16 fps); past it the runner
re-bases the KV cache's positions (docs/architecture.md, "Long videos"). This script streams one
video through the runner's normal block loop (`pipe.generator`, prompt switches with the KV
re-cache) far past that point, with a held-out random schedule that switches colour, direction or
background every few blocks. Per window of `--window` latent frames it prints what the demo's
checker reads back (object colour and background per video frame, direction per block), the
median block time (wall clock, and the CPU time of the generating thread, which other work on a
shared machine does not inflate) and the process's resident memory, then the last window against
the first (ratios measured in this one run). Frames are scored as they come and not kept.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SEED = 20_261_201  # held out: training draws from other streams


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="model name or converted folder (default demo)")
    ap.add_argument("--frames", type=int, default=5001, help="latent frames to generate (default 5001)")
    ap.add_argument("--window", type=int, default=500, help="latent frames per reported window (default 500)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--switch-prob", type=float, default=0.15, help="chance of a switch at a block boundary")
    args = ap.parse_args(argv)

    import torch

    from longlive_runner import load_pipeline
    from longlive_runner.demo import checker, scenes

    torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, device="cpu")
    cfg = pipe.config
    fpb, table = cfg.frames_per_block, cfg.dit.rope_max_positions
    blocks = -(-args.frames // fpb)
    rng = np.random.default_rng(SEED)
    schedule = scenes.sample_schedule(
        rng, blocks, switch_prob=args.switch_prob, kinds=("color", "direction", "background"), min_gap=3
    )
    times = sorted(schedule)
    min_motion = 0.05 * min(cfg.height, cfg.width)
    print(
        f"model {args.model}: {cfg.width}x{cfg.height}, RoPE table {table} latent frames; "
        f"{blocks * fpb} latent frames ({scenes.num_video_frames(blocks * fpb) / cfg.fps / 60:.1f} min of video), "
        f"{len(schedule) - 1} prompt switches, {args.threads} torch thread(s)"
    )
    print(
        f"{'window':>13} {'colour':>7} {'backgr.':>7} {'direction':>9} {'wall ms':>8} {'CPU ms':>7} "
        f"{'RSS MB':>7} {'rebased':>7}"
    )

    gen = pipe.generator(seed=0)
    rows: list[dict[str, float]] = []
    color_ok: list[bool] = []
    bg_ok: list[bool] = []
    dir_ok: list[bool] = []
    block_s: list[float] = []
    block_cpu: list[float] = []
    rss: list[float] = []
    window_start = 0
    while gen.current_start_frame < blocks * fpb:
        s = gen.current_start_frame
        expected = scenes.scene_at(schedule, s, fpb)
        t0, c0 = time.perf_counter(), time.thread_time()
        block = gen.generate_block(schedule[max(t for t in times if t <= s)])
        block_s.append(time.perf_counter() - t0)
        block_cpu.append(time.thread_time() - c0)
        measures = checker.measure_frames(block.frames)
        color_ok += [m.color == expected.color for m in measures]
        bg_ok += [m.background == expected.background for m in measures]
        direction = checker.direction_of(*checker.motion(measures, cfg.height, cfg.width), min_motion)
        dir_ok.append(direction == expected.direction)
        rss.append(rss_mb())
        end = gen.current_start_frame
        if end - window_start >= args.window or end >= blocks * fpb:
            row = {
                "start": window_start,
                "end": end,
                "color": float(np.mean(color_ok)),
                "background": float(np.mean(bg_ok)),
                "direction": float(np.mean(dir_ok)),
                "block_ms": 1000 * statistics.median(block_s[1:] if window_start == 0 else block_s),
                "cpu_ms": 1000 * statistics.median(block_cpu[1:] if window_start == 0 else block_cpu),
                "rss": max(rss),
            }
            rows.append(row)
            print(
                f"{row['start']:>5}..{row['end'] - 1:<6} {row['color']:>7.1%} {row['background']:>7.1%} "
                f"{row['direction']:>9.1%} {row['block_ms']:>8.1f} {row['cpu_ms']:>7.1f} {row['rss']:>7.0f} "
                f"{'yes' if gen.cache.position_offset else 'no':>7}",
                flush=True,
            )
            color_ok, bg_ok, dir_ok, block_s, block_cpu, rss = [], [], [], [], [], []
            window_start = end

    first, last = rows[0], rows[-1]
    past = [r for r in rows if r["start"] >= table]
    worst = min(min(r["color"], r["background"], r["direction"]) for r in past) if past else float("nan")
    print(
        f"summary: {rows[-1]['end']} latent frames, {gen.recache_count} re-caches, position offset "
        f"{gen.cache.position_offset}; last window vs first: block CPU time {last['cpu_ms'] / first['cpu_ms']:.2f}x "
        f"(wall {last['block_ms'] / first['block_ms']:.2f}x), "
        f"peak RSS {last['rss'] / first['rss']:.2f}x; worst adherence past frame {table}: {worst:.1%}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
