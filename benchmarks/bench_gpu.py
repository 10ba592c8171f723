"""The full LongLive architecture (1.3B, or 2.0's 5B), random weights, block by block: frames per second.

    python benchmarks/bench_gpu.py                         # CUDA: 1.3B at 480x832, bf16, as in the paper
    python benchmarks/bench_gpu.py --model longlive2-5b    # CUDA: LongLive 2.0 (Wan2.2-TI2V-5B) at 704x1280
    python benchmarks/bench_gpu.py --model longlive2-5b --height 480 --width 832    # 2.0 at 480p
    python benchmarks/bench_gpu.py --height 64 --width 112 --blocks 4 --warmup 1 --switch-every 2 \
        --layers 2 --threads 1                             # CPU smoke run (CI size): about 1 min

Speed does not depend on the weights' values, so random weights of the real shapes measure the
real cost. The DiT (30 layers, dim 1536) and the VAE are full size; the text encoder is cut to one
umT5 layer of the real width, because it runs once per distinct prompt, outside the block loop.
Prints block latency p50/p99, video frames per second, peak GPU memory and the cost of a prompt
switch (KV re-cache + block) against a normal block. Anchor: LongLive's paper reports 20.7 FPS on
one H100 in bf16.

`--model longlive2-5b`: chunks of 8 latent frames (29 video frames for the first, 32 after: the
decoder runs continuously), 4 UniPC forwards + 1 clean pass each; the "switch" is a new shot
(the "The scene transitions. " prefix: shot sink pinned, RoPE offset), which costs no re-cache.
Anchors: 24.8 FPS claimed (bf16, hardware not named); 18.6 FPS measured by a user on an H100 for
the denoising loop alone (NVlabs/LongLive issue #103). Memory: DiT 10.0 GB + one KV cache 9.7 GiB
at 704x1280 (+ the VAE's decode activations; the text encoder here is one layer).

`--layers N` keeps only N of the DiT's 30 blocks: for the CPU smoke run only (the full DiT takes
over 100 s per 64x112 block on 2 CPU cores). Its figures check that the script runs; they are not
speed figures of the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

PAPER_FPS_H100 = 20.7
# LongLive 2.0: the README's claim (hardware not named) and a user's H100 measurement (issue #103).
ANCHORS = {
    "longlive-1.3b": (PAPER_FPS_H100, "the paper, one H100"),
    "longlive2-5b": (24.8, "the README's claim, hardware not named; a user measured 18.6 on an H100"),
}


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument(
        "--model", choices=sorted(ANCHORS), default="longlive-1.3b", help="architecture (default 1.3B)"
    )
    ap.add_argument("--height", type=int, default=None, help="default: the model's (480 / 704)")
    ap.add_argument("--width", type=int, default=None, help="default: the model's (832 / 1280)")
    ap.add_argument("--blocks", type=int, default=40, help="blocks to time (after --warmup)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--switch-every", type=int, default=8)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default=None)
    ap.add_argument(
        "--layers", type=int, default=None, help="DiT blocks kept (default: all 30; CPU smoke runs)"
    )
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    import torch

    from longlive_runner.model.config import get_preset
    from longlive_runner.model.pipeline import random_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.dtype]
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    base = get_preset(args.model)
    args.height = args.height or base.height
    args.width = args.width or base.width
    layers = args.layers or base.dit.num_layers
    config = dataclasses.replace(
        base,
        name=f"{args.model}-random",
        dit=dataclasses.replace(base.dit, num_layers=layers),
        t5=dataclasses.replace(base.t5, vocab_size=384, num_layers=1),
        stream=dataclasses.replace(base.stream, height=args.height, width=args.width),
    )
    t0 = time.perf_counter()
    pipe = random_pipeline(config, device=device, dtype=dtype, init_seed=0)
    build_s = time.perf_counter() - t0
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores)"
    reduced = (
        ""
        if layers == base.dit.num_layers
        else f" REDUCED to {layers} of {base.dit.num_layers} DiT blocks (smoke run)"
    )
    print(
        f"# {args.model} architecture{reduced}, random weights, {args.height}x{args.width}, {dtype}, {name}"
    )
    print(
        f"# built in {build_s:.1f} s; DiT {sum(p.numel() for p in pipe.dit.parameters()) / 1e9:.3f} B parameters"
    )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    gen = pipe.generator(seed=0)
    prompts = ["a red circle moving left", "a blue square moving up"]
    if config.is_v2:  # 2.0: a change of prompt is a new shot (the prefix), no re-cache
        assert config.stream.shot_prefix is not None
        prompts[1] = config.stream.shot_prefix + prompts[1]
    for _ in range(args.warmup):
        gen.generate_block(prompts[0])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    normal: list[float] = []
    switch: list[float] = []
    frames = 0
    total = 0.0
    for b in range(args.blocks):
        prompt = prompts[(b // args.switch_every) % 2]
        sync()
        t = time.perf_counter()
        block = gen.generate_block(prompt)
        sync()
        dt = time.perf_counter() - t
        total += dt
        frames += block.num_frames
        (switch if block.switched else normal).append(dt)
        kind = ("shot" if block.new_shot else "switch") if block.switched else ""
        print(f"block {block.start_frame:>5}  {dt * 1e3:9.1f} ms  {kind}")
    fps = frames / total
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if cuda else float("nan")
    p50, p99 = percentile(normal, 50), percentile(normal, 99)
    sw = statistics.median(switch) if switch else float("nan")
    print()
    print(f"block latency p50 {p50 * 1e3:.1f} ms  p99 {p99 * 1e3:.1f} ms  (normal blocks, n={len(normal)})")
    anchor, source = ANCHORS[args.model]
    what = "new shot" if config.is_v2 else "prompt switch"
    print(f"{what} {sw * 1e3:.1f} ms = {sw / p50:.2f}x a normal block (n={len(switch)})")
    print(f"throughput {fps:.2f} video frames/s  (anchor {anchor} from {source}; ratio {fps / anchor:.2f})")
    print(f"peak GPU memory {peak:.2f} GB" if cuda else "peak GPU memory n/a (CPU)")
    print(f"summary: model={args.model} device={name!r} res={args.height}x{args.width} layers={layers} fps={fps:.2f} p50_ms={p50 * 1e3:.1f} "
          f"p99_ms={p99 * 1e3:.1f} switch_ratio={sw / p50:.2f} peak_gb={peak:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
