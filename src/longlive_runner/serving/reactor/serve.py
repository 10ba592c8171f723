"""The Reactor front in `longlive-runner serve`: its command-line options and its attachment to
the server's HTTP front (called by `serving/command.py`; needs the `webrtc` extra only when on)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from . import MISSING_EXTRA, available

if TYPE_CHECKING:
    from ..http import HttpFront
    from ..hub import Runner
    from .front import ReactorFront

__all__ = ["add_cli_args", "attach", "check_cli_args"]


def add_cli_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Reactor clients over WebRTC (docs/reactor-clients.md)")
    g.add_argument(
        "--webrtc",
        choices=("on", "off"),
        default="on",
        help="serve Reactor's JS and Python clients (local mode) on the same port: session routes, "
        "WebRTC signalling, compressed video (default on; needs the webrtc extra)",
    )
    g.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="a STUN or TURN server for WebRTC, stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT]; "
        "repeatable. Default: none (host candidates only: same machine or network, no public STUN)",
    )
    g.add_argument(
        "--webrtc-max-connections",
        type=int,
        default=16,
        metavar="N",
        help="WebRTC connections at once (default 16; each also counts as a client of --max-clients)",
    )


def check_cli_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the Reactor options (None: nothing), checked before the model loads."""
    if getattr(args, "webrtc", "off") != "on":
        return None
    if args.webrtc_max_connections < 1:
        return "--webrtc-max-connections must be >= 1"
    from .signalling import IceServer

    for spec in args.ice_server:
        try:
            IceServer.parse(spec)
        except ValueError as exc:
            return f"--ice-server: {exc}"
    return None


def attach(front: HttpFront, runner: Runner, args: argparse.Namespace) -> ReactorFront | None:
    """The `ReactorFront` on `front` when `--webrtc on` and the extra is installed; else None
    (with a line on stderr saying why, when it was asked for)."""
    if getattr(args, "webrtc", "off") != "on":
        return None
    if not available():
        print(f"longlive-runner: Reactor clients not served: {MISSING_EXTRA}", file=sys.stderr, flush=True)
        return None
    from .front import ReactorFront
    from .media import MediaOptions
    from .routes import add_reactor_routes
    from .signalling import IceServer, SignallingLimits

    servers = tuple(IceServer.parse(s) for s in args.ice_server)
    reactor = ReactorFront(
        runner,
        options=MediaOptions(ice_servers=servers),
        limits=SignallingLimits(max_connections=args.webrtc_max_connections),
        max_per_address=getattr(args, "max_clients_per_address", None),
    )
    add_reactor_routes(front, reactor)
    return reactor
