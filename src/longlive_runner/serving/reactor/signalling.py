"""The local-mode session and WebRTC signalling of Reactor's clients, as an I/O-free state machine.

What the HTTP routes (`routes.py`) do with a request is decided here; the media (`media.py`)
does the WebRTC. One session per runner: `serve` has ONE video, shared by its websocket and
WebRTC clients, so every `POST /start_session` answers the same descriptor (a second client
joins the session the first one started) and `POST /stop_session` ends no one's video (each
client's own connection ends when its peer connection closes; the runner pauses when its last
client leaves, as for websocket clients).

Connections (`/sessions/{id}/transport/webrtc/...`):

- `POST connections` registers one (201 `{connection_id}`, ids from 1001 on);
- `POST connections/{cid}/sdp_params` its first offer, `PUT` a re-offer (a reconnect: the old
  peer connection of that id is replaced) -> 202; `GET` -> 202 while the answer is being made,
  200 `{sdp_answer, connection_id}` once, 409 if making it failed;
- `POST connections/{cid}/ice_candidates` trickled candidates (202);
- the flat `POST|PUT|GET sdp_params` of JS SDK 2.9.0: a connection registered on the fly, at most
  one awaiting its answer at a time (another flat offer meanwhile: 409).

Bounds (`SignallingLimits`): live connections per session, connections registered but never
offered (the oldest is forgotten), SDP size, track-mapping entries, candidates per connection and
their length. A violation is a `SignallingError` carrying the HTTP status and a clear detail.
"""

from __future__ import annotations

import itertools
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "Candidate",
    "ConnState",
    "IceServer",
    "Offer",
    "Signalling",
    "SignallingError",
    "SignallingLimits",
    "TrackMapping",
]

FIRST_CONNECTION_ID = 1001
MAX_CONNECTION_ID = 2**32 - 1
TRACK_NAME = "main_video"


class SignallingError(Exception):
    """A request the signalling refuses: `status` is the HTTP status, `detail` says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class SignallingLimits:
    max_connections: int = 16  # live (offered) connections of the session
    max_pending_registrations: int = 32  # registered, never offered: the oldest are forgotten
    max_sdp_bytes: int = 64 * 1024
    max_track_mapping: int = 8
    max_candidates: int = 64  # per connection, over its life
    max_candidate_chars: int = 512


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server handed to clients (`GET ice_servers`) and used by the runner."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_wire(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"uris": list(self.urls)}
        if self.username is not None and self.credential is not None:
            entry["credentials"] = {"username": self.username, "password": self.credential}
        return entry

    @classmethod
    def parse(cls, spec: str) -> IceServer:
        """`stun:host:port` or `turn:user:password@host:port[?transport=udp]` (the CLI's form)."""
        spec = spec.strip()
        scheme, sep, rest = spec.partition(":")
        if not sep or scheme not in ("stun", "stuns", "turn", "turns") or not rest:
            raise ValueError(
                f"an ICE server is stun:HOST[:PORT] or turn:USER:PASSWORD@HOST[:PORT], got {spec!r}"
            )
        if "@" in rest:
            creds, _, host = rest.rpartition("@")
            user, sep2, password = creds.partition(":")
            if not sep2 or not user or not host:
                raise ValueError(f"expected turn:USER:PASSWORD@HOST[:PORT], got {scheme}:...@{host}")
            return cls((f"{scheme}:{host}",), user, password)
        return cls((spec,))


@dataclass(frozen=True)
class TrackMapping:
    mid: str
    name: str
    kind: str
    direction: str


@dataclass(frozen=True)
class Offer:
    """An accepted SDP offer for connection `connection_id` (`epoch`: this offer's number)."""

    connection_id: int
    sdp: str
    tracks: tuple[TrackMapping, ...]
    epoch: int
    flat: bool
    reoffer: bool


@dataclass(frozen=True)
class Candidate:
    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int | None


class ConnState(Enum):
    REGISTERED = "registered"
    NEGOTIATING = "negotiating"
    ANSWERED = "answered"  # answer made, not yet taken
    CONNECTED = "connected"  # answer taken
    FAILED = "failed"


@dataclass
class _Connection:
    id: int
    flat: bool = False
    state: ConnState = ConnState.REGISTERED
    epoch: int = 0
    answer: str | None = None
    error: str | None = None
    candidates: int = 0
    early: list[Candidate] = field(default_factory=list)  # trickled before the offer


def _obj(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SignallingError(400, f"{what}: the body must be a JSON object")
    return body


class Signalling:
    """The session descriptor and the connection registry of one runner's Reactor session."""

    def __init__(
        self,
        *,
        limits: SignallingLimits = SignallingLimits(),
        ice_servers: tuple[IceServer, ...] = (),
        session_id: str | None = None,
    ) -> None:
        self.limits = limits
        self.ice_servers = ice_servers
        self.session_id = session_id or str(uuid.uuid4())
        self.started = False
        self._ids = itertools.count(FIRST_CONNECTION_ID)
        self._conns: OrderedDict[int, _Connection] = OrderedDict()

    # --- session ------------------------------------------------------------------------------
    def start_session(self) -> None:
        self.started = True

    def stop_session(self) -> None:
        """Nothing of the shared video stops (module docstring); the session stays listed."""

    def check_session(self, session_id: str) -> None:
        if session_id != self.session_id:
            raise SignallingError(404, "Unknown session")
        if not self.started:
            raise SignallingError(400, "No session running: POST /start_session first")

    def ice_servers_payload(self) -> dict[str, Any]:
        return {"ice_servers": [s.to_wire() for s in self.ice_servers]}

    # --- connections --------------------------------------------------------------------------
    @property
    def live(self) -> int:
        return sum(1 for c in self._conns.values() if c.state is not ConnState.REGISTERED)

    def state(self, connection_id: int) -> ConnState | None:
        conn = self._conns.get(connection_id)
        return conn.state if conn is not None else None

    def register(self) -> int:
        """A new connection id (201). Registrations never offered are bounded, oldest forgotten."""
        self._trim_registrations(keep=1)
        cid = next(self._ids)
        if cid > MAX_CONNECTION_ID:  # pragma: no cover - four billion registrations
            raise SignallingError(503, "No connection ids left")
        self._conns[cid] = _Connection(cid)
        return cid

    def _get(self, connection_id: int) -> _Connection:
        conn = self._conns.get(connection_id)
        if conn is None:
            raise SignallingError(404, f"Unknown connection {connection_id}")
        return conn

    def _flat(self) -> _Connection | None:
        for conn in reversed(self._conns.values()):
            if conn.flat:
                return conn
        return None

    def offer(self, connection_id: int | None, body: Any, *, reoffer: bool) -> Offer:
        """Accept an SDP offer (POST: first, PUT: re-offer); `connection_id` None: the flat route."""
        obj = _obj(body, "sdp_params")
        sdp = obj.get("sdp_offer")
        if not isinstance(sdp, str) or not sdp.strip():
            raise SignallingError(400, "sdp_params: sdp_offer must be a non-empty string")
        if len(sdp.encode("utf-8", "replace")) > self.limits.max_sdp_bytes:
            raise SignallingError(413, f"sdp_params: the offer is over {self.limits.max_sdp_bytes} bytes")
        if not sdp.lstrip().startswith("v=0"):
            raise SignallingError(400, "sdp_params: sdp_offer is not an SDP session description (v=0 ...)")
        tracks = self._tracks(obj.get("track_mapping", []))
        flat = connection_id is None
        if flat:
            current = self._flat()
            if current is not None and current.state in (ConnState.NEGOTIATING, ConnState.ANSWERED):
                raise SignallingError(409, "another offer on sdp_params is still waiting for its answer")
            self._check_capacity()
            conn = self._conns[self.register()]
            conn.flat = True
        else:
            assert connection_id is not None
            conn = self._get(connection_id)
            if conn.state is ConnState.REGISTERED:
                self._check_capacity()
            elif conn.state is ConnState.FAILED:
                pass  # a new offer after a failed one
            elif not reoffer:
                raise SignallingError(409, f"connection {conn.id} already has an offer: PUT to re-offer")
        conn.state = ConnState.NEGOTIATING
        conn.epoch += 1
        conn.answer = conn.error = None
        conn.candidates = len(conn.early)  # each offer has its own candidate budget
        return Offer(conn.id, sdp, tracks, conn.epoch, conn.flat, reoffer)

    def _check_capacity(self) -> None:
        if self.live >= self.limits.max_connections:
            raise SignallingError(503, f"Connection limit reached ({self.limits.max_connections})")

    def _tracks(self, raw: Any) -> tuple[TrackMapping, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise SignallingError(400, "sdp_params: track_mapping must be a list")
        if len(raw) > self.limits.max_track_mapping:
            raise SignallingError(
                400, f"sdp_params: more than {self.limits.max_track_mapping} track_mapping entries"
            )
        out = []
        for entry in raw:
            e = _obj(entry, "track_mapping entry")
            values = [e.get(k) for k in ("mid", "name", "kind", "direction")]
            strings = [v for v in values if isinstance(v, str) and 0 < len(v) <= 64]
            if len(strings) != 4:
                raise SignallingError(400, "track_mapping entries are {mid, name, kind, direction} strings")
            out.append(TrackMapping(*strings))
        return tuple(out)

    def answered(self, connection_id: int, epoch: int, sdp: str) -> bool:
        """The media side made the answer of offer `epoch` (False: stale, dropped)."""
        conn = self._conns.get(connection_id)
        if conn is None or conn.epoch != epoch or conn.state is not ConnState.NEGOTIATING:
            return False
        conn.state, conn.answer = ConnState.ANSWERED, sdp
        return True

    def failed(self, connection_id: int, epoch: int, reason: str) -> None:
        conn = self._conns.get(connection_id)
        if conn is not None and conn.epoch == epoch and conn.state is ConnState.NEGOTIATING:
            conn.state, conn.error = ConnState.FAILED, reason

    def take_answer(self, connection_id: int | None) -> dict[str, Any] | None:
        """200's body once the answer is made, None (202) while it is pending."""
        conn = self._flat() if connection_id is None else self._get(connection_id)
        if conn is None:
            raise SignallingError(404, "no offer was posted to sdp_params")
        if conn.state is ConnState.FAILED:
            raise SignallingError(409, f"negotiation failed: {conn.error}")
        if conn.state is ConnState.NEGOTIATING:
            return None
        if conn.state is ConnState.REGISTERED:
            raise SignallingError(409, f"connection {conn.id} has no offer yet")
        assert conn.answer is not None
        conn.state = ConnState.CONNECTED
        return {"sdp_answer": conn.answer, "connection_id": conn.id}

    def candidates(self, connection_id: int, body: Any) -> tuple[list[Candidate], bool, bool]:
        """Validated trickled candidates: (candidates, is_final, before the offer). Candidates
        that arrive before the offer are kept (bounded) and handed out with the offer."""
        conn = self._get(connection_id)
        obj = _obj(body, "ice_candidates")
        raw = obj.get("candidates", [])
        is_final = obj.get("is_final", False)
        if not isinstance(raw, list) or not isinstance(is_final, bool):
            raise SignallingError(400, "ice_candidates: {candidates: [...], is_final: bool}")
        if conn.candidates + len(raw) > self.limits.max_candidates:
            raise SignallingError(
                429, f"more than {self.limits.max_candidates} ICE candidates for one connection"
            )
        out = []
        for entry in raw:
            e = _obj(entry, "candidate")
            cand, mid, index = e.get("candidate"), e.get("sdp_mid"), e.get("sdp_mline_index")
            if not isinstance(cand, str) or len(cand) > self.limits.max_candidate_chars:
                raise SignallingError(400, "a candidate is {candidate: str, sdp_mid?, sdp_mline_index?}")
            if mid is not None and (not isinstance(mid, str) or len(mid) > 64):
                raise SignallingError(400, "sdp_mid must be a short string")
            if isinstance(index, float) and index.is_integer():
                index = int(index)
            if index is not None and (
                isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 64
            ):
                raise SignallingError(400, "sdp_mline_index must be a small integer")
            out.append(Candidate(cand, mid, index))
        conn.candidates += len(out)
        early = conn.state is ConnState.REGISTERED
        if early:
            conn.early.extend(out)
        return out, is_final, early

    def take_early_candidates(self, connection_id: int) -> list[Candidate]:
        conn = self._conns.get(connection_id)
        if conn is None:
            return []
        early, conn.early = conn.early, []
        return early

    def closed(self, connection_id: int, epoch: int | None = None) -> None:
        """The connection's peer connection ended (unless re-offered since): its id stays
        registered, so the client may re-offer on it (`PUT`, a reconnect), among the bounded
        registrations never offered; a flat-route connection is forgotten."""
        conn = self._conns.get(connection_id)
        if conn is None or (epoch is not None and conn.epoch != epoch):
            return
        if conn.flat:
            del self._conns[connection_id]
            return
        conn.state, conn.answer, conn.error, conn.early = ConnState.REGISTERED, None, None, []
        self._conns.move_to_end(connection_id)
        self._trim_registrations(keep=0)

    def _trim_registrations(self, keep: int) -> None:
        waiting = [c.id for c in self._conns.values() if c.state is ConnState.REGISTERED]
        while len(waiting) > self.limits.max_pending_registrations - keep:
            del self._conns[waiting.pop(0)]

    # --- the descriptor -----------------------------------------------------------------------
    def descriptor(
        self, *, model: str, fps: float, commands: list[dict[str, Any]], server_version: str
    ) -> dict[str, Any]:
        """What `POST /start_session` and `GET /session` answer (the shape both clients read)."""
        return {
            "session_id": self.session_id,
            "state": "ACTIVE" if self.started else "CREATED",
            "cluster": "local",
            "model": {"name": model},
            "server_info": {"server_version": server_version},
            "selected_transport": {"protocol": "webrtc", "version": "1.0"},
            "capabilities": {
                "protocol_version": "v0",
                "tracks": [{"name": TRACK_NAME, "kind": "video", "direction": "recvonly"}],
                "commands": commands,
                "emission_fps": float(fps),
            },
        }
