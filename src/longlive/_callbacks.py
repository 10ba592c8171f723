"""The callbacks registered on a `Reactor` (`on`, `on_frame`, `on_status`, `on_error`) and how
they run.

Sync callbacks run inline in the reader (keep them short); async callbacks are awaited, in order,
by one dispatcher task, so a slow async callback never delays replies or frames. A callback that
raises never kills the reader: the error goes to the `on_error` handlers or, when there are none,
is logged (logger "longlive", with its traceback) and the first one is kept
(`Reactor.callback_error`); no unrelated call raises it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ._types import Frame, Status
from .errors import CallbackError
from .protocol import Message

logger = logging.getLogger("longlive")

ErrorHandler = Callable[[BaseException], Any]
#: The message type that registers a callback for every message.
ALL = "*"


class Callbacks:
    """The callbacks of one client, by event, and what they raise."""

    def __init__(self, on_error: ErrorHandler | None) -> None:
        self.messages: dict[str, list[Callable[[Any], Any]]] = {}
        self.frames: list[Callable[[Frame], Any]] = []
        self.status: list[Callable[[Status], Any]] = []
        self.errors: list[ErrorHandler] = [on_error] if on_error is not None else []
        #: The first `CallbackError` no `on_error` handler took.
        self.first_unhandled: CallbackError | None = None
        self._dispatcher: _Dispatcher | None = None

    def remove(self, fn: Callable[..., Any]) -> None:
        """Remove `fn` wherever it is registered."""
        for handlers in (*self.messages.values(), self.frames, self.status, self.errors):
            while fn in handlers:
                handlers.remove(fn)

    def emit(self, msg: Message) -> None:
        """Call the callbacks of `msg.type`, then those of every message."""
        for fn in (*self.messages.get(msg.type, ()), *self.messages.get(ALL, ())):
            self.call(fn, msg, msg.type)

    def call(self, fn: Callable[[Any], Any], arg: Any, event: str) -> None:
        """Run `fn(arg)`: inline, unless async callbacks are queued (then behind them)."""
        if self._dispatcher is not None and self._dispatcher.busy:
            self._dispatcher.submit(_Job(fn, arg, event))  # keep the order behind async callbacks
            return
        try:
            result = fn(arg)
        except Exception as exc:
            self.report(CallbackError(event, fn, exc))
            return
        if inspect.isawaitable(result):
            self._dispatch(_Job(fn, arg, event, result))

    def _dispatch(self, job: _Job) -> None:
        if self._dispatcher is None:
            self._dispatcher = _Dispatcher(self._async_callback_failed)
        self._dispatcher.submit(job)

    def _async_callback_failed(
        self, exc: Exception, event: str, fn: Callable[..., Any], is_error_handler: bool
    ) -> None:
        if is_error_handler:
            logger.error("longlive on_error handler %r failed", fn, exc_info=exc)
        else:
            self.report(CallbackError(event, fn, exc))

    def report(self, error: BaseException, *, level: int = logging.ERROR) -> None:
        """Hand an asynchronous error to the on_error handlers, or log it (and keep the first
        callback error in `first_unhandled`)."""
        if self.errors:
            for handler in tuple(self.errors):
                try:
                    result = handler(error)
                except Exception:
                    logger.exception("longlive on_error handler %r failed", handler)
                    continue
                if inspect.isawaitable(result):
                    self._dispatch(_Job(handler, error, "on_error", result, is_error_handler=True))
            return
        logger.log(level, "%s", error, exc_info=error if isinstance(error, CallbackError) else None)
        if isinstance(error, CallbackError) and self.first_unhandled is None:
            self.first_unhandled = error

    async def stop(self) -> None:
        """Let queued async callbacks finish (briefly), then stop the dispatcher."""
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.task is asyncio.current_task():
            return
        self._dispatcher = None
        await dispatcher.stop()


class _Dispatcher:
    """Runs callbacks off the reader, one at a time, in the order they were triggered.

    It awaits async callbacks; while it has work, sync callbacks are queued behind it too, so that
    every callback sees messages in the order the runner sent them.
    """

    def __init__(self, on_failure: Callable[[Exception, str, Callable[..., Any], bool], None]) -> None:
        self._on_failure = on_failure
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._active = False
        self._stopping = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name="longlive-callbacks")

    @property
    def busy(self) -> bool:
        return self._active or not self._queue.empty()

    def submit(self, job: _Job) -> None:
        self._queue.put_nowait(job)

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            self._active = True
            try:
                aw = job.awaitable
                if aw is None:  # a sync callback queued behind async ones
                    result = job.fn(job.arg)
                    aw = result if inspect.isawaitable(result) else None
                if aw is not None:
                    await aw
            except asyncio.CancelledError:
                if self._stopping:
                    raise
                logger.debug("callback %r for %r was cancelled", job.fn, job.event)
            except Exception as exc:
                self._on_failure(exc, job.event, job.fn, job.is_error_handler)
            finally:
                self._active = False
                self._queue.task_done()

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Let queued callbacks finish (up to `drain_timeout` s), then stop."""
        with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_timeout)
        self._stopping = True
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        while not self._queue.empty():
            aw = self._queue.get_nowait().awaitable
            if inspect.iscoroutine(aw):
                aw.close()


class _Job:
    __slots__ = ("arg", "awaitable", "event", "fn", "is_error_handler")

    def __init__(
        self,
        fn: Callable[..., Any],
        arg: Any,
        event: str,
        awaitable: Awaitable[Any] | None = None,
        is_error_handler: bool = False,
    ) -> None:
        self.fn = fn
        self.arg = arg
        self.event = event
        self.awaitable = awaitable
        self.is_error_handler = is_error_handler
