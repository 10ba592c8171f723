"""The in-process connector behind `Reactor.local()`: the one client module that names the runner.

It loads a pipeline and starts a `longlive_runner.serving.hub.Runner` on the caller's event loop, lazily
(importing torch only then), and hands the client the runner's `LocalConnection` as its transport.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

from ._transport import Transport
from .errors import ConnectError

__all__ = ["LocalConnector"]


class LocalConnector:
    """Loads a pipeline and runs a `longlive_runner.serving.hub.Runner` in this process, lazily."""

    def __init__(
        self,
        model: str | Path | None,
        *,
        pipeline: Any,
        runner: Any,
        load_options: dict[str, Any],
        runner_options: dict[str, Any],
    ) -> None:
        self.model = model
        self.pipeline = pipeline
        self.runner = runner
        self.owned = False
        self.load_options = load_options
        self.runner_options = runner_options

    def _load(self) -> Any:
        from longlive_runner import load_pipeline

        options = dict(self.load_options)
        if options.get("device") is None:
            import torch

            options["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        return load_pipeline(self.model, **options)

    async def open(self) -> Transport:
        if self.runner is None:
            try:
                from longlive_runner.serving.hub import Runner
            except ImportError as exc:
                raise ImportError(
                    f"Reactor.local() needs the runner (torch): pip install 'longlive[runner]' ({exc})"
                ) from exc

            if self.pipeline is None:
                self.pipeline = await asyncio.to_thread(self._load)
            runner = Runner(self.pipeline, **self.runner_options)
            await runner.start()
            self.runner, self.owned = runner, True
        try:
            conn = self.runner.connect_local()
        except RuntimeError as exc:  # the runner was closed under us
            raise ConnectError(f"cannot connect to the in-process runner: {exc}") from exc
        if inspect.isawaitable(conn):
            conn = await conn
        return conn  # type: ignore[no-any-return]

    async def shutdown(self) -> None:
        if self.owned and self.runner is not None:
            runner, self.runner, self.owned = self.runner, None, False
            await runner.close()
