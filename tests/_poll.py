"""The one way the tests wait for a condition: poll it until it holds, or fail saying what did not
happen. A test waits for the condition it means, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(
    condition: Callable[[], object], what: str, timeout: float = 30.0, step: float = 0.01
) -> None:
    """Wait until `condition()` is true, checking it on the event loop every `step` seconds;
    fails the test with `what` (what should have happened) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(step)


def eventually_sync(
    condition: Callable[[], object], what: str, timeout: float = 30.0, step: float = 0.05
) -> None:
    """`eventually` for a test without an event loop (the condition's source runs elsewhere:
    another thread or process)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(step)


async def within_turns(condition: Callable[[], object], what: str, turns: int = 10_000) -> None:
    """Let the event loop run until `condition()` is true, for at most `turns` turns (for
    in-memory fakes: no wall-clock sleep)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not within {turns} event loop turns: {what}")
