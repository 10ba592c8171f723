"""The buffers between the client's reader and its consumers: a bounded FIFO (`FrameBuffer`, behind
`Reactor.frames()`) and `MessageStream` (`Reactor.messages()`)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ._types import FramePolicy
from .errors import ConnectionClosedError
from .protocol import Message

__all__ = ["BufferEnded", "FrameBuffer", "MessageStream"]

T = TypeVar("T")


class BufferEnded(Exception):
    """A buffer ended normally (the client closed)."""


class FrameBuffer(Generic[T]):
    """A bounded FIFO for one event loop, with an end marker (normal or an error).

    With policy "block", `put` waits for room, except while `overflow()` is true: then the item
    is kept beyond `maxsize` (nothing is dropped), so that the writer (the client's reader) never
    holds up what a caller is waiting for. Call `wake()` when `overflow()` may have become true.
    """

    def __init__(
        self,
        maxsize: int,
        policy: FramePolicy = "drop_oldest",
        overflow: Callable[[], bool] | None = None,
    ) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        if policy not in ("drop_oldest", "block"):
            raise ValueError(f"policy must be 'drop_oldest' or 'block', got {policy!r}")
        self.maxsize = maxsize
        self.policy = policy
        self.dropped = 0
        self._items: deque[T] = deque()
        self._end: ConnectionClosedError | bool | None = None  # None: open; True: ended normally
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._overflow = overflow

    def __len__(self) -> int:
        return len(self._items)

    def put_nowait(self, item: T) -> None:
        """Append; when full, drop the oldest item (counted in `dropped`)."""
        if self.maxsize == 0:
            return
        while len(self._items) >= self.maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._readable.set()

    async def put(self, item: T) -> None:
        """Append, by the policy: wait for room ("block") or drop the oldest ("drop_oldest")."""
        if self.policy == "block":
            while len(self._items) >= self.maxsize > 0 and self._end is None:
                if self._overflow is not None and self._overflow():
                    self._items.append(item)  # past maxsize, for as long as someone waits
                    self._readable.set()
                    return
                self._writable.clear()
                await self._writable.wait()
        self.put_nowait(item)

    def wake(self) -> None:
        """Make a `put` waiting for room look at `overflow()` again."""
        self._writable.set()

    async def get(self) -> T:
        """The next item; raises `BufferEnded` or a `ConnectionClosedError` once drained and ended."""
        while not self._items:
            if self._end is True:
                raise BufferEnded
            if isinstance(self._end, ConnectionClosedError):
                raise ConnectionClosedError(self._end.code, self._end.reason)
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item

    def purge(self, drop: Callable[[T], bool]) -> int:
        """Remove the items for which `drop` is true; returns how many."""
        kept = [x for x in self._items if not drop(x)]
        removed = len(self._items) - len(kept)
        if removed:
            self._items = deque(kept)
            self._writable.set()
        return removed

    def end(self, error: ConnectionClosedError | None = None) -> None:
        self._end = error if error is not None else True
        self._readable.set()
        self._writable.set()

    def reopen(self) -> None:
        self._end = None


class MessageStream:
    """An async iterator over the runner's text messages (see `Reactor.messages`)."""

    def __init__(
        self, types: tuple[str, ...], max_buffered: int, on_close: Callable[[MessageStream], None]
    ) -> None:
        self._types = frozenset(types)
        self._buffer: FrameBuffer[Message] = FrameBuffer(max_buffered)
        self._on_close = on_close

    @property
    def dropped(self) -> int:
        """Messages discarded because this stream's buffer was full (oldest first)."""
        return self._buffer.dropped

    def _feed(self, msg: Message) -> None:
        if not self._types or msg.type in self._types:
            self._buffer.put_nowait(msg)

    def __aiter__(self) -> MessageStream:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._buffer.get()
        except BufferEnded:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving messages; iteration ends after what is buffered."""
        self._on_close(self)
        self._buffer.end()

    async def __aenter__(self) -> MessageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
