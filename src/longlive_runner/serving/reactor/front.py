"""`ReactorFront`: Reactor's local-mode protocol in front of one `hub.Runner`.

It owns the signalling state (`signalling.Signalling`, I/O-free) and the live WebRTC connections
(`media.ReactorConnection`, one hub peer each). The HTTP handlers (`routes.py`) call it; it
never reads sockets itself. Negotiation runs as a task per offer: the HTTP answer to an offer
is 202 at once and the client polls for the SDP answer, as Reactor's clients do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..access import address_key
from .media import MediaOptions, ReactorConnection
from .schema import command_capabilities
from .signalling import Candidate, Offer, Signalling, SignallingError, SignallingLimits

if TYPE_CHECKING:
    from ..hub import Runner

__all__ = ["ReactorFront"]

logger = logging.getLogger(__name__)

#: Offers being negotiated at once (each gathers candidates and sets up DTLS): more wait.
MAX_NEGOTIATIONS = 4
#: Seconds a negotiation may take before it is given up (the client sees 409 on its poll).
NEGOTIATION_TIMEOUT = 20.0


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("longlive")
    except Exception:  # pragma: no cover - not installed
        return "0"


class ReactorFront:
    """The Reactor session of one runner: descriptor, signalling, WebRTC connections."""

    def __init__(
        self,
        runner: Runner,
        *,
        options: MediaOptions = MediaOptions(),
        limits: SignallingLimits = SignallingLimits(),
        session_id: str | None = None,
        model_name: str = "longlive",
        max_per_address: int | None = None,
    ) -> None:
        self.runner = runner
        self.max_per_address = max_per_address
        self._addresses: dict[int, str] = {}  # connection id -> address key of its offer
        self.options = options
        self.model_name = model_name
        self.signalling = Signalling(limits=limits, ice_servers=options.ice_servers, session_id=session_id)
        self.connections: dict[int, ReactorConnection] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._negotiations = asyncio.Semaphore(MAX_NEGOTIATIONS)
        self._closed = False

    @property
    def fps(self) -> float:
        return float(self.runner.session.fps)

    def descriptor(self) -> dict[str, Any]:
        return self.signalling.descriptor(
            model=self.model_name,
            fps=self.fps,
            commands=command_capabilities(self.runner.limits),
            server_version=_version(),
        )

    # --- offers -------------------------------------------------------------------------------
    def check_address(self, peer: str | None, connection_id: int | None) -> None:
        """503 when `peer`'s address already holds `max_per_address` connections (a re-offer
        of one of its own does not count twice)."""
        if self.max_per_address is None:
            return
        key = address_key(peer)
        held = sum(1 for cid, k in self._addresses.items() if k == key and cid != connection_id)
        if held >= self.max_per_address:
            raise SignallingError(
                503, f"too many connections from one address (the limit is {self.max_per_address})"
            )

    def start_offer(self, offer: Offer, peer: str | None = None) -> None:
        """Negotiate `offer` in the background (the client polls `GET sdp_params`)."""
        if self._closed:
            raise SignallingError(503, "the runner is shutting down")
        self._addresses[offer.connection_id] = address_key(peer)
        old = self.connections.pop(offer.connection_id, None)
        if old is not None:  # a re-offer (reconnect): the old peer connection goes
            self._spawn(old.close("replaced by a new offer"))
        self._spawn(self._negotiate(offer))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _negotiate(self, offer: Offer) -> None:
        conn = ReactorConnection(
            self.runner, offer, options=self.options, fps=self.fps, on_closed=self._closed_conn
        )
        self.connections[offer.connection_id] = conn
        try:
            async with self._negotiations:
                early = self.signalling.take_early_candidates(offer.connection_id)
                sdp = await asyncio.wait_for(conn.negotiate(early), NEGOTIATION_TIMEOUT)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.info("connection %d: negotiation failed: %s", offer.connection_id, reason)
            self.signalling.failed(offer.connection_id, offer.epoch, reason)
            if self.connections.get(offer.connection_id) is conn:
                del self.connections[offer.connection_id]
                self._addresses.pop(offer.connection_id, None)
            await conn.close(reason)
            return
        if not self.signalling.answered(offer.connection_id, offer.epoch, sdp):
            await conn.close("a newer offer replaced this one")

    def _closed_conn(self, conn: ReactorConnection) -> None:
        if self.connections.get(conn.connection_id) is conn:
            del self.connections[conn.connection_id]
            self._addresses.pop(conn.connection_id, None)
            self.signalling.closed(conn.connection_id, conn.epoch)

    async def add_candidates(self, connection_id: int, candidates: list[Candidate]) -> None:
        conn = self.connections.get(connection_id)
        if conn is None:
            return  # before the offer: kept by the signalling, handed to the negotiation
        for cand in candidates:
            try:
                await conn.add_candidate(cand)
            except ValueError as exc:
                raise SignallingError(400, str(exc)) from exc

    async def close(self, reason: str = "the runner is shutting down") -> None:
        self._closed = True
        for conn in list(self.connections.values()):
            await conn.end_session(reason)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
