"""`TorchThread`: the one thread that runs torch for a hub (jobs in order, results handed back to
the event loop as futures). "Worker" names only the cluster's Ray actor (`cluster/worker.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["TorchThread"]

T = TypeVar("T")


class TorchThread:
    """The one thread that runs torch: jobs in order, results handed back to the loop."""

    _STOP = object()

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        return fut

    def stop(self) -> asyncio.Future[None]:
        """Ask the thread to end after the jobs already submitted; the future is its end."""
        end: asyncio.Future[Any] = self.submit(self._stop_marker)
        return end

    def _stop_marker(self) -> object:
        return self._STOP

    def _run(self) -> None:
        while True:
            fn, fut, loop = self._jobs.get()
            try:
                result = fn()
            except BaseException as exc:  # never leave a future pending
                self._hand_back(loop, fut, None, exc)
            else:
                self._hand_back(loop, fut, None if result is self._STOP else result, None)
                if result is self._STOP:
                    return

    @staticmethod
    def _hand_back(
        loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], result: Any, exc: BaseException | None
    ) -> None:
        def settle() -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(settle)
