"""The Ray side of the cluster: start or join Ray, start the worker actors, drive them.

Each worker is an async Ray actor holding a `worker.SessionWorker`: one GPU (`num_gpus=1`) where
the cluster has GPUs, else one CPU; `max_restarts=-1`, so Ray restarts a worker whose process died
(killed, out of memory) and the gateway takes it back once it answers. Everything Ray-specific
the gateway needs is in `RayWorkerHandle`.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

from .gateway import WorkerFailed

__all__ = ["RayWorkerHandle", "cluster_gpus", "ensure_ray", "ray_auth_mode", "start_ray", "start_workers"]

logger = logging.getLogger(__name__)

#: The Ray namespace the workers live in (their names: `longlive-worker-<n>-<random>`).
NAMESPACE = "longlive"
#: Ray's switch for its token authentication (Ray >= 2.52; on by default for a local `ray.init()`
#: cluster since 2.59; docs/cluster.md, "Ray's own ports").
RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"


def ensure_ray() -> Any:
    """`import ray`, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f'the cluster needs Ray: pip install "longlive[cluster]" (it installs ray[serve]) ({exc})'
        ) from exc
    return ray


def start_ray(address: str | None = None, *, workers: int = 1, log_to_driver: bool = False) -> None:
    """Join the Ray cluster at `address` ("auto": the one running on this machine; "HOST:PORT"),
    or, with None, start a local Ray instance for this process (stopped with it).

    A local instance gets at least one logical CPU per worker, so that `--workers N` CPU workers
    always fit on one machine (the demo model, tests); GPUs are detected by Ray. Ray (>= 2.59; the
    `cluster` extra asks for 2.60) runs a local instance with its token authentication on unless
    `RAY_AUTH_MODE` says otherwise (then a warning here), so that Ray's own ports, which listen on
    every interface, refuse other programs. Ray itself must switch it on: `RAY_AUTH_MODE=token`
    set here, after Ray read its configuration, would start a GCS without a token, which aborts.
    """
    ray = ensure_ray()
    if ray.is_initialized():
        return
    mode = os.environ.get(RAY_AUTH_MODE_ENV)
    if mode is not None and mode.strip().lower() != "token":
        logger.warning(
            "%s=%s: Ray's own ports accept anyone who reaches them (they can run code in the "
            "cluster); unset it (a local instance) or set it to 'token' (docs/cluster.md)",
            RAY_AUTH_MODE_ENV,
            mode,
        )
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": log_to_driver,
        "namespace": NAMESPACE,
        "configure_logging": False,
    }
    if address is None:
        options["address"] = "local"
        options["num_cpus"] = max(os.cpu_count() or 1, workers)
        # The workers pass frames over their own sockets, not through the object store.
        options["object_store_memory"] = 256 * 2**20
    else:
        options["address"] = address
    ray.init(**options)


def ray_auth_mode() -> str:
    """Ray's authentication mode in this process: "token" or "disabled" ("unknown" for a Ray
    without token authentication, older than 2.52)."""
    try:
        raylet: Any = importlib.import_module("ray._raylet")  # no type stubs for these names
        mode, token = raylet.get_authentication_mode(), raylet.AuthenticationMode.TOKEN
    except (ImportError, AttributeError):
        return "unknown"
    return "token" if mode == token else "disabled"


def cluster_gpus() -> float:
    """GPUs in the Ray cluster (0 when none)."""
    ray = ensure_ray()
    return float(ray.cluster_resources().get("GPU", 0))


class RayWorkerHandle:
    """A `gateway.WorkerHandle` over a `SessionWorker` actor."""

    def __init__(self, actor: Any, index: int) -> None:
        self.actor = actor
        self.index = index

    async def _call(self, method: str, *args: Any) -> Any:
        from ray.exceptions import ActorDiedError

        try:
            return await getattr(self.actor, method).remote(*args)
        except ActorDiedError as exc:
            if exc.actor_init_failed:  # the model did not load: restarting would not help
                raise WorkerFailed(_first_line(str(exc))) from exc
            raise

    async def ready(self) -> dict[str, Any]:
        return dict(await self._call("ready"))

    async def open_session(self, session_id: str, secret: str) -> dict[str, Any]:
        return dict(await self._call("open_session", session_id, secret))

    async def close_session(self, session_id: str | None) -> bool:
        return bool(await self._call("close_session", session_id))

    async def current_session(self) -> dict[str, Any]:
        return dict(await self._call("current_session"))

    def kill(self) -> None:
        """Stop the actor for good (no restart)."""
        import ray

        ray.kill(self.actor, no_restart=True)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Ray's message ends with the original exception: show that, it is what the user can fix.
    return lines[-1][:300] if lines else text[:300]


def start_workers(
    n: int,
    *,
    model: str | None = None,
    wan_dir: str | None = None,
    longlive_dir: str | None = None,
    device: str | None = None,
    runner_options: dict[str, Any] | None = None,
    num_gpus: float | None = None,
    num_cpus: float = 1,
    gateway_host: str | None = None,
    webrtc: dict[str, Any] | None = None,
) -> list[RayWorkerHandle]:
    """Start `n` `SessionWorker` actors (they load the model in the background).

    `num_gpus`: GPUs per worker; None: 1 when the cluster has GPUs, else 0 (CPU workers).
    `gateway_host`: the address of the gateway's machine (default: this process's, the caller
    being the gateway): workers on that machine listen on loopback only.
    `webrtc`: each worker serves Reactor's clients (`worker.SessionWorker`'s `webrtc`).
    """
    ensure_ray()
    from .worker import node_address, ray_worker_class

    if gateway_host is None:
        gateway_host = node_address()

    if num_gpus is None:
        num_gpus = 1.0 if cluster_gpus() > 0 else 0.0
    cls = ray_worker_class()
    suffix = os.urandom(3).hex()
    handles = []
    for i in range(n):
        actor = cls.options(
            name=f"longlive-worker-{i}-{suffix}",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_restarts=-1,
            max_task_retries=0,
        ).remote(
            model,
            wan_dir=wan_dir,
            longlive_dir=longlive_dir,
            device=device,
            gateway_host=gateway_host,
            runner_options=runner_options,
            webrtc=webrtc,
        )
        handles.append(RayWorkerHandle(actor, i))
    logger.info("started %d workers (%g GPU, %g CPU each)", n, num_gpus, num_cpus)
    return handles
