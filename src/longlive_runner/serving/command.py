"""`longlive-runner serve`: load a model, serve it (`server.RunnerServer` over a `hub.Runner`) until a signal."""

from __future__ import annotations

import argparse
import asyncio
import socket
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from longlive.protocol import DEFAULT_LIMITS

from ..arguments import CLIError, add_model_args, load_from_args
from .listen import bind_socket, check_access_args
from .logs import setup_logging
from .options import ServeOptions, add_serve_args, check_serve_args, run_until_stopped
from .reactor.serve import add_cli_args as add_reactor_args
from .reactor.serve import attach as attach_reactor
from .reactor.serve import check_cli_args as check_reactor_args
from .server import RunnerServer

if TYPE_CHECKING:
    from ..model.pipeline import Pipeline

__all__ = ["SHUTDOWN_WAIT", "cmd_serve", "register_cli"]

#: `serve`'s stop: seconds it waits for clients to answer the close and for the block in flight.
SHUTDOWN_WAIT = 1.0


def register_cli(subparsers: Any) -> None:
    """Add `serve` to the `longlive-runner` command."""
    p = subparsers.add_parser(
        "serve",
        help="serve a model to WebSocket clients (the LongLive runner protocol)",
        description="Load a model and serve it over WebSocket at ws://HOST:PORT/ (docs/protocol.md), "
        "with GET /health and GET /info on the same port. Ctrl-C or SIGTERM stops it.",
    )
    add_model_args(p)
    add_serve_args(p)
    p.add_argument(
        "--max-frames",
        type=int,
        default=None,
        metavar="LATENT_FRAMES",
        help="end every video at this latent frame (a user limit; default: no end)",
    )
    add_reactor_args(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    check_serve_args(args)
    if args.max_frames is not None and not 3 <= args.max_frames <= DEFAULT_LIMITS.max_frames:
        raise CLIError(f"--max-frames must be in 3..{DEFAULT_LIMITS.max_frames} (at least one block)")
    check_access_args(args)
    problem = check_reactor_args(args)
    if problem is not None:
        raise CLIError(problem)
    setup_logging(args.log_level, args.token)
    # Bind first: a port in use fails at once, before seconds of model loading.
    sock = bind_socket(args.host, args.port)
    try:
        pipe = load_from_args(args)
        return asyncio.run(
            _serve(pipe, sock, ServeOptions.from_args(args), args.max_frames, reactor_args=args)
        )
    finally:
        sock.close()


async def _serve(
    pipe: Pipeline,
    sock: socket.socket,
    options: ServeOptions,
    max_frames: int | None,
    reactor_args: argparse.Namespace | None = None,
) -> int:
    from .hub import Runner

    limits = DEFAULT_LIMITS if max_frames is None else replace(DEFAULT_LIMITS, max_frames=max_frames)
    runner = Runner(pipe, limits=limits, grace_period=options.grace_period, **options.runner_options())
    server = RunnerServer(
        runner,
        token=options.token,
        allowed_origins=options.allow_origin,
        max_clients_per_address=options.max_clients_per_address,
    )
    # Reactor's clients (docs/reactor-clients.md), on the same front: --webrtc, --ice-server
    reactor = attach_reactor(server.front, runner, reactor_args) if reactor_args is not None else None
    try:
        await runner.start()
        await server.start(sock=sock)
        return await run_until_stopped(
            f"serving longlive ({pipe.config.name}) on {server.url}"
            + (" (token required)" if server.requires_token else "")
            + (" with Reactor's WebRTC clients" if reactor is not None else "")
        )
    finally:
        if reactor is not None:
            await reactor.close()
        # A stop (SIGTERM, Ctrl-C) is prompt: clients get their 1001 at once, but one that does
        # not answer the close, or a block in flight (torch cannot be interrupted), is waited
        # for SHUTDOWN_WAIT seconds at most; then the process exits (cli.run).
        await server.close(timeout=SHUTDOWN_WAIT)
        await runner.close(timeout=SHUTDOWN_WAIT)
