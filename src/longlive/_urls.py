"""The client's URLs: the session a websocket asks a cluster for."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["with_session"]


def with_session(url: str, session: str | None) -> str:
    """`url` asking for `session` (the `session` query parameter, replacing any)."""
    if session is None:
        return url
    parts = urlsplit(url)
    query = [p for p in parts.query.split("&") if p and p.partition("=")[0] != "session"]
    query.append(f"session={quote(session, safe='')}")
    return urlunsplit(parts._replace(path=parts.path or "/", query="&".join(query)))
