"""The runner's access token as both ends read it: one place for `LONGLIVE_TOKEN` and its cleaning.

Used by the SDK (`WebSocketTransport`, `Reactor`: the token a client sends), by
`longlive-runner serve` (the token it requires) and by any other front of a runner, so that
`--token "$(cat file)"`, `LONGLIVE_TOKEN=$(< file)` or a token read from a file with its trailing
newline all mean the same token (docs/security.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

__all__ = ["TOKEN_ENV", "TOKEN_IN_URL", "TOKEN_QUERY_PARAM", "clean_token", "hide_token", "token_from_env"]

#: The environment variable holding the runner's token (read by `serve` and by the SDK).
TOKEN_ENV = "LONGLIVE_TOKEN"
#: The only query parameter a token may come in (browsers cannot set headers on a WebSocket).
TOKEN_QUERY_PARAM = "token"
#: A token's value in a URL or a request line: group 1 is what precedes it (`?token=` or `&token=`).
TOKEN_IN_URL = re.compile(r"(?i)([?&]" + TOKEN_QUERY_PARAM + r"=)[^&#\s'\"]*")


def hide_token(text: str) -> str:
    """`text` (a URL, a log line) with the value of any `token=` query parameter replaced by ***."""
    return TOKEN_IN_URL.sub(r"\1***", text)


def clean_token(value: str | None) -> str | None:
    """`value` without surrounding whitespace (a trailing newline from a file, say); None stays None.

    Raises ValueError for a token that is empty once stripped or holds a control character (a
    line break inside it could never be sent in an HTTP header).
    """
    if value is None:
        return None
    token = value.strip()
    if not token:
        raise ValueError("the token is empty (or only whitespace)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        raise ValueError("the token holds a control character (a line break?)")
    return token


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The token in `$LONGLIVE_TOKEN`, cleaned; None when the variable is unset or set to "".

    A variable set to whitespace only raises ValueError: it is a mistake, not "no token".
    """
    value = (os.environ if environ is None else environ).get(TOKEN_ENV)
    if not value:
        return None
    try:
        return clean_token(value)
    except ValueError as exc:
        raise ValueError(f"{TOKEN_ENV}: {exc}") from None
