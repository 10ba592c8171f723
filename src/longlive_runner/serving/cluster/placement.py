"""Who gets which worker: the cluster gateway's bookkeeping, without I/O, clocks or Ray.

The gateway (`gateway.py`) calls these methods as things happen and carries out what they return;
every rule of docs/cluster.md about workers, sessions, their owners and the queue lives here and is
tested on its own (tests/test_cluster_units.py):

- a worker is `starting` (not ready yet), `free`, `busy` (it runs one session) or `down` (it
  died; Ray restarts it; it is `free` again once it answers);
- a client (any hashable "ticket", with the address it comes from: its `owner` key) arrives: it
  gets a free worker and a new session at once (`Assign`), or waits in the FIFO queue (`Wait`),
  or, when `max_queue` clients already wait, is turned away (`Reject`);
- an owner (an address) holds at most `max_sessions_per_owner` sessions: a client of an owner at
  its cap waits in the queue, passed over by the clients behind it, until one of its owner's
  sessions ends (so that no one address holds every worker);
- a session has two keys, both secret and never listed: its id (`SessionRecord.id`) joins it as a
  **director** (every command, as its owner), its `viewer_id` joins it as a **viewer** (frames and
  state, no command); only its clients learn them (`join`);
- when a session's last client leaves, the session is idle: the gateway starts the grace period
  and calls `expire` when it ends; a session still idle then is over and its worker is free.
  `wanted(id)` says whether a waiting client could take that session's worker if it ended: the
  gateway then ends an idle session at once instead of keeping it for the grace period;
- a freed or restarted worker goes to the first client of the queue that may take it (`Assign`s);
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
    "DIRECTOR",
    "VIEWER",
    "Assign",
    "Reject",
    "Scheduler",
    "SessionRecord",
    "Wait",
    "WorkerSlot",
    "new_session_id",
]

STARTING, FREE, BUSY, DOWN = "starting", "free", "busy", "down"
#: The two kinds of client of a session: a director may send every command; a viewer only watches.
DIRECTOR, VIEWER = "director", "viewer"


def new_session_id() -> str:
    """A fresh session key: 16 URL-safe characters (96 random bits). Knowing it is what lets a
    client join a session, so it is unguessable and never listed (`GET /info` shows no key); it is
    not a credential for the gateway itself (the token is)."""
    return secrets.token_urlsafe(12)


@dataclass
class WorkerSlot:
    id: int
    state: str = STARTING
    session: str | None = None


@dataclass
class SessionRecord:
    """A session: `id` (its director key), `worker`, `owner` (the address key of the client that
    opened it; None: not counted), `viewer_id` (its viewer key), its clients and, among them, the
    viewers."""

    id: str
    worker: int
    clients: set[Hashable] = field(default_factory=set)
    owner: str | None = None
    viewer_id: str = ""
    viewers: set[Hashable] = field(default_factory=set)

    @property
    def idle(self) -> bool:
        return not self.clients

    def role_of(self, ticket: Hashable) -> str:
        return VIEWER if ticket in self.viewers else DIRECTOR


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
    - `max_sessions_per_owner`: sessions one owner (address) may hold at once (None: no cap);
    - `session_ids`, `viewer_ids`: make the sessions' director and viewer keys (default
      `new_session_id`; tests pass counters).
    """

    def __init__(
        self,
        num_workers: int,
        *,
        max_queue: int = 64,
        max_sessions_per_owner: int | None = None,
        session_ids: Callable[[], str] = new_session_id,
        viewer_ids: Callable[[], str] = new_session_id,
    ) -> None:
        if num_workers < 1:
            raise ValueError("a cluster needs at least one worker")
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if max_sessions_per_owner is not None and max_sessions_per_owner < 1:
            raise ValueError("max_sessions_per_owner must be >= 1 (or None)")
        self.max_queue = max_queue
        self.max_sessions_per_owner = max_sessions_per_owner
        self.workers = [WorkerSlot(i) for i in range(num_workers)]
        self.sessions: dict[str, SessionRecord] = {}
        self._queue: deque[Hashable] = deque()
        self._told: dict[Hashable, tuple[int, int]] = {}
        self._where: dict[Hashable, str] = {}  # ticket -> session id
        self._owners: dict[Hashable, str | None] = {}  # ticket -> owner, from arrive to leave
        self._keys: dict[str, tuple[str, str]] = {}  # director or viewer key -> (session id, role)
        self._session_ids = session_ids
        self._viewer_ids = viewer_ids

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

    def owned(self, owner: str | None) -> int:
        """Sessions `owner` holds now (0 for None: an owner that is not counted)."""
        if owner is None:
            return 0
        return sum(1 for r in self.sessions.values() if r.owner == owner)

    def wanted(self, session_id: str) -> bool:
        """True when a waiting client could take the worker of `session_id` if it ended now (its
        owner, less that session, is under the cap): the gateway does not keep it idle then."""
        record = self.sessions.get(session_id)
        if record is None:
            return False
        for ticket in self._queue:
            owner = self._owners.get(ticket)
            held = self.owned(owner) - (1 if owner is not None and owner == record.owner else 0)
            if self._may_hold(owner, held + 1):
                return True
        return False

    # --- workers --------------------------------------------------------------------------------
    def worker_up(self, worker: int) -> list[Assign]:
        """`worker` answers (first start, or back after a restart): it is free, and the queue
        gets it. Idempotent for a worker already free or busy."""
        slot = self.workers[worker]
        if slot.state in (FREE, BUSY):
            return []
        slot.state, slot.session = FREE, None
        return self.fill()

    def worker_lost(self, worker: int) -> SessionRecord | None:
        """`worker` died: it is `down` until `worker_up`, and its session (returned, with the
        clients to tell) is over. Other sessions are untouched. Its owner now holds one session
        less: call `fill()` (a client of that owner may take another free worker)."""
        slot = self.workers[worker]
        record = self._forget(slot.session) if slot.session is not None else None
        slot.state, slot.session = DOWN, None
        return record

    # --- clients --------------------------------------------------------------------------------
    def arrive(self, ticket: Hashable, owner: str | None = None) -> Assign | Wait | Reject:
        """A client that wants a session of its own; `owner`: the address key it comes from."""
        if ticket in self._where or ticket in self._queue:
            raise ValueError(f"{ticket!r} already has a session or waits")
        self._owners[ticket] = owner
        slot = self._free_worker()
        # A free worker with clients waiting means they all wait for their owner's cap.
        if slot is not None and self._may_hold(owner, self.owned(owner) + 1):
            return self._assign(ticket, slot)
        if len(self._queue) >= self.max_queue:
            del self._owners[ticket]
            return Reject(ticket, len(self._queue), self.max_queue)
        self._queue.append(ticket)
        position = len(self._queue)
        return Wait(ticket, position, position)  # not told yet: `queue_updates()` includes it

    def place(self, ticket: Hashable, owner: str | None = None) -> Assign | None:
        """`arrive` without the queue: a session on a free worker now, or None (every worker
        busy, or `owner` at its cap). Clients waiting in the queue keep their turn: a free
        worker goes to a newcomer only when no waiting client may take it (as in `arrive`)."""
        if ticket in self._where or ticket in self._queue:
            raise ValueError(f"{ticket!r} already has a session or waits")
        slot = self._free_worker()
        if slot is None or not self._may_hold(owner, self.owned(owner) + 1):
            return None
        if any(self._may_take_one(t) for t in self._queue):  # pragma: no cover - fill() ran first
            return None
        self._owners[ticket] = owner
        return self._assign(ticket, slot)

    def join(self, ticket: Hashable, key: str) -> tuple[SessionRecord, str] | None:
        """Add `ticket` to the live session whose director or viewer key is `key`: (the session,
        `DIRECTOR` or `VIEWER`); None when the key names no live session."""
        found = self._keys.get(key)
        record = self.sessions.get(found[0]) if found is not None else None
        if found is None or record is None:
            return None
        if ticket in self._where or ticket in self._queue:
            raise ValueError(f"{ticket!r} already has a session or waits")
        role = found[1]
        record.clients.add(ticket)
        if role == VIEWER:
            record.viewers.add(ticket)
        self._where[ticket] = record.id
        return record, role

    def leave(self, ticket: Hashable) -> SessionRecord | None:
        """`ticket` is gone (it left the queue, or its session). Returns its session when the
        session is now idle (no client left): the gateway starts the grace period for it."""
        self._owners.pop(ticket, None)
        if ticket in self._queue:
            self._queue.remove(ticket)
            self._told.pop(ticket, None)
            return None
        sid = self._where.pop(ticket, None)
        record = self.sessions.get(sid) if sid is not None else None
        if record is None:
            return None
        record.clients.discard(ticket)
        record.viewers.discard(ticket)
        return record if record.idle else None

    def expire(self, session_id: str) -> list[Assign]:
        """The grace period of an idle session ended: if it is still idle it is over, and its
        worker goes to the queue. Nothing happens for a session clients rejoined."""
        record = self.sessions.get(session_id)
        if record is None or not record.idle:
            return []
        return self.end_session(session_id)

    def end_session(self, session_id: str) -> list[Assign]:
        """End a session now (its clients, if any, are forgotten: the gateway closes them) and
        give its worker to the queue."""
        record = self._forget(session_id)
        if record is None:
            return []
        slot = self.workers[record.worker]
        if slot.session == session_id:
            slot.state, slot.session = FREE, None
        return self.fill()

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

    def fill(self) -> list[Assign]:
        """Give the free workers to the first waiting clients whose owner is under its cap."""
        out = []
        while self._queue:
            slot = self._free_worker()
            if slot is None:
                break
            ticket = next((t for t in self._queue if self._may_take_one(t)), None)
            if ticket is None:
                break
            self._queue.remove(ticket)
            self._told.pop(ticket, None)
            out.append(self._assign(ticket, slot))
        return out

    # --- internals ------------------------------------------------------------------------------
    def _may_take_one(self, ticket: Hashable) -> bool:
        """The owner of waiting `ticket` may hold one session more."""
        owner = self._owners.get(ticket)
        return self._may_hold(owner, self.owned(owner) + 1)

    def _may_hold(self, owner: str | None, sessions: int) -> bool:
        cap = self.max_sessions_per_owner
        return owner is None or cap is None or sessions <= cap

    def _free_worker(self) -> WorkerSlot | None:
        return next((w for w in self.workers if w.state == FREE), None)

    def _forget(self, session_id: str) -> SessionRecord | None:
        record = self.sessions.pop(session_id, None)
        if record is None:
            return None
        self._keys.pop(record.id, None)
        self._keys.pop(record.viewer_id, None)
        for ticket in record.clients:
            self._where.pop(ticket, None)
        return record

    def _new_key(self, make: Callable[[], str]) -> str:
        key = make()
        while key in self._keys:  # pragma: no cover - 96 random bits
            key = make()
        return key

    def _assign(self, ticket: Hashable, slot: WorkerSlot) -> Assign:
        sid = self._new_key(self._session_ids)
        self._keys[sid] = (sid, DIRECTOR)
        viewer_id = self._new_key(self._viewer_ids)
        self._keys[viewer_id] = (sid, VIEWER)
        slot.state, slot.session = BUSY, sid
        self.sessions[sid] = SessionRecord(
            sid, slot.id, {ticket}, owner=self._owners.get(ticket), viewer_id=viewer_id
        )
        self._where[ticket] = sid
        return Assign(ticket, slot.id, sid)
