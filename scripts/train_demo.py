#!/usr/bin/env python
"""Train the embedded `demo` model on synthetic scenes (CPU only, reproducible from --seed).

The recipe (seed 0, one torch thread per process, the VAE and DiT stages in parallel on 2 cores):

    export PYTHONPATH=src
    python scripts/train_demo.py --stage dit --out DIR &                    # 3000 steps: 38-50 min
    python scripts/train_demo.py --stage vae --out DIR/vae1                 # 1500 image + 1000 clip steps: 27-41 min
    python scripts/train_demo.py --stage vae --out DIR/vae2 --vae-init DIR/vae1/vae.safetensors \
        --vae-image-steps 0 --vae-clip-steps 800 --vae-clip-latents 3       # 6-10 min
    python scripts/train_demo.py --stage vae --out DIR --vae-init DIR/vae2/vae.safetensors \
        --vae-image-steps 0 --vae-clip-steps 500 --vae-lr 1e-3              # 9-13 min
    wait
    python scripts/train_demo.py --stage assemble --out DIR                 # config.json, tokenizer.json
    python scripts/eval_demo.py --model DIR

About 45-65 minutes of wall time on this project's 2-core CPU machine (the longer times were
measured with other work sharing the machine). `--stage all` runs the stages in turn in one process
with the defaults (the DiT and the first VAE round only). The VAE's extra rounds matter: after the
first, decoded object colour was 28-30% on held-out clips; short clips then long ones at a lower
rate bring it to 99%.

The shipped weights are exactly this recipe's output: config.json, tokenizer.json, dit, t5 and vae
.safetensors as the commands above write them (torch 2.13 on this project's x86-64 CPU machine: the
VAE rounds run 2026-11-29, twice, with identical files; the DiT stage rerun 2026-12-01, 40 min with
other work on the machine, after its teacher-forcing mask followed the corrected KV re-cache).
Floating-point results can differ on another CPU or torch version, so a retrain elsewhere gives a
model of the same quality, not the same bytes. sha256 of the shipped files (first 16 hex digits):
dit 9a230972e85a188e, t5 435c9bd539fc9eb1, vae b4a164bfbfb5d47c. Eval of the shipped model
(`eval_demo.py` defaults): object colour 99.6% of frames, background 100%, direction 100% of
blocks, every switch in the first block after it; colour holds after 10 of 11 switches.

The first frame after a prompt switch: the decoder's causal temporal cache (the previous latent
frame) pulls it towards the old scene, and it is one frame in ~20 of a clip, so a plain loss leaves
it a blend (magenta between red and blue). `--vae-switch-weight` (default 8) weights that frame up;
the 3-latent round has no switches and undoes it (0% right after it), the last round restores it
(100% of held-out switch frames, printed as "first frame after a switch").

Everything uses the runner's own model classes (`WanVAE`, `CausalWanDiT`, `UMT5Encoder`) and
writes our converted folder: config.json, dit/vae/t5.safetensors (float32), tokenizer.json.

Latent space. A Wan VAE trained from scratch as an autoencoder stays on the "mean colour"
plateau for hundreds of steps, far beyond a CPU budget of minutes. So the latent space is a
fixed analytic encoding (`longlive_runner.demo.latents.analytic_latents`: per 8x8 cell and
latent frame, the colours of its four 4x4 quadrants, the frame's global motion (dx, dy), the
brightness change over the latent's frames, an edge measure: 16 channels, the Wan VAE's 8x /
causal 4x layout), normalised with
per-channel statistics of a fixed sample (the config's latents_mean / latents_std). The scenes
move 2 px per video frame = 8 px (one latent cell) per latent frame, so a scene's latents shift
by exactly one cell per latent frame.

1. **VAE** (`WanVAE`, base_dim 8, one residual block per level), through the runner's chunked
   causal code path: first single frames (batches of 16: colour and shape, cheap), then clips of
   `--vae-clip-latents` latent frames with prompt switches (the temporal upsampling, the motion,
   the causal caches over several chunks). The decoder turns (slightly noised) analytic latents
   into frames (L1 + L2, object pixels and the first frame after a switch weighted up); every few
   clip steps the encoder learns to reproduce the analytic latents. Progress is printed as the
   demo checker's colour accuracy on decoded held-out clips, and on their first frames after a
   switch.
2. **DiT + umT5** (`CausalWanDiT`: 4 layers of dim 96, 4 heads, patch 1x1 so one token is one
   latent cell; `UMT5Encoder`, 2 layers of dim 64), trained jointly by teacher forcing on the
   latents of long rendered clips (prompt switches at block boundaries). One sequence holds the
   clean blocks of a segment (the blocks since a prompt switch) and its context, plus a noisy copy
   of each of the segment's blocks at the same RoPE positions; a block-level mask reproduces what
   the KV cache shows at run time:
     * a clean block attends to the frame sink (block 0) and the window (the two previous
       blocks and itself), as in its context pass;
     * a noisy block attends to the clean sink and window and to itself, as in its denoising
       forwards;
     * after a prompt switch at block k, the clean blocks k-4 .. k-1 are re-encoded under the
       new prompt as the KV re-cache does (an ordinary cached forward with the global sink): each
       attends, with no mask, to what the cache holds after the write: the sink (block 0) and
       the re-encoded blocks k-3 .. k-1 (for k <= 4: all of blocks 0 .. k-1);
     * positions of the blocks after the sink are sometimes shifted far (as in a long video
       whose middle was evicted), so the sink works at any RoPE distance.
   The sequence runs through the DiT's training entry point, `forward_with_attention`, with an
   attention that gathers each block's visible blocks, so a sequence costs linear, not quadratic,
   in its length. Loss: flow matching (predicted v, x0 = x_t - sigma*v, loss on x0) at exactly the
   runner's 4 warped sigmas, weighted per step by `--sigma-weights`. Clean context frames get
   small noise (kept at t=0) so the model tolerates its own outputs. Training clips switch the
   prompt often (`--switch-prob`), so the prompt, not the motion or colour in the context, is
   the reliable cue.

Threads: 1 per process by default. On a shared, oversubscribed 2-core machine one thread per
process was 4-10x faster than two (OpenMP barriers stall when a thread is descheduled); the
two stages are independent, so running them in parallel uses both cores.
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
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from longlive_runner.demo import checker, scenes  # noqa: E402
from longlive_runner.demo.latents import analytic_latents  # noqa: E402
from longlive_runner.demo.tokenizer import build_demo_tokenizer  # noqa: E402
from longlive_runner.model.checkpoints import CONVERTED_CONFIG, CONVERTED_FILES, CONVERTED_TOKENIZER  # noqa: E402
from longlive_runner.model.config import DiTConfig, PipelineConfig, StreamConfig, T5Config, VAEConfig  # noqa: E402
from longlive_runner.model.dit import CausalWanDiT, attention  # noqa: E402
from longlive_runner.model.scheduler import denoising_sigmas  # noqa: E402
from longlive_runner.model.t5 import UMT5Encoder  # noqa: E402
from longlive_runner.model.tokenizer import TextTokenizer  # noqa: E402
from longlive_runner.model.vae import WanVAE  # noqa: E402

FPB = 3  # latent frames per block
TEMPORAL = 4


def demo_config(latents_mean=None, latents_std=None) -> PipelineConfig:
    z = 16
    return PipelineConfig(
        name="demo",
        dit=DiTConfig(
            dim=96,
            ffn_dim=384,
            num_heads=4,
            num_layers=4,
            text_dim=64,
            text_len=16,
            freq_dim=64,
            patch_size=(1, 1, 1),
        ),
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


def vae_eval_set(seed: int, h: int, w: int):
    """A fixed held-out set of short clips for the checker-based progress figures."""
    rng = np.random.default_rng([seed, 77])
    return [random_clip(rng, 9, h, w, 0.7, True)[1] for _ in range(8)]


@torch.no_grad()
def vae_checker_accuracy(vae: WanVAE, clips) -> tuple[float, float, float]:
    """Object and background colour accuracy (the demo checker) of decoding the clips' true
    latents, and the share of first frames after a colour or background switch with both right."""
    x = torch.stack([to_video(c.frames) for c in clips])
    out = vae_decode_raw(vae, analytic_latents(x)).clamp(-1, 1)
    frames = out.add(1).mul(127.5).round().byte().permute(0, 2, 3, 4, 1).numpy()
    col = bg = n = sw_ok = sw_n = 0
    for k, clip in enumerate(clips):
        for j, scene in enumerate(clip.scenes):
            m = checker.measure_frame(frames[k, j])
            col += m.color == scene.color
            bg += m.background == scene.background
            n += 1
            prev = clip.scenes[j - 1] if j else scene
            if (prev.color, prev.background) != (scene.color, scene.background):
                sw_ok += m.color == scene.color and m.background == scene.background
                sw_n += 1
    return col / n, bg / n, sw_ok / max(sw_n, 1)


def switch_frames(clips, switch_weight: float) -> torch.Tensor:
    """Per-frame loss weights [B, 1, T, 1, 1]: 1 + switch_weight on each frame whose scene differs
    from the frame before (the first frame after a prompt switch). The decoder's causal temporal
    context (the cached previous latent frame) pulls that frame towards the old scene; without the
    extra weight it decodes a blend (magenta between red and blue), one frame in ~20."""
    wt = torch.ones(len(clips), 1, len(clips[0].scenes), 1, 1)
    for b, clip in enumerate(clips):
        for j in range(1, len(clip.scenes)):
            if clip.scenes[j] != clip.scenes[j - 1]:
                wt[b, 0, j] += switch_weight
    return wt


def decoder_loss(
    out: torch.Tensor, x: torch.Tensor, frame_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 + L2, object pixels weighted up (they are ~6% of a frame but carry colour and motion),
    times optional per-frame weights [B, 1, T, 1, 1]."""
    err = out - x
    # the runner clamps decoded pixels to [-1, 1]: overshooting a saturated target costs nothing
    err = torch.where(((x >= 1) & (err > 0)) | ((x <= -1) & (err < 0)), torch.zeros_like(err), err)
    fg = ((x - x[..., :1, :1]).abs().sum(1, keepdim=True) > 0.1).float()
    wt = 1.0 + 3.0 * fg
    if frame_weight is not None:
        wt = wt * frame_weight
    return (wt * (err.abs() + err**2)).mean() / wt.mean()


def train_vae(
    vae: WanVAE,
    cfg: PipelineConfig,
    rng: np.random.Generator,
    image_steps: int,
    clip_steps: int,
    encoder_every: int,
    lr: float,
    clip_latents: int = 6,
    switch_weight: float = 0.0,
    checkpoint=None,
) -> None:
    """Two phases through the runner's chunked causal code:
    1. images: batches of 16 single frames (a video's first latent frame), where colour and shape
       are learnt ~8x cheaper per sample than from clips;
    2. clips of `clip_latents` latent frames (batch 2, prompt switches at their block boundaries):
       the temporal upsampling, the motion, switches, and the decoder's causal caches over several
       chunks as in a long stream.
    The decoder maps analytic latents (+ a little noise, as the DiT's are not exact) to frames;
    every `encoder_every` clip steps the encoder learns frames -> analytic latents."""
    h, w = cfg.height, cfg.width
    std = torch.tensor(cfg.vae.latents_std).view(1, -1, 1, 1, 1)
    evals = vae_eval_set(0, h, w)
    t0 = time.time()
    for phase, steps, batch, num_latent in (
        ("image", image_steps, 16, 1),
        ("clip", clip_steps, 2, clip_latents),
    ):
        if steps <= 0:
            continue
        params = list(vae.parameters())
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
        avg = enc_avg = 0.0
        for step in range(steps):
            clips = [random_clip(rng, num_latent, h, w, 0.7, True)[1] for _ in range(batch)]
            x = torch.stack([to_video(c.frames) for c in clips])
            z = analytic_latents(x)
            z_in = z + std * (0.05 * torch.rand(()) * torch.randn_like(z))
            loss = decoder_loss(vae_decode_raw(vae, z_in), x, switch_frames(clips, switch_weight))
            if phase == "clip" and encoder_every and step % encoder_every == 0:
                enc = (((vae_encode_mu(vae, x) - z) / std) ** 2).mean()
                loss = loss + enc
                enc_avg = enc.item() if enc_avg == 0.0 else 0.7 * enc_avg + 0.3 * enc.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            avg = loss.item() if step == 0 else 0.9 * avg + 0.1 * loss.item()
            last = step == steps - 1
            if step % 50 == 0 or last:
                log(
                    f"vae {phase} step {step}/{steps} loss {avg:.4f} encoder mse {enc_avg:.4f} ({time.time() - t0:.0f}s)"
                )
            if (step % 250 == 0 and step) or last:
                col, bg, sw = vae_checker_accuracy(vae, evals)
                log(
                    f"vae {phase} step {step}: decoded true latents: object colour {col:.1%}, "
                    f"background {bg:.1%}, first frame after a switch {sw:.1%}"
                )
                if checkpoint is not None:
                    checkpoint(vae)


# ----------------------------------------------------------------------------------------------
# DiT teacher forcing
def unit_attention(unit_mask: torch.Tensor, unit_tokens: int):
    """attend(q, k, v) for sequences made of units (a block of frames, `unit_tokens` tokens each)
    from a unit-level mask [B, U, U]: each unit's queries attend to the tokens of the units it
    sees, gathered, so the cost grows with U * (units seen), not U^2 as a dense mask would."""
    B, U, _ = unit_mask.shape
    V = int(unit_mask.sum(-1).max())
    order = torch.argsort((~unit_mask).to(torch.int8), dim=-1, stable=True)[..., :V]  # seen units first
    seen = torch.gather(unit_mask, 2, order)  # [B, U, V]
    key_mask = seen[..., None].expand(B, U, V, unit_tokens).reshape(B * U, 1, 1, V * unit_tokens)
    rows = torch.arange(B)[:, None, None]

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # q, k, v [B, U*P, H, D] -> [B, U*P, H, D]
        H, D = q.shape[2:]
        qu = q.reshape(B * U, unit_tokens, H, D)
        kg = k.reshape(B, U, unit_tokens, H, D)[rows, order].reshape(B * U, V * unit_tokens, H, D)
        vg = v.reshape(B, U, unit_tokens, H, D)[rows, order].reshape(B * U, V * unit_tokens, H, D)
        return attention(qu, kg, vg, key_mask).reshape(B, U * unit_tokens, H, D)

    return attend


def dit_train_forward(dit: CausalWanDiT, x, t, context, unit_mask, positions):
    """The DiT's training entry point for teacher forcing: x [B, C, U*3, h, w] made of U blocks
    (units), a unit-level attention mask [B, U, U] and per-sample RoPE positions [B, U*3]."""
    _, ph, pw = dit.cfg.patch_size
    tokens_per_frame = (x.shape[3] // ph) * (x.shape[4] // pw)
    attend = unit_attention(unit_mask, FPB * tokens_per_frame)
    return dit.forward_with_attention(x, t, context, attend, positions)


def check_train_forward(dit: CausalWanDiT, cfg: PipelineConfig) -> None:
    """The teacher-forcing forward equals dit.forward with the same block-causal frame mask."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cfg.dit.in_dim, 3 * FPB, cfg.latent_height, cfg.latent_width, generator=g)
    t = torch.rand(1, 3 * FPB, generator=g) * 1000
    c = torch.randn(1, cfg.dit.text_len, cfg.dit.text_dim, generator=g)
    units = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)  # unit 2 skips unit 1
    frames = units.repeat_interleave(FPB, 0).repeat_interleave(FPB, 1)
    with torch.no_grad():
        ref = dit(x, t, c, frames)
        got = dit_train_forward(dit, x, t, c, units[None], torch.arange(3 * FPB)[None])
    err = (ref - got).abs().max().item()
    if err > 1e-4:
        raise AssertionError(f"teacher-forcing forward differs from dit.forward by {err}")


def switch_blocks(schedule: dict[int, str]) -> list[int]:
    return sorted(t // FPB for t in schedule if t > 0)


def build_example(
    nb: int, schedule: dict[int, str], rng: random.Random, context_blocks: int, end: int | None = None
):
    """Pick an end block E and lay out one teacher-forcing sequence.

    Returns (units, mask, prompt, targets): units = list of (kind, block, position_block) with kind
    'c' (clean) or 'n' (noisy); mask = bool [U, U] unit-level attention.
    """
    # end at a segment's end (the block before a switch, or the clip's end): every block of the
    # segment since its switch is then a target
    E = end if end is not None else rng.choice(sorted({*switch_blocks(schedule), nb}))
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
                    # the re-cache: [sink | the re-encoded blocks the window keeps]
                    ok = (bj == 0 or (bj in R and bj >= k - 3)) if bi in R else (bj == 0)
                else:
                    ok = bj in visible(bi) and (bj >= k or bj == 0 or bj in R)
            else:
                ok = (kj == "c" and bj in visible(bi) and bj != bi) or (kj == "n" and bj == bi)
            mask[i, j] = ok
    prompt = schedule[max(t for t in schedule if t <= E * FPB - FPB)] if E > 0 else schedule[0]
    return units, mask, prompt, targets


class DitData:
    def __init__(
        self,
        latents: torch.Tensor,
        schedules: list[dict[int, str]],
        tokenizer: TextTokenizer,
        sigma_weights: list[float],
    ):
        self.latents = latents  # [N, C, F, h, w] normalised
        self.sigma_weights = sigma_weights  # x0-space loss weight per sampling step
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
        umask = torch.zeros(B, U, U, dtype=torch.bool)
        wts = torch.zeros(B, U * FPB)
        prompts = []
        for n, (i, units, mask, prompt, _) in enumerate(exs):
            lat = self.latents[i]
            u = len(units)
            umask[n, :u, :u] = torch.from_numpy(mask)
            for j in range(u, U):  # padding: attends to itself only
                umask[n, j, j] = True
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
                    wts[n, sl] = self.sigma_weights[si]
            prompts.append(prompt)
        return x, x0, t, pos, umask, wts, prompts


def encode_text(t5: UMT5Encoder, tok: TextTokenizer, prompts: list[str]) -> torch.Tensor:
    ids, mask = tok(prompts)
    feats = t5(ids, mask)
    return feats.masked_fill(mask[..., None] == 0, 0.0)


def dit_loss(dit, t5, tok, batch):
    x, x0, t, pos, umask, wts, prompts = batch
    ctx = encode_text(t5, tok, prompts)
    v = dit_train_forward(dit, x, t, ctx, umask, pos)
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
    dit,
    t5,
    tok,
    data: DitData,
    cfg,
    rng: random.Random,
    steps: int,
    batch: int,
    lr: float,
    context_blocks: int,
    label: str,
    t5_lr_scale: float = 0.1,
    checkpoint=None,
):
    if steps <= 0:
        return
    params = list(dit.parameters()) + list(t5.parameters())
    groups = [{"params": list(dit.parameters())}, {"params": list(t5.parameters())}]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    # the umT5's attention has no 1/sqrt(d) scale: at the DiT's rate it soon saturates onto a few
    # words and stops passing the others on (it learnt to ignore the direction word), so it
    # trains slower
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[lr, lr * t5_lr_scale], total_steps=steps, pct_start=0.05
    )
    sigmas = denoising_sigmas(cfg.stream)
    t0 = time.time()
    avg = None
    for step in range(steps):
        b = data.batch(rng, batch, sigmas, ctx_noise=0.1, context_blocks=context_blocks)
        loss = dit_loss(dit, t5, tok, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        avg = loss.item() if avg is None else 0.95 * avg + 0.05 * loss.item()
        if step % 10 == 0 or step == steps - 1:
            log(f"{label} step {step}/{steps} loss {avg:.4f} ({time.time() - t0:.0f}s)")
        if checkpoint is not None and step % 250 == 0 and step:
            checkpoint()


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
    ap.add_argument("--vae-image-steps", type=int, default=1500, help="decoder steps on single frames")
    ap.add_argument("--vae-clip-steps", type=int, default=1000, help="decoder (+ encoder) steps on clips")
    ap.add_argument("--vae-lr", type=float, default=2e-3)
    ap.add_argument("--vae-clip-latents", type=int, default=6, help="latent frames per training clip")
    ap.add_argument(
        "--vae-switch-weight",
        type=float,
        default=8.0,
        help="extra decoder loss weight on the first frame after a prompt switch",
    )
    ap.add_argument("--vae-init", type=Path, default=None, help="continue from this vae.safetensors")
    ap.add_argument(
        "--encoder-every", type=int, default=4, help="train the VAE encoder every N decoder steps"
    )
    ap.add_argument("--clips", type=int, default=320, help="long clips rendered for DiT training")
    ap.add_argument("--clip-blocks", type=int, default=10)
    ap.add_argument(
        "--switch-prob",
        type=float,
        default=0.6,
        help="chance of a prompt switch at each block boundary of a DiT training clip: frequent switches "
        "make the prompt, not the motion or colour seen in the context, the reliable cue",
    )
    ap.add_argument("--dit-steps", type=int, default=3000)
    ap.add_argument("--dit-batch", type=int, default=2)
    ap.add_argument("--t5-lr-scale", type=float, default=0.1, help="umT5 learning rate / DiT learning rate")
    ap.add_argument(
        "--reinit-t5", action="store_true", help="with --dit-init: start the umT5 afresh (keep the DiT)"
    )
    ap.add_argument(
        "--sigma-weights",
        type=float,
        nargs=4,
        default=[2.0, 1.0, 1.0, 1.0],
        help="x0 loss weight of each of the runner's 4 sampling steps; the first (pure noise) lays the scene out",
    )
    ap.add_argument("--context-blocks", type=int, default=12, help="clean blocks before a target, at most")
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
        train_vae(
            vae,
            cfg,
            vae_rng,
            args.vae_image_steps,
            args.vae_clip_steps,
            args.encoder_every,
            args.vae_lr,
            args.vae_clip_latents,
            args.vae_switch_weight,
            checkpoint=lambda m: save("vae", m),
        )
        save("vae", vae)
        log(f"VAE done ({time.time() - t_start:.0f}s)")

    if "dit" in stages:
        torch.manual_seed(args.seed + 2)
        rng = np.random.default_rng([args.seed, 2])
        nl = args.clip_blocks * FPB
        schedules, latents = [], []
        for _ in range(args.clips):
            sch, clip = random_clip(rng, nl, h, w, switch_prob=args.switch_prob, random_start=False)
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
            if not args.reinit_t5:
                t5.load_state_dict(load_file(str(args.dit_init / CONVERTED_FILES["t5"])))
            torch.manual_seed(args.seed + 12)
        check_train_forward(dit, cfg)
        data = DitData(z, schedules, tok, args.sigma_weights)
        py_rng = random.Random(args.seed * 1000 + (13 if args.dit_init is not None else 3))

        def dit_checkpoint() -> None:
            save("dit", dit)
            save("t5", t5)

        train_dit(
            dit,
            t5,
            tok,
            data,
            cfg,
            py_rng,
            args.dit_steps,
            args.dit_batch,
            args.dit_lr,
            args.context_blocks,
            "dit",
            t5_lr_scale=args.t5_lr_scale,
            checkpoint=dit_checkpoint,
        )
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
