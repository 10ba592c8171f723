#!/usr/bin/env python
"""Train the embedded `demo` model on synthetic scenes (CPU only, reproducible from --seed).

    PYTHONPATH=src python scripts/train_demo.py --seed 0 --out src/longlive_runner/assets/demo

    # or the two independent stages in parallel (2 cores), then the small assemble step:
    PYTHONPATH=src python scripts/train_demo.py --stage vae --out DIR &
    PYTHONPATH=src python scripts/train_demo.py --stage dit --out DIR; wait
    PYTHONPATH=src python scripts/train_demo.py --stage assemble --out DIR

Everything uses the runner's own model classes (`WanVAE`, `CausalWanDiT`, `UMT5Encoder`) and
writes our converted folder: config.json, dit/vae/t5.safetensors (float32), tokenizer.json.

Latent space. A Wan VAE trained from scratch as an autoencoder stays on the "mean colour"
plateau for hundreds of steps, far beyond a CPU budget of minutes. So the latent space is a
fixed analytic encoding (`longlive_runner.demo.latents.analytic_latents`: per 8x8 cell and
latent frame, the colours of its four 4x4 quadrants, the colour change over the latent's
frames, an edge measure: 16 channels, the Wan VAE's 8x / causal 4x layout), normalised with
per-channel statistics of a fixed sample (the config's latents_mean / latents_std).

1. **VAE** (`WanVAE`, base_dim 8, one residual block per level): the decoder learns to turn
   (slightly noised) analytic latents into frames (weighted L1 + L2, overshoot of saturated
   pixels free since the runner clamps), the encoder learns to reproduce the analytic latents;
   both run chunk by chunk through the runner's causal-cache code path.
2. **DiT + umT5** (`CausalWanDiT`, 4 layers of dim 96; `UMT5Encoder`, 2 layers of dim 64),
   trained jointly by teacher forcing on the latents of long rendered clips (prompt switches
   at block boundaries). One sequence holds the clean frames of the blocks in context plus a
   noisy copy of each target block at the same RoPE positions; a frame mask reproduces what
   the KV cache shows at run time:
     * a clean block attends to the frame sink (block 0) and the window (the two previous
       blocks and itself), as in its context pass;
     * a noisy block attends to the clean sink and window and to itself, as in its denoising
       forwards;
     * after a prompt switch at block k, the clean frames [max(0, 3k-12), 3k) attend to each
       other with no mask under the new prompt (the KV re-cache); sink K/V outside that range
       keep the causal pattern;
     * positions of the blocks after the sink are sometimes shifted far (as in a long video
       whose middle was evicted), so the sink works at any RoPE distance.
   Loss: flow matching (predicted v, x0 = x_t - sigma*v, loss on x0) at exactly the runner's 4
   warped sigmas (1, 0.9375, 0.8333, 0.625), weighted towards the last one, whose x0 is the
   output. Clean context frames get small noise (kept at t=0) so the model tolerates its own
   outputs. The runner samples with the preset's default step list (1000, 750, 500, 250),
   shift 5.

Threads: 1 per process by default. On a shared, oversubscribed 2-core machine one thread per
process was 4-10x faster than two (OpenMP barriers stall when a thread is descheduled); the
two stages are independent, so running them in parallel uses both cores.

Run time (measured on the shared 2-core machine, 1 thread per stage, stages in parallel):
VAE 500 steps ~15 min, DiT 450 steps ~13 min; continuation rounds (--vae-init / --dit-init)
~10 min each. The log prints it.

STATUS (work in progress): the weights produced so far do NOT meet the demo's targets. The
decoder reproduces background colour and object shape/motion but not the object colour, and the
DiT (after ~1500 steps) paints object-coloured noise rather than one clean object; see the
report that came with this script. Not shipped in the package yet.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from longlive_runner.checkpoints import CONVERTED_CONFIG, CONVERTED_FILES, CONVERTED_TOKENIZER  # noqa: E402
from longlive_runner.config import DiTConfig, PipelineConfig, StreamConfig, T5Config, VAEConfig  # noqa: E402
from longlive_runner.demo import scenes  # noqa: E402
from longlive_runner.demo.latents import analytic_latents  # noqa: E402
from longlive_runner.demo.tokenizer import build_demo_tokenizer  # noqa: E402
from longlive_runner.models.dit import CausalWanDiT, attention, rope_pairs  # noqa: E402
from longlive_runner.models.t5 import UMT5Encoder  # noqa: E402
from longlive_runner.models.vae import WanVAE  # noqa: E402
from longlive_runner.scheduler import denoising_sigmas  # noqa: E402
from longlive_runner.tokenizer import TextTokenizer  # noqa: E402

FPB = 3  # latent frames per block
TEMPORAL = 4


def demo_config(latents_mean=None, latents_std=None) -> PipelineConfig:
    z = 16
    return PipelineConfig(
        name="demo",
        dit=DiTConfig(dim=96, ffn_dim=384, num_heads=4, num_layers=4, text_dim=64, text_len=16, freq_dim=64),
        vae=VAEConfig(
            z_dim=z,
            base_dim=8,
            dim_mult=(1, 2, 4, 4),
            num_res_blocks=1,
            latents_mean=tuple(latents_mean) if latents_mean is not None else (0.0,) * z,
            latents_std=tuple(latents_std) if latents_std is not None else (1.0,) * z,
        ),
        t5=T5Config(vocab_size=32, dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_len=16),
        stream=StreamConfig(height=64, width=64),
    )


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# Data
def random_clip(
    rng: np.random.Generator, num_latent: int, h: int, w: int, switch_prob: float, random_start: bool
):
    nb = math.ceil(num_latent / FPB)
    sch = scenes.sample_schedule(
        rng, nb, switch_prob=switch_prob, kinds=("color", "shape", "direction", "background")
    )
    start = (rng.uniform(0, w), rng.uniform(0, h)) if random_start else None
    clip = scenes.render(sch, num_latent, h, w, start=start)
    return sch, clip


def to_video(frames: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> float [3, T, H, W] in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


# ----------------------------------------------------------------------------------------------
# The latent space: a fixed analytic encoding that the Wan decoder (and encoder) learn
def latent_stats(seed: int, h: int, w: int, clips: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std of the analytic latents of a fixed sample of clips (the config's
    latents_mean / latents_std), identical in every stage."""
    rng = np.random.default_rng([seed, 9])
    vids = torch.stack([to_video(random_clip(rng, 12, h, w, 0.35, False)[1].frames) for _ in range(clips)])
    z = analytic_latents(vids)
    return z.mean(dim=(0, 2, 3, 4)), z.std(dim=(0, 2, 3, 4)).clamp(min=1e-2)


# VAE training path = the runner's chunked causal path (same modules, same caches), with gradients
def vae_encode_mu(vae: WanVAE, video: torch.Tensor) -> torch.Tensor:
    cache: dict = {}
    chunks = [video[:, :, :1], *video[:, :, 1:].split(TEMPORAL, dim=2)]
    x = torch.cat([vae.encoder(c, cache) for c in chunks], dim=2)
    return vae.conv1(x)[:, : vae.cfg.z_dim]


def vae_decode_raw(vae: WanVAE, z: torch.Tensor) -> torch.Tensor:
    x = vae.conv2(z)
    cache: dict = {}
    return torch.cat([vae.decoder(x[:, :, i : i + 1], cache) for i in range(x.shape[2])], dim=2)


def train_vae(
    vae: WanVAE,
    cfg: PipelineConfig,
    rng: np.random.Generator,
    steps: int,
    batch: int,
    encoder_every: int,
    lr: float = 3e-3,
) -> None:
    """Decoder: analytic latents (+ noise) -> frames. Encoder (every `encoder_every` steps):
    frames -> analytic latents. Both through the runner's chunked causal code."""
    if steps <= 0:
        return
    h, w = cfg.height, cfg.width
    std = torch.tensor(cfg.vae.latents_std).view(1, -1, 1, 1, 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.time()
    avg = enc_avg = 0.0
    for step in range(steps):
        vids = []
        for _ in range(batch):
            _, clip = random_clip(rng, 3, h, w, switch_prob=0.5, random_start=True)  # 9 frames
            vids.append(to_video(clip.frames))
        x = torch.stack(vids)
        z = analytic_latents(x)
        # the DiT's latents are not exact: decode from slightly noisy ones
        z_in = z + std * (0.1 * torch.rand(()) * torch.randn_like(z))
        out = vae_decode_raw(vae, z_in)
        # the runner clamps decoded pixels to [-1, 1]: overshooting a saturated target costs nothing
        # (a plain clamp would also kill the gradient of pixels stuck on the wrong side)
        err = out - x
        err = torch.where(((x >= 1) & (err > 0)) | ((x <= -1) & (err < 0)), torch.zeros_like(err), err)
        fg = ((x - x[..., :1, :1]).abs().sum(1, keepdim=True) > 0.1).float()  # object pixels count more
        wt = 1.0 + 4.0 * fg
        loss = (wt * (err.abs() + 2.0 * err**2)).mean() / wt.mean()
        # colour of regions, a smoother target than single pixels
        pooled = F.avg_pool3d(out.clamp(-1, 1) - x, (1, 4, 4))
        loss = loss + 4.0 * (pooled**2).mean()
        if encoder_every and step % encoder_every == 0:
            mu = vae_encode_mu(vae, x)
            enc = (((mu - z) / std) ** 2).mean()
            loss = loss + enc
            enc_avg = enc.item() if step == 0 else 0.7 * enc_avg + 0.3 * enc.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 5.0)
        opt.step()
        sched.step()
        l1 = (out.detach().clamp(-1, 1) - x).abs().mean().item()
        avg = l1 if step == 0 else 0.9 * avg + 0.1 * l1
        if step % 10 == 0 or step == steps - 1:
            log(
                f"vae step {step}/{steps} decoder L1 ema {avg:.4f} encoder mse {enc_avg:.4f} ({time.time() - t0:.0f}s)"
            )


# ----------------------------------------------------------------------------------------------
# DiT teacher forcing
def rope_for_positions(dit: CausalWanDiT, positions: torch.Tensor, h: int, w: int):
    """cos, sin [B, F*h*w, 1, D/2] for per-sample latent-frame positions [B, F] (same layout as dit.rope)."""
    ct, ch, cw = rope_pairs(dit.cfg.head_dim)
    table = dit.rope_freqs  # [2, P, D/2]
    B, f = positions.shape
    t_part = table[:, positions, :ct]  # [2, B, f, ct]
    t_part = t_part[:, :, :, None, None].expand(2, B, f, h, w, ct)
    h_part = table[:, :h, ct : ct + ch][:, None, None, :, None].expand(2, B, f, h, w, ch)
    w_part = table[:, :w, ct + ch :][:, None, None, None, :].expand(2, B, f, h, w, cw)
    cos, sin = torch.cat([t_part, h_part, w_part], dim=-1).reshape(2, B, f * h * w, 1, -1)
    return cos, sin


def dit_train_forward(dit: CausalWanDiT, x, t, context, frame_mask, positions):
    """Like dit.forward with a frame mask, but per-sample masks [B, F, F] and RoPE positions [B, F]."""
    tokens, grid = dit.patchify(x)
    f, gh, gw = grid
    rope = rope_for_positions(dit, positions, gh, gw)
    e, e0 = dit.embed_time(t)
    ctx = dit.text_embedding(context)
    T = gh * gw
    mask = frame_mask.repeat_interleave(T, 1).repeat_interleave(T, 2)[:, None]  # [B, 1, S, S]
    for block in dit.blocks:
        tokens = block(tokens, e0, rope, block.cross_attn.kv(ctx), lambda q, k, v: attention(q, k, v, mask))
    return dit.unpatchify(dit.head(tokens, e), grid)


def switch_blocks(schedule: dict[int, str]) -> list[int]:
    return sorted(t // FPB for t in schedule if t > 0)


def build_example(
    nb: int, schedule: dict[int, str], rng: random.Random, context_blocks: int, end: int | None = None
):
    """Pick an end block E and lay out one teacher-forcing sequence.

    Returns (units, mask, prompt, targets): units = list of (kind, block, position_block) with kind
    'c' (clean) or 'n' (noisy); mask = bool [U, U] unit-level attention.
    """
    E = end if end is not None else rng.randint(1, nb)
    sw = [k for k in switch_blocks(schedule) if k <= E - 1]
    k = sw[-1] if sw else 0
    lo = max(0, E - context_blocks)
    if k > 0:
        lo = max(lo, k - 4)
    included = sorted({0, *range(lo, E)})
    R = set(range(max(0, k - 4), k)) if k > 0 else set()

    def visible(b: int) -> set[int]:
        return {c for c in (0, b - 2, b - 1, b) if c >= 0}

    inc = set(included)
    targets = [b for b in range(lo, E) if b >= k and visible(b) <= inc]
    if not targets:
        targets = [E - 1] if (E - 1) >= k else []
    # positions: shift everything after the sink far away sometimes (a long video's evicted middle)
    shift = 0
    if lo >= 2 and rng.random() < 0.5:
        shift = rng.randint(0, 300)
    units = [("c", b, b if b == 0 else b + shift) for b in included] + [
        ("n", b, b if b == 0 else b + shift) for b in targets
    ]
    U = len(units)
    mask = np.zeros((U, U), dtype=bool)
    for i, (ki, bi, _) in enumerate(units):
        for j, (kj, bj, _) in enumerate(units):
            if ki == "c":
                if kj != "c":
                    continue
                if k > 0 and bi < k:
                    ok = (bj in R) if bi in R else (bj == 0)
                else:
                    ok = bj in visible(bi) and (bj >= k or bj == 0 or bj in R)
            else:
                ok = (kj == "c" and bj in visible(bi) and bj != bi) or (kj == "n" and bj == bi)
            mask[i, j] = ok
    prompt = schedule[max(t for t in schedule if t <= E * FPB - FPB)] if E > 0 else schedule[0]
    return units, mask, prompt, targets


class DitData:
    def __init__(self, latents: torch.Tensor, schedules: list[dict[int, str]], tokenizer: TextTokenizer):
        self.latents = latents  # [N, C, F, h, w] normalised
        self.schedules = schedules
        self.tok = tokenizer
        self.nb = latents.shape[2] // FPB

    def batch(
        self, rng: random.Random, size: int, sigmas: list[float], ctx_noise: float, context_blocks: int
    ):
        exs = []
        for _ in range(size):
            i = rng.randrange(len(self.schedules))
            exs.append((i, *build_example(self.nb, self.schedules[i], rng, context_blocks)))
        U = max(len(e[1]) for e in exs)
        C, _, h, w = self.latents.shape[1:]
        B = size
        x = torch.zeros(B, C, U * FPB, h, w)
        x0 = torch.zeros_like(x)
        t = torch.zeros(B, U * FPB)
        pos = torch.zeros(B, U * FPB, dtype=torch.long)
        fmask = torch.zeros(B, U * FPB, U * FPB, dtype=torch.bool)
        wts = torch.zeros(B, U * FPB)
        prompts = []
        for n, (i, units, mask, prompt, _) in enumerate(exs):
            lat = self.latents[i]
            m = torch.from_numpy(mask).repeat_interleave(FPB, 0).repeat_interleave(FPB, 1)
            u = len(units)
            fmask[n, : u * FPB, : u * FPB] = m
            for j in range(u, U):  # padding: attends to itself only
                fmask[n, j * FPB : (j + 1) * FPB, j * FPB : (j + 1) * FPB] = True
            for j, (kind, b, pb) in enumerate(units):
                sl = slice(j * FPB, (j + 1) * FPB)
                clean = lat[:, b * FPB : (b + 1) * FPB]
                pos[n, sl] = torch.arange(pb * FPB, pb * FPB + FPB)
                if kind == "c":
                    x[n, :, sl] = clean + ctx_noise * torch.randn_like(clean) * rng.random()
                else:
                    si = rng.randrange(len(sigmas))
                    s = sigmas[si]
                    eps = torch.randn_like(clean)
                    x[n, :, sl] = (1 - s) * clean + s * eps
                    x0[n, :, sl] = clean
                    t[n, sl] = s * 1000.0
                    wts[n, sl] = SIGMA_WEIGHTS[si]
            prompts.append(prompt)
        return x, x0, t, pos, fmask, wts, prompts


SIGMA_WEIGHTS = [0.5, 0.5, 1.0, 2.0]  # x0-space loss weight per sampling step (the last gives the output)


def encode_text(t5: UMT5Encoder, tok: TextTokenizer, prompts: list[str]) -> torch.Tensor:
    ids, mask = tok(prompts)
    feats = t5(ids, mask)
    return feats.masked_fill(mask[..., None] == 0, 0.0)


def dit_loss(dit, t5, tok, batch):
    x, x0, t, pos, fmask, wts, prompts = batch
    ctx = encode_text(t5, tok, prompts)
    v = dit_train_forward(dit, x, t, ctx, fmask, pos)
    sig = (t / 1000.0)[:, None, :, None, None]
    x0_pred = x - sig * v
    # the object covers a few cells of a plain frame: weight the cells that differ from the
    # frame's typical (background) cell, or the model settles for painting the background
    quad = x0[:, :12]
    dev = (quad - quad.flatten(3).median(dim=3).values[..., None, None]).abs().mean(1)  # [B, F, h, w]
    cell_w = 1.0 + 8.0 * (dev / 0.5).clamp(max=1.0)
    err = (((x0_pred - x0) ** 2).mean(dim=1) * cell_w).mean(dim=(2, 3)) / cell_w.mean(dim=(2, 3))  # [B, F]
    return (err * wts).sum() / wts.sum().clamp(min=1e-6)


def train_dit(
    dit, t5, tok, data: DitData, cfg, rng: random.Random, steps: int, batch: int, lr: float, label: str
):
    if steps <= 0:
        return
    params = list(dit.parameters()) + list(t5.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    sigmas = denoising_sigmas(cfg.stream)
    t0 = time.time()
    avg = None
    for step in range(steps):
        b = data.batch(rng, batch, sigmas, ctx_noise=0.1, context_blocks=5)
        loss = dit_loss(dit, t5, tok, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        avg = loss.item() if avg is None else 0.95 * avg + 0.05 * loss.item()
        if step % 10 == 0 or step == steps - 1:
            log(f"{label} step {step}/{steps} loss {avg:.4f} ({time.time() - t0:.0f}s)")


# ----------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "src/longlive_runner/assets/demo")
    ap.add_argument(
        "--stage",
        choices=("all", "vae", "dit", "assemble"),
        default="all",
        help="vae / dit write their part into --out (they are independent: run them in parallel), "
        "assemble writes config.json and tokenizer.json; all = the three in turn",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-steps", type=int, default=500)
    ap.add_argument("--vae-batch", type=int, default=2)
    ap.add_argument("--vae-lr", type=float, default=3e-3)
    ap.add_argument("--vae-init", type=Path, default=None, help="continue from this vae.safetensors")
    ap.add_argument(
        "--encoder-every", type=int, default=3, help="train the VAE encoder every N decoder steps"
    )
    ap.add_argument("--clips", type=int, default=320, help="long clips rendered for DiT training")
    ap.add_argument("--clip-blocks", type=int, default=10)
    ap.add_argument("--dit-steps", type=int, default=450)
    ap.add_argument("--dit-batch", type=int, default=6)
    ap.add_argument("--dit-lr", type=float, default=3e-3)
    ap.add_argument(
        "--dit-init", type=Path, default=None, help="continue from the dit/t5 files of this folder"
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    t_start = time.time()
    base = demo_config()
    h, w = base.height, base.width
    mean, std = latent_stats(args.seed, h, w)
    cfg = demo_config(mean.tolist(), std.tolist())
    cfg.validate()
    args.out.mkdir(parents=True, exist_ok=True)
    stages = ("vae", "dit", "assemble") if args.stage == "all" else (args.stage,)

    def save(part: str, module: torch.nn.Module) -> None:
        state = {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(args.out / CONVERTED_FILES[part]))

    if "vae" in stages:
        torch.manual_seed(args.seed + 1)
        vae = WanVAE(cfg.vae)
        vae_rng = np.random.default_rng([args.seed, 1])
        if args.vae_init is not None:  # a continuation round: its own random stream
            vae.load_state_dict(load_file(str(args.vae_init)))
            vae_rng = np.random.default_rng([args.seed, 11])
        train_vae(vae, cfg, vae_rng, args.vae_steps, args.vae_batch, args.encoder_every, args.vae_lr)
        save("vae", vae)
        log(f"VAE done ({time.time() - t_start:.0f}s)")

    if "dit" in stages:
        torch.manual_seed(args.seed + 2)
        rng = np.random.default_rng([args.seed, 2])
        nl = args.clip_blocks * FPB
        schedules, latents = [], []
        for _ in range(args.clips):
            sch, clip = random_clip(rng, nl, h, w, switch_prob=0.35, random_start=False)
            schedules.append(sch)
            latents.append(analytic_latents(to_video(clip.frames)[None]))
        z = torch.cat(latents)
        z = (z - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)
        log(f"rendered {len(schedules)} clips of {nl} latent frames ({time.time() - t_start:.0f}s)")

        tok = TextTokenizer(build_demo_tokenizer(), cfg.t5.text_len)
        dit = CausalWanDiT(cfg.dit)
        t5 = UMT5Encoder(cfg.t5)
        with torch.no_grad():  # a small output head to start
            dit.head.head.weight.mul_(0.1)
        if args.dit_init is not None:  # a continuation round: its own random stream
            dit.load_state_dict(load_file(str(args.dit_init / CONVERTED_FILES["dit"])))
            t5.load_state_dict(load_file(str(args.dit_init / CONVERTED_FILES["t5"])))
            torch.manual_seed(args.seed + 12)
            # self-check: the training forward equals dit.forward for contiguous positions
            xx = torch.randn(1, 16, 6, cfg.latent_height, cfg.latent_width)
            tt = torch.rand(1, 6) * 1000
            cc = torch.randn(1, cfg.dit.text_len, cfg.dit.text_dim)
            fm = torch.tril(torch.ones(6, 6, dtype=torch.bool))
            ref = dit(xx, tt, cc, fm)
            got = dit_train_forward(dit, xx, tt, cc, fm[None], torch.arange(6)[None])
            assert torch.allclose(ref, got, atol=1e-5), (ref - got).abs().max()
        data = DitData(z, schedules, tok)
        py_rng = random.Random(args.seed * 1000 + (13 if args.dit_init is not None else 3))
        train_dit(dit, t5, tok, data, cfg, py_rng, args.dit_steps, args.dit_batch, args.dit_lr, "dit")
        save("dit", dit)
        save("t5", t5)
        log(f"DiT done ({time.time() - t_start:.0f}s)")

    if "assemble" in stages:
        cfg.save(args.out / CONVERTED_CONFIG)
        (args.out / CONVERTED_TOKENIZER).write_text(build_demo_tokenizer().to_str())
        size = sum(f.stat().st_size for f in args.out.iterdir())
        log(f"assembled {args.out} ({size / 1e6:.1f} MB)")
    log(f"total {time.time() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
