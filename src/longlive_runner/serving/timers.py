"""Grace-period timers and future hygiene, shared by the hub and the cluster gateway (asyncio).

```python
timers = GraceTimers()                       # one pending call per key
timers.start("s1", 30.0, expire, "s1")       # (re)starts the key's timer
timers.cancel("s1"); timers.cancel_all()
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["GraceTimers", "consume"]


class GraceTimers:
    """At most one pending `loop.call_later` per key: starting a key again replaces its timer,
    and the key is forgotten once its callback runs."""

    def __init__(self) -> None:
        self._handles: dict[Hashable, asyncio.TimerHandle] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._handles

    def __len__(self) -> int:
        return len(self._handles)

    def start(
        self,
        key: Hashable,
        delay: float,
        callback: Callable[..., object],
        *args: Any,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Call `callback(*args)` in `delay` seconds on `loop` (default: the running one),
        replacing `key`'s timer."""
        self.cancel(key)

        def fire() -> None:
            self._handles.pop(key, None)
            callback(*args)

        self._handles[key] = (loop or asyncio.get_running_loop()).call_later(delay, fire)

    def cancel(self, key: Hashable) -> bool:
        """Cancel `key`'s timer; False when it had none."""
        handle = self._handles.pop(key, None)
        if handle is None:
            return False
        handle.cancel()
        return True

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()


def consume(fut: asyncio.Future[Any]) -> None:
    """A done-callback that reads a future's exception, so that one nobody awaits is not
    reported as 'exception was never retrieved'."""
    if not fut.cancelled():
        fut.exception()
