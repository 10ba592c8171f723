"""Who gets which worker: the cluster gateway's bookkeeping, without I/O, clocks or Ray.

The gateway (`gateway.py`) calls these methods as things happen and carries out what they return;
every rule of docs/cluster.md about workers, sessions and the queue lives here and is tested on
its own (tests/test_cluster_units.py):

- a worker is `starting` (not ready yet), `free`, `busy` (it runs one session) or `down` (it
  died; Ray restarts it; it is `free` again once it answers);
- a client (any hashable "ticket") arrives: it gets a free worker and a new session at once
  (`Assign`), or waits in the FIFO queue (`Wait`), or, when `max_queue` clients already wait, is
  turned away (`Reject`);
- another client joins a live session by its id (`join`);
- when a session's last client leaves, the session is idle: the gateway starts the grace period
  and calls `expire` when it ends; a session still idle then is over and its worker is free;
- a freed or restarted worker goes to the head of the queue at once (`Assign`s);
- a worker that dies ends only its session (`worker_lost` returns its clients).

Queue positions start at 1 (next in line). `queue_updates()` says which waiting clients must be
told their new position (a `queued` message): only those whose (position, length) changed since
they were last told.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "Assign",
    "Reject",
    "Scheduler",
    "SessionRecord",
    "Wait",
    "WorkerSlot",
    "new_session_id",
]

STARTING, FREE, BUSY, DOWN = "starting", "free", "busy", "down"


def new_session_id() -> str:
    """A fresh session id: 16 URL-safe characters (96 random bits). Knowing it is what lets a
    client join a session, so it is unguessable; it is not a credential for the gateway itself
    (the token is)."""
    return secrets.token_urlsafe(12)


@dataclass
class WorkerSlot:
    id: int
    state: str = STARTING
    session: str | None = None


@dataclass
class SessionRecord:
    id: str
    worker: int
    clients: set[Hashable] = field(default_factory=set)

    @property
    def idle(self) -> bool:
        return not self.clients


@dataclass(frozen=True)
class Assign:
    """`ticket` gets `worker`, which must open the new session `session_id` for it."""

    ticket: Hashable
    worker: int
    session_id: str


@dataclass(frozen=True)
class Wait:
    """`ticket` waits in the queue at `position` (1 = next) of `queue_length`."""

    ticket: Hashable
    position: int
    queue_length: int


@dataclass(frozen=True)
class Reject:
    """`ticket` is turned away: `max_queue` clients already wait."""

    ticket: Hashable
    queue_length: int
    max_queue: int


class Scheduler:
    """Workers, sessions and the waiting queue of one gateway (see the module docstring).

    - `num_workers`: workers 0..n-1, all `starting`;
    - `max_queue`: clients that may wait at once (0: none; a client finding every worker busy is
      rejected at once);
    - `session_ids`: makes session ids (default `new_session_id`; tests pass a counter).
    """

    def __init__(
        self,
        num_workers: int,
        *,
        max_queue: int = 64,
        session_ids: Callable[[], str] = new_session_id,
    ) -> None:
        if num_workers < 1:
            raise ValueError("a cluster needs at least one worker")
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self.max_queue = max_queue
        self.workers = [WorkerSlot(i) for i in range(num_workers)]
        self.sessions: dict[str, SessionRecord] = {}
        self._queue: deque[Hashable] = deque()
        self._told: dict[Hashable, tuple[int, int]] = {}
        self._where: dict[Hashable, str] = {}  # ticket -> session id
        self._session_ids = session_ids

    # --- views ----------------------------------------------------------------------------------
    @property
    def queue(self) -> list[Hashable]:
        return list(self._queue)

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    def position(self, ticket: Hashable) -> int | None:
        """1-based position of a waiting `ticket`; None when it does not wait."""
        try:
            return self._queue.index(ticket) + 1
        except ValueError:
            return None

    def count(self, state: str) -> int:
        return sum(1 for w in self.workers if w.state == state)

    @property
    def ready_workers(self) -> int:
        """Workers up (free or running a session)."""
        return self.count(FREE) + self.count(BUSY)

    # --- workers --------------------------------------------------------------------------------
    def worker_up(self, worker: int) -> list[Assign]:
        """`worker` answers (first start, or back after a restart): it is free, and the head of
        the queue gets it. Idempotent for a worker already free or busy."""
        slot = self.workers[worker]
        if slot.state in (FREE, BUSY):
            return []
        slot.state, slot.session = FREE, None
        return self._fill()

    def worker_lost(self, worker: int) -> SessionRecord | None:
        """`worker` died: it is `down` until `worker_up`, and its session (returned, with the
        clients to tell) is over. Other sessions are untouched."""
        slot = self.workers[worker]
        record = self.sessions.pop(slot.session, None) if slot.session is not None else None
        slot.state, slot.session = DOWN, None
        if record is not None:
            for ticket in record.clients:
                self._where.pop(ticket, None)
        return record

    # --- clients --------------------------------------------------------------------------------
    def arrive(self, ticket: Hashable) -> Assign | Wait | Reject:
        """A client that wants a session of its own."""
        if ticket in self._where or ticket in self._queue:
            raise ValueError(f"{ticket!r} already has a session or waits")
        if not self._queue:
            slot = self._free_worker()
            if slot is not None:
                return self._assign(ticket, slot)
        if len(self._queue) >= self.max_queue:
            return Reject(ticket, len(self._queue), self.max_queue)
        self._queue.append(ticket)
        position = len(self._queue)
        return Wait(ticket, position, position)  # not told yet: `queue_updates()` includes it

    def join(self, ticket: Hashable, session_id: str) -> SessionRecord | None:
        """Add `ticket` to the live session `session_id`; None when there is no such session."""
        record = self.sessions.get(session_id)
        if record is None:
            return None
        if ticket in self._where or ticket in self._queue:
            raise ValueError(f"{ticket!r} already has a session or waits")
        record.clients.add(ticket)
        self._where[ticket] = session_id
        return record

    def leave(self, ticket: Hashable) -> SessionRecord | None:
        """`ticket` is gone (it left the queue, or its session). Returns its session when the
        session is now idle (no client left): the gateway starts the grace period for it."""
        if ticket in self._queue:
            self._queue.remove(ticket)
            self._told.pop(ticket, None)
            return None
        sid = self._where.pop(ticket, None)
        record = self.sessions.get(sid) if sid is not None else None
        if record is None:
            return None
        record.clients.discard(ticket)
        return record if record.idle else None

    def expire(self, session_id: str) -> list[Assign]:
        """The grace period of an idle session ended: if it is still idle it is over, and its
        worker goes to the head of the queue. Nothing happens for a session clients rejoined."""
        record = self.sessions.get(session_id)
        if record is None or not record.idle:
            return []
        return self.end_session(session_id)

    def end_session(self, session_id: str) -> list[Assign]:
        """End a session now (its clients, if any, are forgotten: the gateway closes them) and
        give its worker to the head of the queue."""
        record = self.sessions.pop(session_id, None)
        if record is None:
            return []
        for ticket in record.clients:
            self._where.pop(ticket, None)
        slot = self.workers[record.worker]
        if slot.session == session_id:
            slot.state, slot.session = FREE, None
        return self._fill()

    def requeue(self, tickets: Iterable[Hashable]) -> None:
        """Put `tickets` (clients whose session could not be opened: the worker died first) back
        at the head of the queue, in order, whatever `max_queue` says."""
        for ticket in reversed(list(tickets)):
            self._where.pop(ticket, None)
            if ticket not in self._queue:
                self._queue.appendleft(ticket)

    def queue_updates(self) -> list[Wait]:
        """Waiting clients whose position or the queue's length changed since they were told;
        they count as told from now on."""
        out = []
        length = len(self._queue)
        for i, ticket in enumerate(self._queue):
            now = (i + 1, length)
            if self._told.get(ticket) != now:
                self._told[ticket] = now
                out.append(Wait(ticket, *now))
        return out

    # --- internals ------------------------------------------------------------------------------
    def _free_worker(self) -> WorkerSlot | None:
        return next((w for w in self.workers if w.state == FREE), None)

    def _assign(self, ticket: Hashable, slot: WorkerSlot) -> Assign:
        sid = self._session_ids()
        while sid in self.sessions:  # pragma: no cover - 96 random bits
            sid = self._session_ids()
        slot.state, slot.session = BUSY, sid
        self.sessions[sid] = SessionRecord(sid, slot.id, {ticket})
        self._where[ticket] = sid
        return Assign(ticket, slot.id, sid)

    def _fill(self) -> list[Assign]:
        out = []
        while self._queue:
            slot = self._free_worker()
            if slot is None:
                break
            ticket = self._queue.popleft()
            self._told.pop(ticket, None)
            out.append(self._assign(ticket, slot))
        return out
