"""Checkpoint load time and peak memory at the full LongLive 1.3B size, against a raw read.

    python benchmarks/bench_load.py                  # writes ~7.6 GB under $TMPDIR, removes it after
    python benchmarks/bench_load.py --dir /data/tmp --reps 5 --layout-reps 3

Random weights of the real shapes (speed and memory do not depend on the values) are written once
to a temporary folder in two layouts:

- **converted** (`checkpoints.save_converted`, bf16 safetensors: our format, docs/weights.md);
- **wan+longlive** (the folders as downloaded: `Wan2.1_VAE.pth` fp32 pickle, the text encoder
  pickle (bf16), `longlive_base.pt` {"generator": {"model.<name>": bf16}} and `lora.pt` with rank-256
  PEFT pairs (bf16) on the 300 Linear layers of the 30 blocks, merged at load).
  `diffusion_pytorch_model.safetensors` is not written: the loader never reads it when a LongLive
  folder is given.

The text encoder is REDUCED: one umT5 layer of the real width (4096) and a 384-token vocabulary
(the full umT5-XXL encoder is 11.4 GB; this machine has 24 GB of memory). The DiT (1.42 B
parameters) and the VAE are full size. So the "model" here is 3.48 GB in bf16, not 14.8 GB.

Each measurement runs in a fresh child process (`--child`), interleaved, repeated: it times the
load only (after `import torch`) and reports the process's peak RSS (`ru_maxrss`) and its RSS
before the load. The baseline, **raw read**, reads the same files (the bytes that loader reads)
into freshly allocated buffers with plain `readinto`. The page cache cannot be dropped here (no
root), so every file is read once first and all figures are WARM-cache reads, side by side.

Targets: converted load <= 1.5x the raw read of its files; peak memory of the load (peak RSS
minus RSS before) <= the model's size (parameters + buffers as loaded) + 10%. Loads use
device=cpu, dtype=bf16 (the stored dtype, as on GPU). Prints a table and a last `summary:` line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PRESET = "longlive-1.3b-reduced-t5"
LORA_RANK = 256


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak RSS: VmHWM. (Not `ru_maxrss`: a child started by fork+exec inherits
    the parent's high-water mark there, which would charge this script's own peak to the child.)"""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # pragma: no cover


def bench_config() -> Any:
    from longlive_runner.model.config import get_preset

    base = get_preset("longlive-1.3b")
    return dataclasses.replace(
        base, name=PRESET, t5=dataclasses.replace(base.t5, vocab_size=384, num_layers=1)
    )


# ----------------------------------------------------------------------------------------------
# Writing the two layouts
# ----------------------------------------------------------------------------------------------
def random_states(config: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """bf16 state dicts of the three models (keys and shapes from the real modules), and a LoRA."""
    import torch
    from torch import nn

    from longlive_runner.model.pipeline import build_modules

    pool = torch.randn(1 << 24, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)

    def fill(shape: torch.Size, salt: int) -> torch.Tensor:
        t = torch.empty(shape, dtype=torch.bfloat16)
        flat, n, i = t.view(-1), t.numel(), 0
        while i < n:
            k = min(n - i, pool.numel() - salt % 4096)
            flat[i : i + k] = pool[salt % 4096 : salt % 4096 + k]
            i, salt = i + k, salt + 1
        return t

    dit, vae, t5 = build_modules(config)
    states: dict[str, dict[str, Any]] = {}
    for part, module in (("dit", dit), ("vae", vae), ("t5", t5)):
        states[part] = {
            k: fill(v.shape, j) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
            for j, (k, v) in enumerate(module.state_dict().items())
        }
    lora: dict[str, Any] = {}
    linears = [(n, m) for n, m in dit.named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")]
    for j, (name, m) in enumerate(linears):
        lora[f"base_model.model.{name}.lora_A.weight"] = fill(torch.Size([LORA_RANK, m.in_features]), 2 * j)
        lora[f"base_model.model.{name}.lora_B.weight"] = fill(
            torch.Size([m.out_features, LORA_RANK]), 2 * j + 1
        )
    return states, lora


def write_layouts(root: Path, config: Any) -> dict[str, list[Path]]:
    """Write both layouts under `root`; returns the files each loader reads."""
    import torch

    from longlive_runner.model import checkpoints as ckpt
    from longlive_runner.model import layouts
    from longlive_runner.model.tokenizer import build_tiny_tokenizer

    states, lora = random_states(config)
    tok_json = build_tiny_tokenizer().to_str()

    conv = root / "converted"
    ckpt.save_converted(conv, config, states, tok_json)

    wan, ll = root / "wan", root / "longlive"
    (wan / "google/umt5-xxl").mkdir(parents=True)
    (ll / "models").mkdir(parents=True)
    d = config.dit
    wan_cfg = {k: getattr(d, k) for k in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim")}
    wan_cfg.update(text_len=d.text_len, freq_dim=d.freq_dim, eps=d.eps, model_type="t2v")
    (wan / "config.json").write_text(json.dumps(wan_cfg))
    (wan / layouts.WAN_TOKENIZER_FILE).write_text(tok_json)
    torch.save(
        {k: v.float() for k, v in states["vae"].items()}, wan / layouts.WAN_VAE_FILE
    )  # fp32, as shipped
    torch.save(states["t5"], wan / layouts.WAN_T5_FILE)
    torch.save(
        {"generator": {f"model.{k}": v for k, v in states["dit"].items()}}, ll / layouts.LONGLIVE_BASE_FILE
    )
    torch.save({"generator_lora": lora}, ll / layouts.LONGLIVE_LORA_FILE)
    return {
        "converted": sorted(p for p in conv.rglob("*") if p.is_file()),
        "wan+longlive": sorted(
            [p for p in wan.rglob("*") if p.is_file()] + [p for p in ll.rglob("*") if p.is_file()]
        ),
    }


# ----------------------------------------------------------------------------------------------
# Child processes: one measurement each
# ----------------------------------------------------------------------------------------------
def child(kind: str, root: Path, files: list[str]) -> dict[str, Any]:
    if kind == "raw":  # read(2) into one reused 16 MiB buffer: the cost of reading the bytes
        buf = bytearray(16 * 2**20)
        view = memoryview(buf)
        before = rss_bytes()
        t0 = time.perf_counter()
        nbytes = 0
        for name in files:
            with open(name, "rb", buffering=0) as f:
                while n := f.readinto(view):
                    nbytes += n
        return {
            "seconds": time.perf_counter() - t0,
            "rss_before": before,
            "peak": peak_rss_bytes(),
            "bytes": nbytes,
        }
    if kind == "raw-alloc":  # read(2) into a fresh buffer per file: reading the bytes into memory
        before = rss_bytes()
        t0 = time.perf_counter()
        nbytes = 0
        for name in files:
            with open(name, "rb", buffering=0) as f:
                buf = bytearray(os.fstat(f.fileno()).st_size)
                view, got = memoryview(buf), 0
                while got < len(buf) and (n := f.readinto(view[got:])):
                    got += n
                nbytes += got
                del view, buf
        return {
            "seconds": time.perf_counter() - t0,
            "rss_before": before,
            "peak": peak_rss_bytes(),
            "bytes": nbytes,
        }

    import torch

    from longlive_runner import load_pipeline
    from longlive_runner.model import config as config_mod
    from longlive_runner.model.pipeline import build_modules

    # Building the modules on the meta device once per process (imports, first-use costs): timed
    # apart, not in the load. It used to take seconds (random init on meta imported torch._dynamo).
    t0 = time.perf_counter()
    build_modules(config_mod.get_preset("tiny"))
    torch_warmup = time.perf_counter() - t0

    config = bench_config()
    config_mod.PRESETS[PRESET] = config  # so that load_pipeline(model=PRESET, wan_dir=...) knows it
    before = rss_bytes()
    t0 = time.perf_counter()
    if kind == "converted":
        pipe = load_pipeline(root / "converted", device="cpu", dtype=torch.bfloat16)
    else:
        pipe = load_pipeline(
            PRESET, wan_dir=root / "wan", longlive_dir=root / "longlive", device="cpu", dtype=torch.bfloat16
        )
    seconds = time.perf_counter() - t0
    peak_load = peak_rss_bytes()
    # Touch every weight page once, as a first forward pass would: safetensors memory-maps the
    # file, so `load_pipeline` returns before the bytes are read (on CUDA the copy to the GPU
    # reads them inside the load).
    t1 = time.perf_counter()
    with torch.no_grad():
        for m in (pipe.dit, pipe.vae, pipe.text_encoder.model):
            for t in (*m.parameters(), *m.buffers()):
                t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()  # one element per 4 KiB page
    touch = time.perf_counter() - t1
    model_bytes = sum(
        t.numel() * t.element_size()
        for m in (pipe.dit, pipe.vae, pipe.text_encoder.model)
        for t in (*m.parameters(), *m.buffers())
    )
    return {
        "seconds": seconds,
        "touch_seconds": touch,
        "torch_warmup_seconds": torch_warmup,
        "rss_before": before,
        "peak_load": peak_load,
        "peak": peak_rss_bytes(),
        "model_bytes": model_bytes,
    }


def run_child(kind: str, root: Path, files: list[Path]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--dir", str(root), "--"]
    cmd += [str(p) for p in files]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


# ----------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=None, help="where to write the temporary checkpoints (default: $TMPDIR)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the converted load and its raw read")
    ap.add_argument(
        "--layout-reps",
        type=int,
        default=1,
        help="repetitions of the wan+longlive load (about 1.5 min each here)",
    )
    ap.add_argument(
        "--raw-alloc",
        action="store_true",
        help="also time reading the files into fresh buffers (one per file)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    ap.add_argument(
        "--child", choices=["raw", "raw-alloc", "converted", "wan+longlive"], help=argparse.SUPPRESS
    )
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.dir), args.files)))
        return 0

    root = Path(tempfile.mkdtemp(prefix="longlive-bench-load-", dir=args.dir))
    try:
        return bench(args, root)
    finally:
        if args.keep:
            print(f"# kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def bench(args: argparse.Namespace, root: Path) -> int:
    gb = 1e9
    print(f"# checkpoint load: longlive-1.3b DiT + VAE full size, text encoder reduced to 1 umT5 layer; "
          f"{os.cpu_count()} cores; nice {os.nice(0)}; files in {root}")  # fmt: skip
    t0 = time.perf_counter()
    files = write_layouts(root, bench_config())
    sizes = {k: sum(p.stat().st_size for p in v) for k, v in files.items()}
    print(f"# wrote converted {sizes['converted'] / gb:.2f} GB and wan+longlive {sizes['wan+longlive'] / gb:.2f} GB "
          f"in {time.perf_counter() - t0:.0f} s; warming the page cache (read once)")  # fmt: skip
    for paths in files.values():
        run_child("raw", root, paths)

    rows: dict[str, list[dict[str, Any]]] = {"raw converted": [], "converted": []}
    if args.raw_alloc:
        rows["raw-alloc converted"] = []
    rows.update({"raw wan+longlive": [], "wan+longlive": []})
    for rep in range(max(args.reps, args.layout_reps)):
        if rep < args.reps:
            rows["raw converted"].append(run_child("raw", root, files["converted"]))
            rows["converted"].append(run_child("converted", root, files["converted"]))
            if args.raw_alloc:
                rows["raw-alloc converted"].append(run_child("raw-alloc", root, files["converted"]))
        if rep < args.layout_reps:
            rows["raw wan+longlive"].append(run_child("raw", root, files["wan+longlive"]))
            rows["wan+longlive"].append(run_child("wan+longlive", root, files["wan+longlive"]))
        print(
            f"rep {rep + 1}: "
            + "  ".join(f"{k} {v[-1]['seconds']:.2f} s" for k, v in rows.items() if len(v) > rep)
        )

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[kind])

    def total(r: dict[str, Any]) -> float:
        return float(r["seconds"] + r.get("touch_seconds", 0.0))

    print()
    print(f"{'what':<20} {'n':>2} {'load s':>7} {'touch s':>8} {'total s':>8} {'GB/s':>6} {'peak RSS':>9} "
          f"{'load peak':>10} {'model':>7} {'peak/model':>10} {'torch warmup s':>15}")  # fmt: skip
    for kind in rows:
        layout = "converted" if kind.endswith("converted") else "wan+longlive"
        tot = statistics.median(total(r) for r in rows[kind])
        if kind.startswith("raw"):
            print(
                f"{kind:<20} {len(rows[kind]):>2} {'':>7} {'':>8} {tot:>8.2f} {sizes[layout] / tot / gb:>6.2f}"
            )
            continue
        inc = med(kind, "peak") - med(kind, "rss_before")
        model = med(kind, "model_bytes")
        print(f"{kind:<20} {len(rows[kind]):>2} {med(kind, 'seconds'):>7.2f} {med(kind, 'touch_seconds'):>8.2f} "
              f"{tot:>8.2f} {sizes[layout] / tot / gb:>6.2f} {med(kind, 'peak') / gb:>8.2f}G {inc / gb:>9.2f}G "
              f"{model / gb:>6.2f}G {inc / model:>10.2f} {med(kind, 'torch_warmup_seconds'):>15.2f}")  # fmt: skip

    def ratio(kind: str) -> float:
        raw = "raw " + kind
        return statistics.median(total(c) / total(r) for c, r in zip(rows[kind], rows[raw]))

    def mem(kind: str) -> float:
        return (med(kind, "peak") - med(kind, "rss_before")) / med(kind, "model_bytes")

    conv_ratio, layout_ratio = ratio("converted"), ratio("wan+longlive")
    conv_mem, layout_mem = mem("converted"), mem("wan+longlive")
    print("(raw: read(2) of the same files into a reused 16 MiB buffer, warm page cache; raw-alloc: into a fresh "
          "buffer per file; total = load + touch (every weight page read once); load peak = peak RSS (VmHWM) - "
          "RSS before the load; model = parameters + buffers as loaded (bf16); torch warmup: torch's one-time "
          "imports for meta-device modules, per process, not in the load)")  # fmt: skip
    print(
        f"converted vs raw read     {conv_ratio:.2f}x  (load + touch; median of per-rep ratios; target <= 1.5)"
    )
    print(f"wan+longlive vs raw read  {layout_ratio:.2f}x  (LoRA merge included)")
    print(
        f"load peak / model size    converted {conv_mem:.2f}, wan+longlive {layout_mem:.2f}  (target <= 1.10)"
    )
    ok = conv_ratio <= 1.5 and conv_mem <= 1.10
    print(f"summary: converted_s={statistics.median(total(r) for r in rows['converted']):.2f} "
          f"raw_s={med('raw converted', 'seconds'):.2f} converted_ratio={conv_ratio:.2f} "
          f"converted_mem_ratio={conv_mem:.2f} layout_s={statistics.median(total(r) for r in rows['wan+longlive']):.2f} "
          f"layout_ratio={layout_ratio:.2f} layout_mem_ratio={layout_mem:.2f} "
          f"model_gb={med('converted', 'model_bytes') / gb:.2f} reduced_t5=1 warm_cache=1 cores={os.cpu_count()} "
          f"{'PASS' if ok else 'MISS'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
