"""`longlive-runner`: generate, serve, convert, inspect and download LongLive models."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import DEFAULT_MODEL


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# --- shared arguments -------------------------------------------------------------------------
def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help=f"model name (demo, tiny, longlive-1.3b) or a converted folder (default: {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--wan-dir", type=Path, help="Wan2.1-T2V-1.3B folder (with --longlive-dir: the real weights)"
    )
    p.add_argument(
        "--longlive-dir", type=Path, help="LongLive folder holding models/longlive_base.pt and models/lora.pt"
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def load_from_args(args: argparse.Namespace) -> Any:
    import torch

    from .checkpoints import CheckpointError
    from .pipeline import load_pipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return load_pipeline(
            args.model or (None if args.wan_dir else DEFAULT_MODEL),
            wan_dir=args.wan_dir,
            longlive_dir=args.longlive_dir,
            device=device,
        )
    except (CheckpointError, KeyError, ValueError) as exc:
        raise CLIError(str(exc).strip("'\"")) from exc


# --- info -------------------------------------------------------------------------------------
def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config: Any) -> dict[str, Any]:
    """Sizes and memory needs of a preset, computed on the meta device (no weights needed)."""
    from .pipeline import build_modules

    dit, vae, t5 = build_modules(config)
    n_dit, n_vae, n_t5 = count_parameters(dit), count_parameters(vae), count_parameters(t5)
    s, d = config.stream, config.dit
    kv_cache = 2 * d.num_layers * s.cache_frames * config.tokens_per_frame * d.dim
    gb = 1e9
    return {
        "model": config.name,
        "fps": config.fps,
        "height": config.height,
        "width": config.width,
        "latent_frames_per_block": s.frames_per_block,
        "video_frames_first_block": config.video_frames_for_block(0),
        "video_frames_per_block": config.video_frames_for_block(s.frames_per_block),
        "tokens_per_latent_frame": config.tokens_per_frame,
        "max_latent_frames": s.max_latent_frames,
        "dit_parameters": n_dit,
        "vae_parameters": n_vae,
        "t5_parameters": n_t5,
        "memory_gb": {
            "dit_bf16": round(n_dit * 2 / gb, 3),
            "vae_bf16": round(n_vae * 2 / gb, 3),
            "t5_bf16": round(n_t5 * 2 / gb, 3),
            "kv_cache_bf16": round(kv_cache * 2 / gb, 3),
            "dit_fp32": round(n_dit * 4 / gb, 3),
        },
        "config": config.to_dict(),
    }


def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoints import CheckpointError, read_converted_config
    from .config import get_preset, resolve_model

    name = args.model or DEFAULT_MODEL
    folder = resolve_model(name)
    if folder is not None:
        try:
            config = read_converted_config(folder)
        except CheckpointError as exc:
            raise CLIError(str(exc)) from exc
    else:
        try:
            config = get_preset(name)
        except KeyError as exc:
            raise CLIError(str(exc).strip("'\"")) from exc
    print(json.dumps(describe(config), indent=2))
    return 0


# --- generate ---------------------------------------------------------------------------------
def parse_prompt_arg(value: str) -> tuple[int, str]:
    frame, sep, text = value.partition(":")
    if not sep or not frame.strip().isdigit() or not text.strip():
        raise CLIError(f"--prompt expects FRAME:TEXT (e.g. '0:a red circle'), got {value!r}")
    return int(frame), text.strip()


def read_schedule_file(path: Path) -> dict[int, str]:
    """A JSON object {"frame": "prompt"}, a JSON list, or JSONL of {"timestamp", "prompt"|"new_prompt"}."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CLIError(f"cannot read schedule file {path}: {exc.strerror}") from exc
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise CLIError(f"{path}: neither JSON nor JSONL (line {exc.lineno}: {exc.msg})") from exc
    items: list[tuple[Any, Any]]
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list) and all(isinstance(e, dict) for e in data):
        items = [(e.get("timestamp"), e.get("new_prompt", e.get("prompt"))) for e in data]
    else:
        raise CLIError(f"{path}: expected an object {{frame: prompt}} or a list of {{timestamp, prompt}}")
    schedule: dict[int, str] = {}
    for frame, prompt in items:
        try:
            f = int(frame)
        except (TypeError, ValueError):
            raise CLIError(f"{path}: timestamp {frame!r} is not an integer frame") from None
        if f < 0 or not isinstance(prompt, str) or not prompt.strip():
            raise CLIError(
                f"{path}: bad entry at timestamp {frame!r}: need frame >= 0 and a non-empty prompt"
            )
        schedule[f] = prompt.strip()
    return schedule


def cmd_generate(args: argparse.Namespace) -> int:
    from longlive._video import VideoWriter

    from .progress import ProgressBar

    schedule: dict[int, str] = {}
    if args.schedule:
        schedule.update(read_schedule_file(args.schedule))
    for value in args.prompt or []:
        frame, text = parse_prompt_arg(value)
        schedule[frame] = text
    if not schedule:
        raise CLIError("give at least one prompt: --prompt '0:a red circle' or --schedule FILE")
    if 0 not in schedule:
        raise CLIError("the schedule needs a prompt at frame 0")
    if args.frames <= 0:
        raise CLIError("--frames must be positive")

    pipe = load_from_args(args)
    cfg = pipe.config
    n_blocks = -(-args.frames // cfg.frames_per_block)
    total_video = sum(cfg.video_frames_for_block(b * cfg.frames_per_block) for b in range(n_blocks))
    start = time.perf_counter()
    with (
        VideoWriter(args.out, fps=cfg.fps) as writer,
        ProgressBar(total_video, "generating", unit="frames", enabled=not args.quiet) as bar,
    ):
        for block in pipe.stream(schedule, args.frames, seed=args.seed):
            writer.write(block.frames)
            bar.update(block.num_frames, postfix=f"frame {block.start_frame}: {block.prompt[:40]}")
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print(
            f"wrote {writer.frames_written} frames ({writer.frames_written / cfg.fps:.1f} s of video) to {args.out} "
            f"in {elapsed:.1f} s ({writer.frames_written / elapsed:.1f} frames/s)",
            file=sys.stderr,
        )
    return 0


# --- convert ----------------------------------------------------------------------------------
def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from . import checkpoints as ckpt
    from .config import get_preset
    from .lora import apply_lora_
    from .pipeline import read_wan_layout
    from .progress import ProgressBar

    base = get_preset(args.model or "longlive-1.3b")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    with ProgressBar(4, "converting", unit="steps", enabled=not args.quiet) as bar:
        try:
            layout = read_wan_layout(base, args.wan_dir, args.longlive_dir)
        except ckpt.CheckpointError as exc:
            raise CLIError(str(exc)) from exc
        bar.update(1, "read")
        states = {
            part: {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
            for part, sd in layout.states.items()
        }
        # after the cast: merged at the output precision, as a load to that dtype would
        apply_lora_(states["dit"], layout.lora)
        bar.update(1, "cast, LoRA merged")
        ckpt.save_converted(args.out, layout.config, states, layout.tokenizer_path.read_text())
        bar.update(2, "written")
    print(f"converted to {args.out}", file=sys.stderr)
    return 0


# --- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longlive-runner", description="Real-time interactive long video generation with LongLive."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "info", help="print a model's configuration, parameter counts and memory needs as JSON"
    )
    p.add_argument("--model", default=None, help="preset name or converted folder (no weights are loaded)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "generate",
        help="generate a video offline from a prompt schedule",
        description="Generate a video from a prompt schedule and write it to an mp4. "
        "Frames are the model's latent frames (a block is 3; 16 fps video, 4 video frames per latent frame).",
    )
    add_model_args(p)
    p.add_argument(
        "--prompt", action="append", metavar="FRAME:TEXT", help="a prompt from latent FRAME on (repeatable)"
    )
    p.add_argument(
        "--schedule", type=Path, help="JSON {frame: prompt}, or JSON/JSONL list of {timestamp, prompt}"
    )
    p.add_argument("--frames", type=int, default=24, help="latent frames to generate (rounded up to blocks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("longlive.mp4"), help="output mp4 path")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "convert", help="merge Wan + LongLive folders into one fast-loading safetensors folder"
    )
    p.add_argument("--wan-dir", type=Path, required=True)
    p.add_argument("--longlive-dir", type=Path, required=True)
    p.add_argument(
        "--model", default=None, help="preset whose architecture the folders hold (default longlive-1.3b)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_convert)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Any]:
    """Subcommands defined in their own modules (serve, cluster, download)."""
    # Imported explicitly: an error in any module must show, not hide its command. None of them
    # imports torch or Ray at import time.
    from . import download, server
    from .cluster import command as cluster

    return [server.register_cli, cluster.register_cli, download.register_cli]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"longlive-runner: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
