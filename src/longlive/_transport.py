"""How the client moves messages: the `Transport` protocol and the websocket transport.

A transport carries the protocol's two kinds of message (docs/protocol.md, section 1) and nothing
else: it does not parse JSON, match replies or buffer frames; `Reactor` does that in one reader
task. Two implementations exist:

- `WebSocketTransport` (here): a `websockets` client connection; binary messages are decoded with
  `longlive.protocol.decode_frame`.
- the runner's in-process `LocalConnection` (`longlive_runner.serving.hub`), used by `Reactor.local()`:
  frames are handed over as header + numpy array, without encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from .auth import TOKEN_ENV, clean_token, hide_token, token_from_env
from .errors import ConnectError, ConnectionClosedError
from .protocol import FRAME_HEADER_SIZE, FrameHeader, decode_frame

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "TOKEN_ENV",
    "Received",
    "Transport",
    "WebSocketTransport",
    "auth_headers",
    "safe_url",
]

#: What `Transport.recv()` returns: a JSON text message, or a decoded frame (header, uint8 [H, W, 3]).
Received: TypeAlias = str | tuple[FrameHeader, np.ndarray]

#: Largest websocket message accepted by default: 16 MiB. One 480x832 RGB frame is
#: 28 + 480*832*3 = 1,198,108 bytes; this leaves room for frames up to about 2.3k x 2.3k.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
assert DEFAULT_MAX_MESSAGE_SIZE > FRAME_HEADER_SIZE + 480 * 832 * 3


def auth_headers(
    headers: Mapping[str, str] | None, token: str | None, *, use_env: bool = True
) -> dict[str, str]:
    """`headers` plus `Authorization: Bearer <token>`; the token defaults to `$LONGLIVE_TOKEN`
    (when `use_env`). An `Authorization` header already in `headers` wins. The token is stripped
    (a trailing newline from a file is fine); an empty one, or one with a line break inside, raises
    ValueError (`longlive.auth`)."""
    out = dict(headers or {})
    token = clean_token(token) if token is not None else token_from_env() if use_env else None
    if token and not any(k.lower() == "authorization" for k in out):
        out["Authorization"] = f"Bearer {token}"
    return out


@runtime_checkable
class Transport(Protocol):
    """One connection to a runner, as the client drives it.

    `recv()` is called by a single reader task; `send_text()` may be called concurrently with it.
    Once the connection is gone, `recv()` and `send_text()` raise `ConnectionClosedError`.
    """

    async def send_text(self, text: str) -> None:
        """Send one JSON text message (a command)."""
        ...

    async def recv(self) -> Received:
        """The next message: JSON text, or a decoded frame as (header, uint8 [H, W, 3])."""
        ...

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        ...


class WebSocketTransport:
    """A `Transport` over a `websockets` client connection."""

    def __init__(self, websocket: Any) -> None:
        self._ws = websocket

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        open_timeout: float | None = 10.0,
        max_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        **kwargs: Any,
    ) -> WebSocketTransport:
        """Open a websocket to `url`.

        `token` is sent as `Authorization: Bearer <token>` (default: `$LONGLIVE_TOKEN`, if set).
        Compression is off by default (raw pixels barely compress and deflate costs CPU on both
        ends); pass `compression="deflate"` to offer it. Other keyword arguments go to
        `websockets.asyncio.client.connect`. Raises `ConnectionClosedError` if the connection
        cannot be opened (its reason says when the runner wants a token: HTTP 401).
        """
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

        kwargs.setdefault("compression", None)
        sent = auth_headers(headers, token)
        try:
            ws = await connect(
                url,
                additional_headers=sent or None,
                open_timeout=open_timeout,
                max_size=max_size,
                **kwargs,
            )
        except InvalidURI as exc:
            raise ValueError(f"invalid websocket URL {safe_url(url)!r}: {exc}") from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                sent_token = any(k.lower() == "authorization" for k in sent)
                hint = "the token was refused" if sent_token else "the runner requires a token"
                raise ConnectError(
                    f"cannot connect to {safe_url(url)}: HTTP {status}: {hint} "
                    f"(pass token= or set {TOKEN_ENV})",
                    status,
                ) from None
            raise ConnectError(f"cannot connect to {safe_url(url)}: HTTP {status}", status) from None
        except (OSError, InvalidHandshake, TimeoutError, asyncio.TimeoutError) as exc:
            raise ConnectError(f"cannot connect to {safe_url(url)}: {type(exc).__name__}: {exc}") from exc
        return cls(ws)

    @property
    def websocket(self) -> Any:
        """The underlying `websockets` connection."""
        return self._ws

    async def send_text(self, text: str) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc

    async def recv(self) -> Received:
        from websockets.exceptions import ConnectionClosed

        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed_error(exc) from exc
        if isinstance(message, str):
            return message
        return decode_frame(message)

    async def close(self) -> None:
        await self._ws.close()


def safe_url(url: str) -> str:
    """`url` with any `token` query value hidden, for error messages."""
    return hide_token(url)


def _closed_error(exc: Any) -> ConnectionClosedError:
    close = exc.rcvd if exc.rcvd is not None else exc.sent
    if close is None:
        return ConnectionClosedError(None, "connection lost without a close frame")
    return ConnectionClosedError(close.code, close.reason)
