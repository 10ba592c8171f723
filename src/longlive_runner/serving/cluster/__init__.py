"""Many users, many GPUs: a session per client on Ray workers, behind one websocket endpoint.

`longlive-runner cluster --workers N` (docs/cluster.md) starts or joins a Ray cluster, loads the
model on N workers and serves `serve`'s protocol on one port; each connection gets its own session
on a free worker, can be joined by id, or waits in a FIFO queue. The parts:

- `placement`: who gets which worker: workers, sessions, owners and the queue, without I/O (the rules);
- `worker`: `SessionWorker`, one model and one session (the runner's own `Runner` +
  `RunnerServer`), a Ray actor in a cluster;
- `gateway`: `Gateway` (assigns, queues, proxies, notices dead workers) and `GatewayServer`
  (serve's HTTP and access rules in front of it);
- `ray_pool`: starting Ray and the worker actors;
- `command`: the `cluster` subcommand; `app`: the same as a Ray Serve application
  (`serve run longlive_runner.serving.cluster.app:build_app workers=2`).

Importing this package needs neither Ray nor torch; Ray is imported where it is used
(`pip install "longlive[cluster]"`).
"""

from __future__ import annotations

from .placement import Assign, Reject, Scheduler, SessionRecord, Wait, new_session_id

__all__ = ["Assign", "Reject", "Scheduler", "SessionRecord", "Wait", "new_session_id"]
