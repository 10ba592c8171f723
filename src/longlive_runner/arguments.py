"""Arguments and errors shared by every `longlive-runner` command that loads a model.

A leaf module: `cli.py` (the top floor) and the modules that register their own subcommands
(`server.py`, `download.py`, `cluster/command.py`) import it; it imports none of them, so no
library module depends on the CLI.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .model.config import DEFAULT_MODEL

__all__ = ["CLIError", "add_model_args", "error_text", "load_from_args", "resolve_device", "unknown_model"]


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


def error_text(exc: BaseException) -> str:
    """An exception's message as written (a KeyError's str() adds quotes around it)."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def unknown_model(name: object) -> CLIError:
    """The one wording of "no such model" (`generate`, `serve`, `info`)."""
    from .model.config import model_names

    return CLIError(f"{str(name)!r} is neither a model name nor a folder; models: {', '.join(model_names())}")


def resolve_device(name: str | None) -> str:
    """`--device` checked against this machine: one line (`CLIError`) when it cannot be used."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CLIError(f"--device {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = (
                "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            )
            raise CLIError(
                f"--device {name}: no CUDA device is available (torch {torch.__version__}, {build}); "
                "use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CLIError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {name}: MPS is not available on this machine; use --device cpu")
    return name


def check_weight_args(args: argparse.Namespace) -> None:
    """The weight options checked in the CLI's words (`--wan-dir`, not `load_pipeline`'s
    `wan_dir=`): `--longlive-dir` needs `--wan-dir`; the published model needs both (or a
    converted folder)."""
    from .model.config import resolve_model
    from .model.pipeline import DOWNLOAD_HINT

    if args.longlive_dir is not None and args.wan_dir is None:
        raise CLIError(
            "--longlive-dir needs --wan-dir too (the VAE and the text encoder come from the Wan folder)"
        )
    if args.wan_dir is None and args.model == "longlive-1.3b" and resolve_model(args.model) is None:
        raise CLIError(
            "--model longlive-1.3b needs its weights: --wan-dir WAN_FOLDER --longlive-dir LONGLIVE_FOLDER "
            f"(as downloaded), or --model CONVERTED_FOLDER; {DOWNLOAD_HINT}"
        )


def load_from_args(args: argparse.Namespace) -> Any:
    from .model.checkpoints import CheckpointError
    from .model.pipeline import load_pipeline

    check_weight_args(args)
    device = resolve_device(args.device)
    try:
        return load_pipeline(
            args.model or (None if args.wan_dir else DEFAULT_MODEL),
            wan_dir=args.wan_dir,
            longlive_dir=args.longlive_dir,
            device=device,
        )
    except (CheckpointError, KeyError, ValueError) as exc:
        raise CLIError(error_text(exc)) from exc


# --- info -------------------------------------------------------------------------------------
