#!/usr/bin/env python
"""Evaluate the demo model on held-out prompt schedules with the analytic checker.

    PYTHONPATH=src python scripts/eval_demo.py [--model src/longlive_runner/assets/demo] [--videos 12]

For each video: a random schedule (seeded, disjoint from training's random streams) over
`--blocks` blocks with a prompt switch (colour, shape, direction or background) at some block
boundaries; the model streams it through `pipe.stream` (the runner's normal block loop: cached
few-step sampling, KV re-cache on switches, streaming VAE decode). Every frame is scored with
`longlive_runner.demo.checker`. Printed: per-attribute accuracy (object colour, background and
shape per frame, glide per frame pair, motion direction per block), switch latency in blocks
(0 = the new value shows in the first block after the boundary), the share of clean switches (no
jump, no blend frame, no ghost) and throughput.

`--preview` scores the DiT alone: its latents are drawn by `latent_preview` (the scene renderer,
from the scene the latent names) instead of the VAE decoder.

`--reference latents` scores the VAE decode of the ground-truth renders' latents instead (the
ceiling the DiT can reach through this decoder); `--reference encoder` the VAE's round trip.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from longlive_runner import load_pipeline  # noqa: E402
from longlive_runner.demo import checker, scenes  # noqa: E402
from longlive_runner.demo.latents import latent_preview, scene_latents  # noqa: E402
from longlive_runner.model.vae import to_uint8  # noqa: E402

DEFAULT_MODEL = ROOT / "src/longlive_runner/assets/demo"
EVAL_SEED = 20_260_000  # held out: training draws from other streams


def reference_frames(pipe, schedule, num_latent: int, kind: str) -> np.ndarray:
    cfg = pipe.config
    clip = scenes.render(schedule, num_latent, cfg.height, cfg.width)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
    raw = scene_latents(clip, cfg.height, cfg.width)
    with torch.no_grad():
        if kind == "preview":
            return latent_preview(raw, True, cfg.height, cfg.width)
        if kind == "encoder":
            z = pipe.vae.encode(video)
        else:
            z = (raw[None] - pipe.vae.latents_mean) / pipe.vae.latents_std
        return to_uint8(pipe.vae.decode(z))


class _PreviewDecoder:
    """Stands in for the generator's StreamingDecoder: latents -> `latent_preview` frames."""

    def __init__(self, vae, height: int, width: int) -> None:
        self.vae = vae
        self.size = (height, width)
        self.first = True

    def reset(self) -> None:
        self.first = True

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raw = z * self.vae.latents_std + self.vae.latents_mean
        frames = latent_preview(raw[0], self.first, *self.size)
        self.first = False
        return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)


def stream(pipe, schedule, num_latent: int, seed: int, preview: bool):
    """pipe.stream, optionally with the preview decoder swapped in."""
    if not preview:
        yield from pipe.stream(schedule, num_latent, seed=seed)
        return
    gen = pipe.generator(seed)
    gen._decoder = _PreviewDecoder(pipe.vae, pipe.config.height, pipe.config.width)
    times = sorted(schedule)
    while gen.current_start_frame < num_latent and gen.finished is None:
        s = gen.current_start_frame
        yield gen.generate_block(schedule[max(t for t in times if t <= s)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--switch-prob", type=float, default=0.3)
    ap.add_argument("--kinds", default="color,shape,direction,background")
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--reference",
        choices=("latents", "encoder", "preview"),
        default=None,
        help="score the VAE decode of the renders' true latents (latents), of their VAE encoding "
        "(encoder), or their latent_preview (preview: the ceiling of --preview)",
    )
    ap.add_argument(
        "--preview",
        action="store_true",
        help="score the DiT's latents through latent_preview, not the decoder",
    )
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--save-frames", type=Path, default=None, help="save the first video's frames (.npy)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    t0 = time.time()
    pipe = load_pipeline(args.model, device="cpu")
    load_s = time.time() - t0
    fpb = pipe.config.frames_per_block
    rng = np.random.default_rng(args.seed)
    kinds = tuple(args.kinds.split(","))

    color, bg, direction, shape, glide = [], [], [], [], []
    frame_shapes: list[tuple[str, str | None]] = []
    clean: dict[str, list] = defaultdict(list)
    latency: dict[str, list] = defaultdict(list)
    holds: dict[str, list] = defaultdict(list)
    gen_s, gen_frames, block_s = 0.0, 0, []
    for v in range(args.videos):
        sch = scenes.sample_schedule(rng, args.blocks, switch_prob=args.switch_prob, kinds=kinds)
        n_lat = args.blocks * fpb
        if args.reference:
            frames = reference_frames(pipe, sch, n_lat, args.reference)
        else:
            chunks = []
            t1 = time.time()
            for b in stream(pipe, sch, n_lat, v, args.preview):
                chunks.append(b.frames)
                t2 = time.time()
                block_s.append(t2 - t1)
                t1 = t2
            frames = np.concatenate(chunks)
            gen_s += sum(block_s[-len(chunks) :])
            gen_frames += len(frames)
        if args.save_frames is not None and v == 0:
            np.save(args.save_frames, frames)
        sc = checker.score(frames, sch, frames_per_block=fpb)
        color.append(sc.color_acc)
        bg.append(sc.background_acc)
        direction.append(sc.direction_acc)
        shape.append(sc.shape_acc)
        frame_shapes.extend(sc.frame_shapes)
        glide.append(sc.glide_acc)
        for sw in sc.switches:
            clean["all"].append(sw.clean)
            clean["no jump"].append(sw.no_jump)
            clean["no blend"].append(sw.no_blend)
            clean["no ghost"].append(sw.no_ghost)
            for attr in sw.changed:
                clean[attr].append(sw.clean)
            for attr, lat in sw.latency.items():
                latency[attr].append(lat)
                holds[attr].append(sw.holds[attr])
        print(f"video {v}: {sc.summary().splitlines()[0]}", flush=True)

    res: dict = {
        "model": args.model,
        "videos": args.videos,
        "blocks_per_video": args.blocks,
        "object_color_acc": float(np.mean(color)),
        "background_acc": float(np.mean(bg)),
        "direction_acc": float(np.mean(direction)),
        "shape_acc": float(np.mean(shape)),
        # per prompt shape: frames read as each template (None: no shape matched)
        "shape_read_as": {
            want: dict(Counter(str(got) for w, got in frame_shapes if w == want))
            for want in sorted({w for w, _ in frame_shapes})
        },
        "glide_acc": float(np.mean(glide)),
        "clean_switches": {k: {"count": len(v), "rate": float(np.mean(v))} for k, v in clean.items()},
        "switches": {},
    }
    for attr, lats in latency.items():
        ok = [x for x in lats if x is not None]
        res["switches"][attr] = {
            "count": len(lats),
            "latency0": float(np.mean([x == 0 for x in lats])),
            "mean_latency_blocks": float(np.mean(ok)) if ok else None,
            "never": int(sum(x is None for x in lats)),
            "holds": float(np.mean(holds[attr])),
        }
    if gen_frames:
        res["throughput_fps"] = gen_frames / gen_s
        res["block_ms_median"] = 1000 * float(np.median(block_s))
        res["load_s"] = load_s
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
