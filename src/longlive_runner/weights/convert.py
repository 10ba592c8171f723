"""`longlive-runner convert`: merge a Wan2.1 folder and a LongLive folder into one converted folder.

The converted folder (docs/weights.md) holds `config.json`, `dit.safetensors` (LongLive's weights with
its LoRA merged in), `vae.safetensors`, `t5.safetensors` and `tokenizer.json`, cast to one dtype: it
loads in seconds with `--model DIR` / `load_pipeline(DIR)`. The reading and the checks are the model's
(`model.pipeline.read_wan_layout`, `model.checkpoints`); this module adds the subcommand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..arguments import CLIError

__all__ = ["cmd_convert", "register_cli"]


def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from ..model import checkpoints as ckpt
    from ..model import layouts
    from ..model.config import get_preset
    from ..model.lora import apply_lora_
    from ..model.pipeline import read_wan_layout
    from ..progress import progress_bar

    if args.model:
        base = get_preset(args.model)
    else:  # a Wan2.2-TI2V folder holds LongLive 2.0, a Wan2.1-T2V folder 1.0
        try:
            ti2v = ckpt.wan_model_type(Path(args.wan_dir) / layouts.WAN_CONFIG_FILE) == "ti2v"
        except ckpt.CheckpointError as exc:
            raise CLIError(str(exc)) from exc
        base = get_preset("longlive2-5b" if ti2v else "longlive-1.3b")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    with progress_bar(4, "converting", unit="steps", enabled=not args.quiet) as bar:
        try:
            layout = read_wan_layout(base, args.wan_dir, args.longlive_dir)
        except ckpt.CheckpointError as exc:
            raise CLIError(str(exc)) from exc
        bar.set_postfix_str("read", refresh=False)
        bar.update(1)
        states = {
            part: {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
            for part, sd in layout.states.items()
        }
        # after the cast: merged at the output precision, as a load to that dtype would
        apply_lora_(states["dit"], layout.lora)
        bar.set_postfix_str("cast, LoRA merged", refresh=False)
        bar.update(1)
        ckpt.save_converted(args.out, layout.config, states, layout.tokenizer_path.read_text())
        bar.set_postfix_str("written", refresh=False)
        bar.update(2)
    print(f"converted to {args.out}", file=sys.stderr)
    return 0


def register_cli(subparsers: Any) -> None:
    """Add `convert` to the `longlive-runner` command."""
    p = subparsers.add_parser(
        "convert",
        help="merge Wan + LongLive folders into one fast-loading safetensors folder",
        description="Read the Wan2.1-T2V-1.3B folder and the LongLive folder as downloaded "
        "(`longlive-runner download`), merge LongLive's LoRA into its DiT, cast every weight to one "
        "dtype and write a converted folder (config.json, dit/vae/t5.safetensors, tokenizer.json) "
        "that `--model DIR` and load_pipeline(DIR) load in seconds. See docs/weights.md.",
    )
    p.add_argument(
        "--wan-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="the Wan2.1-T2V-1.3B folder (VAE, umT5 text encoder, tokenizer)",
    )
    p.add_argument(
        "--longlive-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="the LongLive folder holding models/longlive_base.pt and models/lora.pt",
    )
    p.add_argument(
        "--model",
        default=None,
        help="preset whose architecture the folders hold (default: longlive2-5b for a Wan2.2-TI2V folder, "
        "else longlive-1.3b)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--dtype",
        choices=["bf16", "fp16", "fp32"],
        default="bf16",
        help="dtype of every weight in the output (default bf16, as LongLive runs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert)
