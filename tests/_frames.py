"""Test helpers shared by the client suites: read a number of frames from a Reactor, with a
timeout; wait for a condition with a deadline (instead of a fixed sleep)."""

from __future__ import annotations

import asyncio

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
