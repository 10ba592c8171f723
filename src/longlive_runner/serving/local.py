"""`LocalConnection`: the in-process transport of a hub (`Runner.connect_local()`, `Reactor.local()`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from longlive.errors import ConnectionClosedError
from longlive.protocol import FrameHeader

from .options import CloseCode

if TYPE_CHECKING:
    from .hub import Runner
    from .peers import Peer

__all__ = ["LocalConnection"]


class LocalConnection:
    """An in-process peer of a `Runner`: text commands in; texts and decoded frames out.

    It follows the SDK's transport contract (`send_text`, `recv`, `close`); frames come as
    `(FrameHeader, np.ndarray)` with the array read-only (shared with other peers), never
    encoded. Use it on the runner's event loop.
    """

    def __init__(self, runner: Runner, peer: Peer) -> None:
        self._runner = runner
        self._peer = peer

    @property
    def peer(self) -> Peer:
        return self._peer

    @property
    def closed(self) -> bool:
        return self._peer.closed

    @property
    def close_code(self) -> int | None:
        return self._peer.close_code

    @property
    def close_reason(self) -> str:
        return self._peer.close_reason

    @property
    def frames_dropped(self) -> int:
        """Frames dropped for this connection because it fell behind."""
        return self._peer.frames_dropped

    @property
    def queued_frames(self) -> int:
        return self._peer.queued_frames

    def _check_open(self) -> None:
        if self._peer.closed:
            raise ConnectionClosedError(self._peer.close_code, self._peer.close_reason)
        self._runner.check_loop()

    async def send_text(self, text: str) -> None:
        """Send one JSON command (the protocol's text message)."""
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes a str, not {type(text).__name__}")
        self._check_open()
        await self._runner.receive(self._peer, text)

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message (the runner refuses it with `unexpected_binary`)."""
        self._check_open()
        self._runner.receive_binary(self._peer, bytes(data))

    async def recv(self) -> str | tuple[FrameHeader, np.ndarray]:
        """The next JSON text message, or a frame as (header, uint8 [H, W, 3])."""
        item = await self._peer.get()
        if isinstance(item, str):
            return item
        return item.header, item.rgb

    async def close(self) -> None:
        self._runner.detach(self._peer, CloseCode.NORMAL, "closed by the client")

    async def __aenter__(self) -> LocalConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
