"""What `serve`, `cluster` and the Ray Serve app share: their options, defaults, checks and run loop.

One argparse group (`add_serve_args`) and one set of checks (`check_serve_args`) for the options
the three have in common, so that a default, a help text or a bound is written once:

```python
p = subparsers.add_parser("serve")
add_model_args(p)
add_serve_args(p)                        # --host --port --token --allow-origin --seed --max-clients ...
args = p.parse_args(argv)
check_serve_args(args)                   # CLIError with one line; the token resolved into args.token
options = ServeOptions.from_args(args)
```

`run_until_stopped` is the commands' run loop: SIGINT / SIGTERM handlers, the banner, the wait,
the shutdown line. The close codes the serving side sends are `CloseCode`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from longlive.auth import TOKEN_ENV
from longlive.protocol import MAX_SEED

from ..arguments import CLIError
from .pacing import PACES

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_HOST",
    "DEFAULT_MAX_CLIENTS",
    "DEFAULT_MAX_CLIENTS_PER_ADDRESS",
    "DEFAULT_MAX_QUEUED_FRAMES",
    "DEFAULT_PORT",
    "LOG_LEVELS",
    "CloseCode",
    "ServeOptions",
    "add_serve_args",
    "check_serve_args",
    "run_until_stopped",
    "seconds_or_off",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Connections (serve) or clients of one session (cluster) at once.
DEFAULT_MAX_CLIENTS = 16
#: Connections one address (an IPv6 /64) may hold at once: half the slots, so no one client
#: (a stuck script, a page gone wrong) can take them all.
DEFAULT_MAX_CLIENTS_PER_ADDRESS = 8
#: Frames queued per client before its oldest are dropped.
DEFAULT_MAX_QUEUED_FRAMES = 48
#: Seconds a session whose last client left is kept (serve: paused, then reset; cluster: for a
#: client to rejoin it).
DEFAULT_GRACE_PERIOD = 30.0
LOG_LEVELS = ("debug", "info", "warning", "error")


class CloseCode(enum.IntEnum):
    """The websocket close codes the runner, the gateway and the hub send (docs/protocol.md)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # shutting down
    POLICY = 1008  # a peer let too much text pile up
    INTERNAL_ERROR = 1011  # a bug, or the session's worker was lost
    TRY_AGAIN_LATER = 1013  # too many clients (in all, per address), the queue is full
    NO_SUCH_SESSION = 4404  # `?session=` names no live session
    SESSION_IDLE = 4408  # a session nobody drove was ended for a waiting client


def seconds_or_off(value: str) -> float | None:
    """An argparse type: seconds (>= 0), or `off` / `none` / `never` (None)."""
    if value.strip().lower() in ("off", "none", "never"):
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'off', got {value!r}") from None
    if not seconds >= 0:
        raise argparse.ArgumentTypeError("must be >= 0 seconds")
    return seconds


@dataclass(frozen=True)
class ServeOptions:
    """The options `serve`, `cluster` and the Ray Serve app share (their defaults are these)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    allow_origin: tuple[str, ...] = ()
    seed: int = 0
    max_clients: int = DEFAULT_MAX_CLIENTS
    max_clients_per_address: int = DEFAULT_MAX_CLIENTS_PER_ADDRESS
    max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES
    grace_period: float | None = DEFAULT_GRACE_PERIOD
    pace: str = "realtime"
    log_level: str = "warning"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        """From a namespace that `add_serve_args` filled (and `check_serve_args` checked)."""
        return cls(
            host=args.host,
            port=args.port,
            token=args.token,
            allow_origin=tuple(args.allow_origin),
            seed=args.seed,
            max_clients=args.max_clients,
            max_clients_per_address=args.max_clients_per_address,
            max_queued_frames=args.max_queued_frames or DEFAULT_MAX_QUEUED_FRAMES,
            grace_period=args.grace_period,
            pace=args.pace,
            log_level=args.log_level,
        )

    def runner_options(self) -> dict[str, Any]:
        """The keyword arguments of `hub.Runner` these options set (a cluster's workers get them)."""
        return {
            "seed": self.seed,
            "max_peers": self.max_clients,
            "max_queued_frames": self.max_queued_frames,
            "pace": self.pace,
        }


def add_serve_args(parser: argparse.ArgumentParser, *, cluster: bool = False) -> None:
    """The options `serve` and `cluster` share, with one default and help text each
    (`cluster`: the help speaks of sessions and workers)."""
    what = "the cluster" if cluster else "the runner"
    p = parser.add_argument_group("serving")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"interface to listen on (default {DEFAULT_HOST}); any non-loopback address needs a token",
    )
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 = any free port)"
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"require this token from clients (Authorization: Bearer TOKEN); default: ${TOKEN_ENV}. "
        f"Prefer the environment variable: a command line is visible to other users",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help=f"let web pages from ORIGIN (scheme://host[:port]) use {what} besides its own page; "
        "repeatable (docs/security.md)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of a start command that gives none (default 0)")
    p.add_argument(
        "--max-clients",
        type=int,
        default=DEFAULT_MAX_CLIENTS,
        help=(
            f"clients of one session (owner and viewers; default {DEFAULT_MAX_CLIENTS})"
            if cluster
            else f"connections at once; more are closed with code 1013 (default {DEFAULT_MAX_CLIENTS})"
        ),
    )
    p.add_argument(
        "--max-clients-per-address",
        type=int,
        default=DEFAULT_MAX_CLIENTS_PER_ADDRESS,
        metavar="N",
        help="connections at once from one address (an IPv6 /64)"
        + (", queued ones included" if cluster else "")
        + f"; more are closed with code 1013 (default {DEFAULT_MAX_CLIENTS_PER_ADDRESS})",
    )
    p.add_argument(
        "--max-queued-frames",
        type=int,
        default=None,
        help=f"frames queued per client before its oldest are dropped (default {DEFAULT_MAX_QUEUED_FRAMES})",
    )
    p.add_argument(
        "--grace-period",
        type=seconds_or_off,
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help=(
            "keep a session this long after its last client left, for clients to rejoin it; then "
            f"its worker is free for the next client ('off': keep it for ever; default {DEFAULT_GRACE_PERIOD:g})"
            if cluster
            else "when the last client leaves, the video is paused at once; it is reset (a fresh "
            "session for the next client) after this many seconds without a client ('off': never; "
            f"default {DEFAULT_GRACE_PERIOD:g})"
        ),
    )
    p.add_argument(
        "--pace",
        choices=PACES,
        default="realtime",
        help=(
            "each session as serve's --pace: realtime (at video speed, the default) or fast"
            if cluster
            else "realtime: generate at video speed, at most 2 blocks ahead of playback (the default); "
            "fast: as fast as the model can (benchmarks, recording)"
        ),
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=LOG_LEVELS,
        help="(default warning" + ("; info and debug also show the workers' logs)" if cluster else ")"),
    )


def check_serve_args(args: argparse.Namespace) -> None:
    """The bounds of `add_serve_args`' options (CLIError, one line); the access options are
    `server.check_access_args`'."""
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if args.max_clients < 1:
        raise CLIError("--max-clients must be >= 1")
    if args.max_clients_per_address < 1:
        raise CLIError("--max-clients-per-address must be >= 1")
    if args.max_queued_frames is not None and args.max_queued_frames < 1:
        raise CLIError("--max-queued-frames must be >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        raise CLIError(f"--seed must be in 0..{MAX_SEED}")


async def run_until_stopped(
    banner: str,
    *,
    failed: asyncio.Event | None = None,
    failure: Callable[[], str] = lambda: "failed",
) -> int:
    """The commands' run loop once everything has started: SIGINT / SIGTERM handlers, `banner`
    on stderr, then wait for a signal (0) or for `failed` (1, `failure()` printed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    print(banner, file=sys.stderr, flush=True)
    waits = {asyncio.ensure_future(stop.wait())}
    if failed is not None:
        waits.add(asyncio.ensure_future(failed.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    if failed is not None and failed.is_set():
        print(f"longlive-runner: error: {failure()}", file=sys.stderr, flush=True)
        return 1
    print("longlive-runner: shutting down", file=sys.stderr, flush=True)
    return 0
