"""Throughput of the embedded `demo` model: video frames per second through the runner's block loop.

    python benchmarks/bench_demo.py                   # 24 blocks with 1 and with 2 torch threads
    python benchmarks/bench_demo.py --blocks 48 --threads 1

The demo plays at 16 fps, so it streams in real time when it generates more than 16 video frames
per second. Each block is the whole runner path: few-step sampling with the cached DiT, the
context pass, the streaming VAE decode to uint8 frames; every 4th block switches the prompt (KV
re-cache). The thread counts are measured side by side: blocks alternate between one generator
per setting, so a shared machine's load changes hit both alike. The first block of each generator
is a warm-up and is not counted. Prints per-setting fps, the median block time and the ratio to
the 16 fps playback, then one `summary:` line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PLAYBACK_FPS = 16.0
PROMPTS = (
    "a red circle moving right on a black background",
    "a blue circle moving right on a black background",
    "a blue square moving down on a gray background",
    "a yellow triangle moving left on a navy background",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="model name or converted folder (default demo)")
    ap.add_argument("--blocks", type=int, default=24, help="measured blocks per thread setting")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to compare")
    args = ap.parse_args(argv)

    import torch

    from longlive_runner import load_pipeline

    t0 = time.perf_counter()
    pipe = load_pipeline(args.model, device="cpu")
    load_s = time.perf_counter() - t0
    cfg = pipe.config
    print(
        f"model {args.model}: {cfg.width}x{cfg.height}, {cfg.frames_per_block} latent frames per block, "
        f"loaded in {load_s:.2f} s"
    )
    gens = {n: pipe.generator(seed=n) for n in args.threads}
    times: dict[int, list[float]] = {n: [] for n in args.threads}
    frames: dict[int, int] = {n: 0 for n in args.threads}
    for b in range(args.blocks + 1):
        prompt = PROMPTS[(b // 4) % len(PROMPTS)]
        order = args.threads if b % 2 == 0 else list(reversed(args.threads))
        for n in order:
            torch.set_num_threads(n)
            t = time.perf_counter()
            block = gens[n].generate_block(prompt)
            dt = time.perf_counter() - t
            if b > 0:  # block 0 warms up
                times[n].append(dt)
                frames[n] += block.num_frames

    results = {}
    for n in args.threads:
        fps = frames[n] / sum(times[n])
        results[n] = fps
        print(
            f"threads {n}: {fps:6.1f} video fps ({fps / PLAYBACK_FPS:.1f}x the {PLAYBACK_FPS:.0f} fps playback), "
            f"median block {1000 * statistics.median(times[n]):.0f} ms for 12 frames"
        )
    best = max(results, key=results.get)
    summary = ", ".join(f"{results[n]:.1f} fps with {n} thread{'s' if n > 1 else ''}" for n in args.threads)
    ok = results[best] > PLAYBACK_FPS
    print(
        f"summary: demo throughput {summary}; best {results[best] / PLAYBACK_FPS:.1f}x real time "
        f"(target > 1x): {'PASS' if ok else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
