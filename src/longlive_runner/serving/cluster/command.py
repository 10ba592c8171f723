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
import signal
import socket
import sys
from typing import Any

from longlive.protocol import MAX_SEED

from ...arguments import CLIError, add_model_args
from ..pacing import PACES
from ..server import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_HOST,
    DEFAULT_MAX_CLIENTS,
    DEFAULT_MAX_CLIENTS_PER_ADDRESS,
    DEFAULT_PORT,
    TOKEN_ENV,
    _grace_period,
    _setup_logging,
    bind_socket,
    check_access_args,
)
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
    p.add_argument("--workers", type=int, default=None, help="workers (default: the cluster's GPUs, or 1)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: 'auto' (the one started on this machine with `ray start`) or "
        "HOST:PORT; default: start a local Ray instance for this command",
    )
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
        help=f"require this token from clients (Authorization: Bearer TOKEN); default: ${TOKEN_ENV}",
    )
    p.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN use the cluster besides its own page (repeatable)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help=f"clients that may wait for a worker; one more gets 'queue_full', close code 1013 "
        f"(default {DEFAULT_MAX_QUEUE}; 0: no queue)",
    )
    p.add_argument(
        "--grace-period",
        type=_grace_period,
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="keep a session this long after its last client left, for clients to rejoin it; then "
        "its worker is free for the next client ('off': keep it for ever; default 30)",
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
        type=_grace_period,
        default=DEFAULT_IDLE_LIMIT,
        metavar="SECONDS",
        help="end a session none of whose directors sent a command for this long, when a client "
        f"waits for a worker ('off': never; default {DEFAULT_IDLE_LIMIT:g})",
    )
    p.add_argument(
        "--max-clients",
        type=int,
        default=DEFAULT_MAX_CLIENTS,
        help=f"clients of one session (owner and viewers; default {DEFAULT_MAX_CLIENTS})",
    )
    p.add_argument(
        "--max-clients-per-address",
        type=int,
        default=DEFAULT_MAX_CLIENTS_PER_ADDRESS,
        help=f"connections one address may hold, queued ones included (default {DEFAULT_MAX_CLIENTS_PER_ADDRESS})",
    )
    p.add_argument(
        "--max-queued-frames", type=int, default=None, help="frames queued per client (default 48)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of a start command that gives none (default 0)")
    p.add_argument(
        "--pace",
        choices=PACES,
        default="realtime",
        help="each session as serve's --pace: realtime (at video speed, the default) or fast",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per worker (default: 1 when the cluster has GPUs, else 0: CPU workers)",
    )
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (default 1)")
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="(default warning; info and debug also show the workers' logs)",
    )
    p.set_defaults(func=cmd_cluster)


def _check_args(args: argparse.Namespace) -> None:
    if args.workers is not None and args.workers < 1:
        raise CLIError("--workers must be >= 1")
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535, got {args.port}")
    if args.max_queue < 0:
        raise CLIError("--max-queue must be >= 0")
    if args.max_clients < 1:
        raise CLIError("--max-clients must be >= 1")
    if args.max_clients_per_address < 1:
        raise CLIError("--max-clients-per-address must be >= 1")
    if args.max_sessions_per_address is not None and args.max_sessions_per_address < 1:
        raise CLIError("--max-sessions-per-address must be >= 1")
    if args.idle_limit is not None and not args.idle_limit > 0:
        raise CLIError("--idle-limit must be > 0 seconds (or 'off')")
    if args.max_queued_frames is not None and args.max_queued_frames < 1:
        raise CLIError("--max-queued-frames must be >= 1")
    if not 0 <= args.seed <= MAX_SEED:
        raise CLIError(f"--seed must be in 0..{MAX_SEED}")
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        raise CLIError("--gpus-per-worker must be >= 0")
    if args.cpus_per_worker < 0:
        raise CLIError("--cpus-per-worker must be >= 0")
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


def cmd_cluster(args: argparse.Namespace) -> int:
    _check_args(args)
    preset, height, width = model_frame_size(args)
    try:
        from .ray_pool import ensure_ray

        ensure_ray()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    _setup_logging(args.log_level, args.token)
    # Bind first: a port in use fails at once, before Ray and the models start.
    sock = bind_socket(args.host, args.port)
    try:
        return asyncio.run(_run(sock, args, preset, height, width))
    finally:
        sock.close()


async def _run(sock: socket.socket, args: argparse.Namespace, preset: str, height: int, width: int) -> int:
    import ray

    from ..hub import DEFAULT_MAX_QUEUED_FRAMES
    from .gateway import Gateway, GatewayServer
    from .ray_pool import cluster_gpus, ray_auth_mode, start_ray, start_workers

    loop = asyncio.get_running_loop()
    await loop.run_in_executor(
        None,
        lambda: start_ray(
            args.address, workers=args.workers or 1, log_to_driver=args.log_level in ("debug", "info")
        ),
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which sets its own handler
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    gpus = cluster_gpus()
    workers = args.workers or max(int(gpus), 1)
    handles = start_workers(
        workers,
        model=args.model,
        wan_dir=str(args.wan_dir) if args.wan_dir else None,
        longlive_dir=str(args.longlive_dir) if args.longlive_dir else None,
        device=args.device,
        runner_options={
            "seed": args.seed,
            "max_peers": args.max_clients,
            "max_queued_frames": args.max_queued_frames or DEFAULT_MAX_QUEUED_FRAMES,
            "pace": args.pace,
        },
        num_gpus=args.gpus_per_worker,
        num_cpus=args.cpus_per_worker,
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
        grace_period=args.grace_period,
        max_sessions_per_address=args.max_sessions_per_address or default_sessions_per_address(workers),
        idle_limit=args.idle_limit,
        ray_auth=ray_auth,
    )
    server = GatewayServer(
        gateway,
        height=height,
        width=width,
        token=args.token,
        allowed_origins=args.allow_origin,
        max_clients_per_address=args.max_clients_per_address,
    )
    status = 0
    try:
        await gateway.start()
        await server.start(sock=sock)
        print(
            f"serving longlive ({preset}) on {server.url} (cluster: {workers} workers"
            f"{f', {gpus:g} GPUs' if gpus else ', CPU'})"
            + (" (token required)" if server.requires_token else ""),
            file=sys.stderr,
            flush=True,
        )
        failed = asyncio.ensure_future(gateway.failed.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        failed.cancel()
        stopping.cancel()
        if gateway.failed.is_set():
            print(f"longlive-runner: error: {gateway.failure_reason()}", file=sys.stderr, flush=True)
            status = 1
        else:
            print("longlive-runner: shutting down", file=sys.stderr, flush=True)
    finally:
        await server.close()
        await gateway.close()
        for handle in handles:
            with contextlib.suppress(Exception):
                handle.kill()
        await loop.run_in_executor(None, ray.shutdown)
    return status
