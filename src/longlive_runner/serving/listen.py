"""Where a server listens and with which token: the socket, the loopback check, the token's source.

What `serve` and `cluster` check before anything starts (CLIError, one line): a port in use or
not allowed, a host that does not resolve, a non-loopback host without a token strong enough,
an empty token, a malformed `--allow-origin`.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys
from typing import Any

from longlive.auth import TOKEN_ENV, clean_token, token_from_env

from ..arguments import CLIError
from .access import BadRequest, check_token_strength, normalize_origin
from .options import DEFAULT_HOST

__all__ = ["bind_socket", "check_access_args", "is_loopback_host", "resolve_token"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`; `CLIError` with one clear line when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CLIError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CLIError(
                f"port {port} on {host} is already in use (another runner?); choose another with --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise CLIError(f"no permission to listen on {host}:{port}; use a port above 1023") from None
        raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def is_loopback_host(host: str) -> bool:
    """True when every address `host` stands for is a loopback address (127.0.0.0/8, ::1).

    "" and "0.0.0.0"/"::" (every interface) are not; a name counts only if all of its
    addresses are loopback.
    """
    host = host.strip().strip("[]")
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False  # bind_socket reports an unresolvable host
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)


def resolve_token(cli_token: str | None, environ: Any = None) -> str | None:
    """The token from `--token`, else from `LONGLIVE_TOKEN` (unset or set to "": no token),
    stripped (`longlive.auth`). CLIError for a `--token` that is empty or only whitespace, or a
    variable holding only whitespace."""
    try:
        if cli_token is not None:
            return clean_token(cli_token)
        return token_from_env(environ)
    except ValueError as exc:
        where = "--token" if cli_token is not None else ""
        raise CLIError(f"{where + ': ' if where else ''}{exc}") from None


def check_access_args(args: argparse.Namespace, what: str = "the model") -> None:
    """The access options of `serve` and `cluster`, checked before anything starts: `--allow-origin`
    normalised, the token resolved (`--token` or `LONGLIVE_TOKEN`) into `args.token`, and a
    non-loopback `--host` refused without a token strong enough (CLIError)."""
    try:
        args.allow_origin = [normalize_origin(o) for o in args.allow_origin]
    except BadRequest as exc:
        raise CLIError(f"--allow-origin: {exc}") from None
    token = resolve_token(getattr(args, "token", None))
    public = not is_loopback_host(args.host)
    where = args.host or "every interface"
    if token is None and public:
        raise CLIError(
            f"refusing to listen on {where} without a token: anyone who can reach it could drive "
            f"{what}. Set {TOKEN_ENV} (or --token) to require one, or listen on {DEFAULT_HOST}"
        )
    if token is not None:
        try:
            check_token_strength(token, public=public)
        except ValueError as exc:
            raise CLIError(f"refusing to listen on {where}: {exc}") from None
    args.token = token
