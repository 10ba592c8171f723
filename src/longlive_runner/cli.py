"""`longlive-runner`: generate, serve, convert, inspect and download LongLive models."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from longlive.units import block_start, latent_to_video_frame, next_block_boundary

from .arguments import CLIError, add_model_args, load_from_args, unknown_model
from .model.config import DEFAULT_MODEL


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def describe(config: Any) -> dict[str, Any]:
    """Sizes and memory needs of a preset, computed on the meta device (no weights needed)."""
    from .model.pipeline import build_modules

    dit, vae, t5 = build_modules(config)
    n_dit, n_vae, n_t5 = count_parameters(dit), count_parameters(vae), count_parameters(t5)
    s, d = config.stream, config.dit
    kv_cache = 2 * d.num_layers * s.cache_frames * config.tokens_per_frame * d.dim
    gb = 1e9
    return {
        "model": config.name,
        "family": config.family,
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
            "kv_cache_bf16": round(kv_cache * 2 / gb, 3),  # one cache (no second, CFG cache)
            "kv_cache_bf16_gib": round(kv_cache * 2 / 2**30, 3),
            "dit_fp32": round(n_dit * 4 / gb, 3),
        },
        "config": config.to_dict(),
    }


def cmd_info(args: argparse.Namespace) -> int:
    from .model.checkpoints import CheckpointError, read_converted_config
    from .model.config import get_preset, resolve_model

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
        except KeyError:
            raise unknown_model(name) from None
    print(json.dumps(describe(config), indent=2))
    return 0


# --- generate ---------------------------------------------------------------------------------
def parse_prompt_arg(value: str) -> tuple[int, str]:
    frame, sep, text = value.partition(":")
    if not sep or not frame.strip().isdigit() or not text.strip():
        raise CLIError(f"--prompt expects FRAME:TEXT (e.g. '0:a red circle'), got {value!r}")
    return int(frame), text.strip()


def read_schedule_entries(path: Path) -> list[tuple[int, str]]:
    """The (frame, prompt) entries of a schedule file, in file order (repeats kept): a JSON object
    {"frame": "prompt"}, a JSON list, or JSONL of {"timestamp", "prompt"|"new_prompt"}."""
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
    entries: list[tuple[int, str]] = []
    for frame, prompt in items:
        try:
            f = int(frame)
        except (TypeError, ValueError):
            raise CLIError(f"{path}: timestamp {frame!r} is not an integer frame") from None
        if f < 0 or not isinstance(prompt, str) or not prompt.strip():
            raise CLIError(
                f"{path}: bad entry at timestamp {frame!r}: need frame >= 0 and a non-empty prompt"
            )
        entries.append((f, prompt.strip()))
    return entries


def note(text: str) -> None:
    """A one-line note on stderr: the command did something other than the literal request."""
    print(f"longlive-runner: note: {text}", file=sys.stderr)


def warn(text: str) -> None:
    print(f"longlive-runner: warning: {text}", file=sys.stderr)


def build_schedule(args: argparse.Namespace) -> dict[int, str]:
    """--schedule then every --prompt, in order; a later prompt at the same frame replaces an
    earlier one (with a note)."""
    entries: list[tuple[int, str, str]] = []
    if args.schedule:
        entries += [(f, t, str(args.schedule)) for f, t in read_schedule_entries(args.schedule)]
    for value in args.prompt or []:
        frame, text = parse_prompt_arg(value)
        entries.append((frame, text, "--prompt"))
    schedule: dict[int, str] = {}
    source: dict[int, str] = {}
    for frame, text, where in entries:
        if frame in schedule and schedule[frame] != text:
            note(
                f"two prompts at frame {frame}: {text!r} ({where}) replaces {schedule[frame]!r} ({source[frame]})"
            )
        schedule[frame], source[frame] = text, where
    return schedule


def schedule_notes(
    schedule: dict[int, str], frames_per_block: int, num_frames: int, limit: int | None
) -> None:
    """Notes for prompts that take effect elsewhere than written, or never; a note for a cap."""
    n = frames_per_block
    end = next_block_boundary(num_frames, n)  # generated: whole blocks
    if limit is not None and end > limit:
        capped = block_start(limit, n)
        note(
            f"--frames {num_frames}: this model stops at latent frame {limit} (its max_latent_frames); "
            f"the video ends at frame {capped}"
        )
        end = capped
    effective: dict[int, int] = {}
    for frame in sorted(schedule):
        at = next_block_boundary(frame, n)
        if frame >= end:
            note(f"the prompt at frame {frame} is past the end of the video (frame {end}): it is not used")
            continue
        if at != frame:
            note(
                f"the prompt at frame {frame} takes effect at frame {at}, the next block boundary "
                f"(blocks are {n} latent frames)"
            )
        if at in effective:
            note(
                f"the prompt at frame {frame} replaces the one at frame {effective[at]}: both take effect at frame {at}"
            )
        effective[at] = frame


def prompt_check(pipe: Any, schedule: dict[int, str]) -> None:
    """Warn about prompts the model cannot read (unknown words, too many tokens, out of the
    demo model's form)."""
    from .model.tokenizer import model_form, model_hint, prompt_warnings

    tokenizer = getattr(getattr(pipe, "text_encoder", None), "tokenizer", None)
    if tokenizer is None:
        return
    hint, form = model_hint(pipe.config), model_form(pipe.config)
    for frame, text in sorted(schedule.items()):
        for _code, message in prompt_warnings(tokenizer, text, hint=hint, form=form):
            warn(f"prompt at frame {frame} ({text!r}): {message}")


def torch_threads() -> str:
    """`1 torch thread` or `N torch threads` (LONGLIVE_THREADS, threads.py)."""
    import torch

    n = torch.get_num_threads()
    return f"{n} torch thread{'s' if n != 1 else ''}"


def cmd_generate(args: argparse.Namespace) -> int:
    from longlive.video import VideoWriter

    from .progress import progress_bar, shorten

    schedule = build_schedule(args)
    if not schedule:
        raise CLIError("give at least one prompt: --prompt '0:a red circle' or --schedule FILE")
    if 0 not in schedule:
        raise CLIError("the schedule needs a prompt at frame 0")
    if args.frames <= 0:
        raise CLIError("--frames must be positive")

    pipe = load_from_args(args)
    cfg = pipe.config
    schedule_notes(schedule, cfg.frames_per_block, args.frames, cfg.stream.max_latent_frames)
    prompt_check(pipe, schedule)
    total_video = latent_to_video_frame(
        next_block_boundary(args.frames, cfg.frames_per_block), cfg.vae.temporal_compression
    )
    start = time.perf_counter()
    with (
        VideoWriter(args.out, fps=cfg.fps) as writer,
        progress_bar(total_video, "generating", unit="frames", enabled=not args.quiet) as bar,
    ):
        for block in pipe.stream(schedule, args.frames, seed=args.seed):
            writer.write(block.frames)
            bar.set_postfix_str(f"frame {block.start_frame}: {shorten(str(block.prompt))}", refresh=False)
            bar.update(block.num_frames)
    elapsed = time.perf_counter() - start
    if not args.quiet:
        print(
            f"wrote {writer.frames_written} frames ({writer.frames_written / cfg.fps:.1f} s of video) to {args.out} "
            f"in {elapsed:.1f} s ({writer.frames_written / elapsed:.1f} frames/s, {torch_threads()})",
            file=sys.stderr,
        )
    return 0


# --- entry point ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longlive-runner", description="Real-time interactive long video generation with LongLive."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "info",
        help="print a model's configuration, parameter counts and memory needs as JSON",
        description="Print a model's configuration, parameter counts and memory needs (bf16 weights, "
        "KV cache) as JSON on stdout. Nothing is loaded: the networks are built on torch's meta device, "
        "so it works for longlive-1.3b without its weights.",
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"model name (demo, tiny, longlive-1.3b) or a converted folder (default: {DEFAULT_MODEL})",
    )
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
    p.add_argument(
        "--frames", type=int, default=24, help="latent frames to generate, rounded up to blocks (default 24)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the video's noise: same schedule and seed, same video (default 0)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("longlive.mp4"), help="output mp4 path (default longlive.mp4)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Any]:
    """Subcommands defined in their own modules (convert, serve, cluster, download)."""
    # Imported explicitly: an error in any module must show, not hide its command. None of them
    # imports torch or Ray at import time.
    from .serving import command as server
    from .serving.cluster import command as cluster
    from .weights import convert, download

    return [convert.register_cli, server.register_cli, cluster.register_cli, download.register_cli]


#: The modules of the `runner` extra (pyproject.toml), by import name: every command needs them.
RUNNER_EXTRA_MODULES = ("torch", "safetensors", "einops", "tokenizers", "tqdm", "httpx")


def missing_runner_modules() -> list[str]:
    """The `runner` extra's modules that are not installed (found without importing them)."""
    import importlib.util

    return [name for name in RUNNER_EXTRA_MODULES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> int:
    missing = missing_runner_modules()
    if missing:
        # `pip install longlive` (the client SDK) puts this command on PATH too: one line, not a
        # traceback, whatever the arguments (`--help` included).
        print(
            f"longlive-runner: error: the runner needs the 'runner' extra ({', '.join(missing)} "
            'not installed): pip install "longlive[runner]" ("longlive[all]" adds mp4 writing)',
            file=sys.stderr,
        )
        return 2
    from .threads import thread_environment

    try:  # before torch is imported (see threads.py)
        os.environ.update(thread_environment(os.environ))
    except ValueError as exc:
        print(f"longlive-runner: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: `info | head` closes the pipe before Python's last flush
        return code
    except CLIError as exc:
        print(f"longlive-runner: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`longlive-runner info | head`): stop quietly, as a killed writer
        # would (128 + SIGPIPE), and keep Python from failing again on its last flush of stdout.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def run() -> None:
    """The `longlive-runner` command (`python -m longlive_runner` too): `main()`, then exit.

    After `serve` shut down (its clients told, the server closed, the generation thread stopped
    or given up on) the process exits at once: the interpreter's teardown of torch took seconds
    on a busy machine, and a supervisor's SIGTERM should stop it in well under one."""
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] == ["serve"]:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
