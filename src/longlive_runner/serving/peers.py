"""`Peer`: one connected client as the hub sees it, with its bounded outgoing queue and the drop policy.

Frames are dropped oldest first when a peer falls `max_queued_frames` behind (it is told with a
`frames_dropped` message); text messages are never dropped, except a `state` snapshot that a
newer one replaces before it was sent; a peer past `max_queued_text_chars` of queued text is
closed (code 1008) by the hub. Queueing never waits (docs/protocol.md, section 1.2).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from longlive.errors import ConnectionClosedError
from longlive.protocol import FramesDropped, encode_message

from .frames import OutFrame
from .options import DEFAULT_MAX_QUEUED_FRAMES, CloseCode

__all__ = ["DEFAULT_MAX_QUEUED_FRAMES", "DEFAULT_MAX_QUEUED_TEXT_CHARS", "Peer"]

#: Text queued per peer (in characters) before the peer is disconnected as too slow.
DEFAULT_MAX_QUEUED_TEXT_CHARS = 4 * 2**20


class Peer:
    """One connected client as the hub sees it: an outgoing queue with the drop policy.

    Texts and frames wait in two queues tagged with one sequence number, so they come out in the
    order they were put in. The transport takes items with `get()`: a `str` (a JSON text
    message) or an `OutFrame`. A text queued with `state=True` (a snapshot) supersedes the
    previous snapshot still waiting: that one is never sent.
    """

    def __init__(self, name: str, *, max_queued_frames: int, max_queued_text_chars: int) -> None:
        self.name = name
        self.max_queued_frames = max_queued_frames
        self.max_queued_text_chars = max_queued_text_chars
        # [seq, text]; text None: a snapshot superseded by a newer one (skipped, compacted away).
        self._texts: deque[list[Any]] = deque()
        self._frames: deque[tuple[int, OutFrame]] = deque()
        self._seq = 0
        self._text_chars = 0
        self._live_texts = 0
        self._superseded = 0
        self._queued_state: list[Any] | None = None
        self.states_superseded = 0
        self._unreported_drops = 0
        self._last_drop_seq = -1
        self.frames_dropped = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._ready = asyncio.Event()
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Peer {self.name}>"

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    @property
    def queued_frames(self) -> int:
        return len(self._frames)

    @property
    def queued_texts(self) -> int:
        return self._live_texts

    @property
    def queued_text_chars(self) -> int:
        """Size of the queued text messages (in characters), bounded by `max_queued_text_chars`."""
        return self._text_chars

    def put_text(self, text: str, *, state: bool = False) -> bool:
        """Queue a text message; False (nothing queued) when the text backlog is over the limit.

        `state`: `text` is a `state` snapshot; one still queued is superseded by it (dropped, its
        size given back), and it goes at the end of the queue.
        """
        if self.closed:
            return True
        old = self._queued_state if state else None
        freed = len(old[1]) if old is not None else 0
        if self._text_chars - freed + len(text) > self.max_queued_text_chars:
            return False
        if old is not None:
            old[1] = None
            self._text_chars -= freed
            self._live_texts -= 1
            self._superseded += 1
            self.states_superseded += 1
            if self._superseded > 64 and self._superseded > self._live_texts:
                self._texts = deque(e for e in self._texts if e[1] is not None)
                self._superseded = 0
        entry = [self._seq, text]
        self._texts.append(entry)
        self._seq += 1
        self._text_chars += len(text)
        self._live_texts += 1
        if state:
            self._queued_state = entry
        self._ready.set()
        return True

    def put_frame(self, frame: OutFrame) -> None:
        """Queue a frame; when `max_queued_frames` are already waiting, the oldest is dropped."""
        if self.closed:
            return
        while self._frames and len(self._frames) >= self.max_queued_frames:
            seq, _ = self._frames.popleft()
            self._last_drop_seq = seq
            self._unreported_drops += 1
            self.frames_dropped += 1
        if self.max_queued_frames > 0:
            self._frames.append((self._seq, frame))
            self._seq += 1
        else:  # pragma: no cover - a peer that takes no frames at all
            self._unreported_drops += 1
            self.frames_dropped += 1
        self._ready.set()

    def purge_frames(self, generation: int) -> int:
        """Forget queued frames of generations before `generation` (stale after a reset)."""
        before = len(self._frames)
        self._frames = deque(item for item in self._frames if item[1].header.generation >= generation)
        return before - len(self._frames)

    def get_nowait(self) -> str | OutFrame | None:
        """The next item to send, or None when nothing is queued."""
        while self._texts and self._texts[0][1] is None:  # superseded snapshots
            self._texts.popleft()
            self._superseded -= 1
        head_text = self._texts[0][0] if self._texts else None
        head_frame = self._frames[0][0] if self._frames else None
        heads = [s for s in (head_text, head_frame) if s is not None]
        if self._unreported_drops and (not heads or min(heads) > self._last_drop_seq):
            count, self._unreported_drops = self._unreported_drops, 0
            return encode_message(FramesDropped(count=count, total=self.frames_dropped))
        if not heads:
            return None
        if head_frame is None or (head_text is not None and head_text < head_frame):
            entry = self._texts.popleft()
            if entry is self._queued_state:
                self._queued_state = None
            text: str = entry[1]
            self._text_chars -= len(text)
            self._live_texts -= 1
            return text
        return self._frames.popleft()[1]

    async def get(self) -> str | OutFrame:
        """Wait for the next item; raises `ConnectionClosedError` once the peer is closed."""
        while True:
            if self.close_code is not None:
                raise ConnectionClosedError(self.close_code, self.close_reason)
            item = self.get_nowait()
            if item is not None:
                return item
            self._ready.clear()
            await self._ready.wait()

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the peer: queued items are discarded and `get()` raises from now on."""
        if self.closed:
            return
        self.close_code, self.close_reason = code, reason
        self._texts.clear()
        self._frames.clear()
        self._text_chars = 0
        self._live_texts = self._superseded = 0
        self._queued_state = None
        self._ready.set()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
