"""Test helpers shared by the client suites: read a number of frames from a Reactor, with a
timeout; wait for a condition with a deadline (instead of a fixed sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from longlive import Frame, Reactor


async def take(reactor: Reactor, n: int, timeout: float = 60) -> list[Frame]:
    """The next `n` frames of `reactor.frames()`; asyncio.TimeoutError after `timeout` seconds."""

    async def run() -> list[Frame]:
        out: list[Frame] = []
        async for frame in reactor.frames():
            out.append(frame)
            if len(out) == n:
                break
        return out

    return await asyncio.wait_for(run(), timeout)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until `condition()` holds, checking it on the event loop every 10 ms.

    Fails the test with `what` (what should have happened) after `timeout` seconds: a test
    waits for the condition it means, never for a fixed time.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.01)
