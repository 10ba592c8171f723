"""The commands' logging: one stderr handler whose formatter never writes a secret."""

from __future__ import annotations

import logging
import re
import sys

from longlive.auth import TOKEN_IN_URL

__all__ = ["RedactingFormatter", "setup_logging"]


class RedactingFormatter(logging.Formatter):
    """A log formatter that never writes a secret: the token itself, the value of any
    `Authorization` header, any `Bearer` credential, any `token=` query value, and the whole
    query string of request lines and URLs (however it is encoded) are replaced by `***`
    (tracebacks included)."""

    _PATTERNS = (
        re.compile(r"(?i)(authorization:\s*)\S[^\r\n]*"),
        re.compile(r"(?i)(bearer\s+)[^\s'\",;]+"),
        TOKEN_IN_URL,
        # Request lines ("GET /path?query HTTP/1.1") and URLs: the whole query.
        re.compile(r"(\b[A-Z]{3,10} /[^\s?]*\?)[^\s'\"]+"),
        re.compile(r"(://[^\s/?'\"]+/[^\s?'\"]*\?)[^\s'\"]+"),
    )

    def __init__(self, fmt: str | None = None, *, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern in self._PATTERNS:
            text = pattern.sub(r"\1***", text)
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(level: str, token: str | None) -> None:
    """One stderr handler for every logger, through `RedactingFormatter` (`token` masked)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s", secrets=(token,) if token else ()
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):  # one handler, ours: nothing reaches stderr unredacted
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
