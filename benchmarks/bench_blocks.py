"""Per-block latency and process memory over a long run: does the rolling KV cache keep both flat?

    python benchmarks/bench_blocks.py                 # tiny preset, 211 blocks, CPU, 1 torch thread
    python benchmarks/bench_blocks.py --blocks 300 --device cuda --model PATH

Prints a table every `--every` blocks, then the three ratios the model core promises:
  * block time at block 200 vs block 20 (median of the 11 blocks around each), target within 5%;
  * peak process memory at block 200 vs block 50, target within 5%;
  * a prompt switch (KV re-cache + block) vs a normal block (medians), target at most 2x.
Every 10th block switches between two prompts, so both kinds of block are measured side by side.

Block 20 and block 200 of one run are minutes apart, and a shared machine's load changes within
minutes. So the time ratio is also measured side by side: after the run, a second generator is
taken to block 15, then blocks of the young video (15..) and of the old one (past 200)
alternate, one each (which one goes first alternates too), `--pairs` times; the median of the
per-pair ratios old/young is `time_ratio_sbs`, the one judged against the target (the sequential
ratio is printed too). Both use blocks without a prompt switch. Single pairs vary by +-15% here,
hence 25 pairs.

`--threads` defaults to 1: on a 2-core machine shared with other work, torch's default (one
thread per core) ran a tiny block 3.2x slower (median 2789 vs 862 ms, 6x the CPU time; see
docs/performance.md). Pass `--threads 0` for torch's default.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

from _machine import cpu_model  # this folder is sys.path[0] when a script here runs


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Peak RSS of this process: VmHWM. (`ru_maxrss` of a process started by fork+exec includes
    its parent's high-water mark, e.g. run_all.py's, which could hide growth here.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--blocks", type=int, default=211)
    ap.add_argument("--switch-every", type=int, default=10)
    ap.add_argument("--every", type=int, default=20, help="print a row every N blocks")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    ap.add_argument("--pairs", type=int, default=25, help="young/old block pairs timed side by side")
    args = ap.parse_args()
    if args.blocks < 211:
        ap.error("--blocks must be at least 211 (block 200 is measured with 10 blocks after it)")

    import torch

    from longlive_runner import load_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline(args.model, device=args.device)
    cuda = pipe.device.type == "cuda"
    gen = pipe.generator(seed=0)
    prompts = [
        "a red circle moving left on a black background",
        "a blue square moving up on a gray background",
    ]

    times: list[float] = []
    switched: list[bool] = []
    peak: dict[int, float] = {}
    print(f"# {args.model} on {pipe.device}, {os.cpu_count()} cores ({cpu_model()}), "
          f"torch threads {torch.get_num_threads()}, nice {os.nice(0)}")  # fmt: skip
    print(f"{'block':>6} {'frame':>6} {'ms':>8} {'switch':>6} {'rss MiB':>9} {'peak MiB':>9}")
    for b in range(args.blocks):
        prompt = prompts[(b // args.switch_every) % 2]
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        block = gen.generate_block(prompt)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        switched.append(block.switched)
        peak[b] = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
        if b % args.every == 0 or b == args.blocks - 1:
            print(f"{b:>6} {block.start_frame:>6} {times[-1] * 1e3:>8.1f} {str(block.switched):>6} "
                  f"{rss_mib():>9.1f} {peak[b]:>9.1f}")  # fmt: skip

    def median_around(i: int) -> float:
        window = [times[j] for j in range(i - 5, i + 6) if not switched[j]]
        return statistics.median(window)

    normal = statistics.median(t for t, s in zip(times[20:], switched[20:]) if not s)
    switch = statistics.median(t for t, s in zip(times[20:], switched[20:]) if s)
    t20, t200 = median_around(20), median_around(200)
    m50, m200 = peak[50], peak[200]
    fps = sum(pipe.config.video_frames_for_block(3) for _ in times[20:]) / sum(times[20:])

    # Side by side: a young video (blocks 15..) and this old one (blocks >= --blocks), alternating.
    def timed(g: object, prompt: str) -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        g.generate_block(prompt)  # type: ignore[attr-defined]
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    young_gen = pipe.generator(seed=1)
    old_prompt = gen.prompt
    for _ in range(15):
        young_gen.generate_block(prompts[0])
    young: list[float] = []
    old: list[float] = []
    for i in range(args.pairs):  # alternate which goes first, so that neither is favoured
        if i % 2 == 0:
            young.append(timed(young_gen, prompts[0]))
            old.append(timed(gen, old_prompt))
        else:
            old.append(timed(gen, old_prompt))
            young.append(timed(young_gen, prompts[0]))
    sbs = statistics.median(o / y for o, y in zip(old, young))
    print()
    print(
        f"block time   @20 {t20 * 1e3:8.2f} ms   @200 {t200 * 1e3:8.2f} ms   ratio {t200 / t20:.3f}  (sequential, minutes apart)"
    )
    print(
        f"side by side young @{young_gen.current_start_frame // 3 - args.pairs}.. {statistics.median(young) * 1e3:8.2f} ms   "
        f"old @{gen.current_start_frame // 3 - args.pairs}.. {statistics.median(old) * 1e3:8.2f} ms   ratio {sbs:.3f}  "
        f"(median of {args.pairs} per-pair ratios; target 0.95-1.05)"
    )
    print(f"peak memory  @50 {m50:8.1f} MiB  @200 {m200:8.1f} MiB  ratio {m200 / m50:.3f}  (target <= 1.05)")
    print(
        f"switch block {switch * 1e3:8.2f} ms   normal {normal * 1e3:8.2f} ms   ratio {switch / normal:.3f}  (target <= 2.0)"
    )
    print(f"throughput   {fps:.1f} video frames/s (steady state, {pipe.config.fps} fps playback)")
    ok = abs(sbs - 1) <= 0.05 and m200 / m50 <= 1.05 and switch / normal <= 2.0
    print(f"summary: time_ratio={t200 / t20:.3f} time_ratio_sbs={sbs:.3f} mem_ratio={m200 / m50:.3f} "
          f"switch_ratio={switch / normal:.3f} fps={fps:.1f} cores={os.cpu_count()} threads={torch.get_num_threads()} "
          f"{'PASS' if ok else 'MISS'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
