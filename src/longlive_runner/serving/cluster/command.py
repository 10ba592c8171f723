"""`longlive-runner cluster`: sessions for many clients on Ray workers, behind one websocket.

```bash
longlive-runner cluster --workers 2                       # a local Ray instance, 2 workers
longlive-runner cluster --workers 8 --address auto        # join the Ray cluster of this machine
```

The endpoint speaks `serve`'s protocol (docs/protocol.md) with the same access rules, live page,
`/health` and `/info`; each connection gets its own session on a free worker, or waits in the
queue (docs/cluster.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from typing import Any

from ...arguments import CLIError, add_model_args
from ..listen import bind_socket, check_access_args
from ..logs import setup_logging
from ..options import ServeOptions, add_serve_args, check_serve_args, run_until_stopped, seconds_or_off
from ..reactor.serve import add_cli_args as add_reactor_args
from ..reactor.serve import check_cli_args as check_reactor_args
from .gateway import DEFAULT_IDLE_LIMIT, DEFAULT_MAX_QUEUE, default_sessions_per_address

__all__ = ["cmd_cluster", "register_cli"]


def register_cli(subparsers: Any) -> None:
    """Add `cluster` to the `longlive-runner` command."""
    p = subparsers.add_parser(
        "cluster",
        help="serve a model to many clients on Ray workers: a session per client, a queue (docs/cluster.md)",
        description="Start (or join, --address) a Ray cluster, load the model on --workers workers "
        "(a GPU each where there are GPUs) and serve them at ws://HOST:PORT/ with serve's protocol: "
        "each connection gets its own session on a free worker (hello carries session_id; join "
        "one with ?session=ID), or waits in the queue. Needs: pip install 'longlive[cluster]'.",
    )
    add_model_args(p)
    add_serve_args(p, cluster=True)
    add_cluster_args(p)
    add_reactor_args(p)  # each Reactor /start_session gets its own session (docs/cluster.md)
    p.set_defaults(func=cmd_cluster)


def add_cluster_args(parser: argparse.ArgumentParser, *, command_line: bool = True) -> None:
    """The options of a cluster beyond `serve`'s (`command_line=False`: without `--address`,
    for the Ray Serve app, which runs inside a cluster already)."""
    p = parser.add_argument_group("cluster")
    p.add_argument("--workers", type=int, default=None, help="workers (default: the cluster's GPUs, or 1)")
    if command_line:
        p.add_argument(
            "--address",
            default=None,
            help="Ray cluster to join: 'auto' (the one started on this machine with `ray start`) or "
            "HOST:PORT; default: start a local Ray instance for this command",
        )
    p.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help=f"clients that may wait for a worker; one more gets 'queue_full', close code 1013 "
        f"(default {DEFAULT_MAX_QUEUE}; 0: no queue)",
    )
    p.add_argument(
        "--max-sessions-per-address",
        type=int,
        default=None,
        metavar="N",
        help="sessions one client address (an IPv6 /64) may hold at once; past it, its new "
        "connections wait in the queue (default: every worker but one, at least 1; raise it "
        "behind a proxy, where every client has the proxy's address)",
    )
    p.add_argument(
        "--idle-limit",
        type=seconds_or_off,
        default=DEFAULT_IDLE_LIMIT,
        metavar="SECONDS",
        help="end a session none of whose directors sent a command for this long, when a client "
        f"waits for a worker ('off': never; default {DEFAULT_IDLE_LIMIT:g})",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per worker (default: 1 when the cluster has GPUs, else 0: CPU workers)",
    )
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (default 1)")


def check_cluster_args(args: argparse.Namespace) -> None:
    """The bounds of `add_cluster_args`' options (CLIError, one line)."""
    if args.workers is not None and args.workers < 1:
        raise CLIError("--workers must be >= 1")
    if args.max_queue < 0:
        raise CLIError("--max-queue must be >= 0")
    if args.max_sessions_per_address is not None and args.max_sessions_per_address < 1:
        raise CLIError("--max-sessions-per-address must be >= 1")
    if args.idle_limit is not None and not args.idle_limit > 0:
        raise CLIError("--idle-limit must be > 0 seconds (or 'off')")
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        raise CLIError("--gpus-per-worker must be >= 0")
    if args.cpus_per_worker < 0:
        raise CLIError("--cpus-per-worker must be >= 0")


def _check_args(args: argparse.Namespace) -> None:
    check_serve_args(args)
    check_cluster_args(args)
    problem = check_reactor_args(args)
    if problem is not None:
        raise CLIError(problem)
    check_access_args(args, "the models")


def model_frame_size(args: argparse.Namespace) -> tuple[str, int, int]:
    """(preset name, height, width) of the model the workers will load; no weights are read.
    CLIError for a model that does not exist (before any worker starts)."""
    from ...model.checkpoints import CheckpointError, read_converted_config
    from ...model.config import DEFAULT_MODEL, get_preset, resolve_model

    if args.wan_dir is not None:
        config = get_preset(args.model or "longlive-1.3b")
        return config.name, config.height, config.width
    name = args.model or DEFAULT_MODEL
    try:
        folder = resolve_model(name)
        config = read_converted_config(folder) if folder is not None else get_preset(name)
    except (CheckpointError, KeyError, ValueError) as exc:
        raise CLIError(str(exc).strip("'\"")) from None
    return config.name, config.height, config.width


def _webrtc_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The workers' `webrtc` option from `--webrtc`, `--ice-server`, `--webrtc-max-connections`
    (None: off, or the `webrtc` extra missing here, said on stderr)."""
    if getattr(args, "webrtc", "off") != "on":
        return None
    from ..reactor import MISSING_EXTRA, available

    if not available():
        print(f"longlive-runner: Reactor clients not served: {MISSING_EXTRA}", file=sys.stderr, flush=True)
        return None
    return {"ice_servers": list(args.ice_server), "max_connections": args.webrtc_max_connections}


def cmd_cluster(args: argparse.Namespace) -> int:
    _check_args(args)
    preset, height, width = model_frame_size(args)
    try:
        from .ray_pool import ensure_ray

        ensure_ray()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    setup_logging(args.log_level, args.token)
    # Bind first: a port in use fails at once, before Ray and the models start.
    sock = bind_socket(args.host, args.port)
    try:
        return asyncio.run(_run(sock, args, preset, height, width))
    finally:
        sock.close()


async def _run(sock: socket.socket, args: argparse.Namespace, preset: str, height: int, width: int) -> int:
    import ray

    from .gateway import Gateway, GatewayServer
    from .ray_pool import cluster_gpus, ray_auth_mode, start_ray, start_workers

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(
        None,
        lambda: start_ray(
            args.address, workers=args.workers or 1, log_to_driver=args.log_level in ("debug", "info")
        ),
    )
    options = ServeOptions.from_args(args)
    gpus = cluster_gpus()
    webrtc = _webrtc_options(args)
    workers = args.workers or max(int(gpus), 1)
    handles = start_workers(
        workers,
        model=args.model,
        wan_dir=str(args.wan_dir) if args.wan_dir else None,
        longlive_dir=str(args.longlive_dir) if args.longlive_dir else None,
        device=args.device,
        runner_options=options.runner_options(),
        num_gpus=args.gpus_per_worker,
        num_cpus=args.cpus_per_worker,
        webrtc=webrtc,
    )
    ray_auth = ray_auth_mode()
    if ray_auth != "token":
        print(
            f"longlive-runner: warning: Ray's token authentication is {ray_auth} in this cluster: "
            "its ports accept any program that reaches them (docs/cluster.md, Ray's own ports)",
            file=sys.stderr,
            flush=True,
        )
    gateway = Gateway(
        handles,
        max_queue=args.max_queue,
        grace_period=options.grace_period,
        max_sessions_per_address=args.max_sessions_per_address or default_sessions_per_address(workers),
        idle_limit=args.idle_limit,
        ray_auth=ray_auth,
    )
    server = GatewayServer(
        gateway,
        height=height,
        width=width,
        token=options.token,
        allowed_origins=options.allow_origin,
        max_clients_per_address=options.max_clients_per_address,
        reactor=webrtc is not None,
    )
    status = 0
    try:
        await gateway.start()
        await server.start(sock=sock)
        status = await run_until_stopped(  # its signal handlers replace the ones ray.init set
            f"serving longlive ({preset}) on {server.url} (cluster: {workers} workers"
            f"{f', {gpus:g} GPUs' if gpus else ', CPU'})"
            + (" (token required)" if server.requires_token else ""),
            failed=gateway.failed,
            failure=gateway.failure_reason,
        )
    finally:
        await server.close()
        await gateway.close()
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.kill()
        await loop.run_in_executor(None, ray.shutdown)
    return status
