"""Who may use a runner: the access rules of `longlive-runner serve`, without any I/O.

Everything here works on plain strings and numbers (the clock is passed in), so that every front of
a runner (the websocket server in `server.py`, a cluster gateway) applies the same rules and each
rule is tested on its own. The threat model and the reasons are in docs/security.md; in short:

- **Host** (DNS rebinding): without a token, a request must name the runner by a loopback address
  or `localhost` in its `Host` header; a web page that rebinds its own name to 127.0.0.1 sends its
  own name and is refused. With a token, any name is accepted (a public runner has public names).
- **Origin** (cross-site WebSocket hijacking): a browser always sends `Origin`; it must be the
  runner's own page (the same host and port as `Host`) or on the allow-list (`--allow-origin`).
  A request without `Origin` (the SDK, curl: not a browser) is not a cross-site request.
- **Token**: `Authorization: Bearer <token>`, or the query parameter named exactly `token`
  (browsers cannot set headers on a WebSocket); compared in constant time.
- **Other sites** (fetch metadata): a request a browser marks as made by another site's page
  (`Sec-Fetch-Site: cross-site` or `same-site`, e.g. `<img src="http://runner/info">`, which
  sends no `Origin`) may not use a protected resource, unless its `Origin` is allowed.
- **Failures**: an address that presented a wrong token `max_failures` times within `window`
  seconds is answered 429 (its tries, right or wrong, are not checked) until the window lets it
  go. Only wrong credentials count: a request without any (no `Authorization: Bearer`, no
  `token=`) is not a guess, and a request from another site's page is refused before the
  count, so that no page a user visits can lock the right token out of the address.
- **Connections per address**: `ConnectionCounter`; IPv6 addresses count per /64 (one host
  usually holds the whole /64).

```python
policy = AccessPolicy(AccessConfig(token=None, allowed_origins=frozenset()))
facts = RequestFacts(method="GET", target="/", host=("127.0.0.1:8765",), origin=(), authorization=(),
                     peer="127.0.0.1")
assert policy.check(facts, now=time.monotonic()) is None   # allowed; else a `Refusal`
```
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from longlive.auth import TOKEN_QUERY_PARAM

__all__ = [
    "DEFAULT_MAX_AUTH_FAILURES",
    "DEFAULT_AUTH_FAILURE_WINDOW",
    "MIN_PUBLIC_TOKEN_CHARS",
    "AccessConfig",
    "AccessPolicy",
    "BadRequest",
    "ConnectionCounter",
    "FailureLimiter",
    "Refusal",
    "RequestFacts",
    "address_key",
    "check_token_strength",
    "is_loopback_name",
    "normalize_origin",
    "origin_allowed",
    "parse_host",
    "query_tokens",
    "split_target",
]

#: A token guarding a runner reachable from other machines has at least this many characters.
MIN_PUBLIC_TOKEN_CHARS = 16
#: `Sec-Fetch-Site` values of a request made by another site's page.
_OTHER_SITES = frozenset({"cross-site", "same-site"})

#: Token failures per address and window before the address is answered 429.
DEFAULT_MAX_AUTH_FAILURES = 10
DEFAULT_AUTH_FAILURE_WINDOW = 60.0
#: Addresses whose failures are remembered at once (the oldest are forgotten first).
MAX_TRACKED_ADDRESSES = 4096
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class BadRequest(ValueError):
    """The request cannot be understood (answer 400)."""


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------
def check_token_strength(token: str, *, public: bool, min_chars: int = MIN_PUBLIC_TOKEN_CHARS) -> None:
    """Raise ValueError when `token` is too weak to guard a runner; `public`: reachable from other
    machines (a non-loopback bind), where it needs `min_chars` characters at least."""
    if public and len(token) < min_chars:
        raise ValueError(
            f"the token has {len(token)} characters; a runner listening beyond this machine needs "
            f"at least {min_chars} (make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )


# ----------------------------------------------------------------------------------------------
# The request target
# ----------------------------------------------------------------------------------------------
# RFC 3986 pchar (unreserved, sub-delims, ":", "@", pct-encoded) and "/" for the path; the query
# also takes "?", "/" and, as browsers send them unescaped, "[", "]", "|", "^", "`", "{", "}".
_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_QUERY = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?\[\]|^`{}]|%[0-9A-Fa-f]{2})*")


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of an origin-form request target (`/path?query`); BadRequest otherwise.

    Absolute targets (`http://...`, for proxies), `*`, a path starting with `//` (it would read as
    a host name) and characters a URL may not hold are refused.
    """
    if not target.startswith("/") or target.startswith("//"):
        raise BadRequest("the request target must be a path starting with a single '/'")
    path, _, query = target.partition("?")
    if not _PATH.fullmatch(path) or not _QUERY.fullmatch(query):
        raise BadRequest("the request target holds characters a URL may not hold")
    return path, query


def query_tokens(query: str) -> list[str]:
    """The values of the query parameters named exactly `token` (the name is not decoded:
    `%74oken` is another name), each percent-decoded."""
    out = []
    for part in query.split("&"):
        name, sep, value = part.partition("=")
        if sep and name == TOKEN_QUERY_PARAM:
            out.append(unquote(value, errors="surrogateescape"))
    return out


# ----------------------------------------------------------------------------------------------
# Host
# ----------------------------------------------------------------------------------------------
_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def parse_host(value: str) -> tuple[str, int | None]:
    """(host, port) of a `Host` header or an origin's authority: `name`, `name:port`, `1.2.3.4`,
    `[::1]:8765`. The host comes lowercased, IPv6 without brackets; BadRequest when malformed."""
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BadRequest(f"malformed host {value!r}")
        port_text = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadRequest(f"malformed IPv6 address in host {value!r}") from None
    else:
        host, sep, port_text_ = value.partition(":")
        port_text = port_text_ if sep else None
        name = host[:-1] if host.endswith(".") else host  # "localhost." is "localhost"
        if not _NAME.fullmatch(name):
            raise BadRequest(f"malformed host {value!r}")
        host = name
    if port_text is not None:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
            raise BadRequest(f"malformed port in host {value!r}")
        port = int(port_text)
    return host, port


def is_loopback_name(host: str) -> bool:
    """True for a host name a browser can only reach on this machine: a loopback address
    (127.0.0.0/8, ::1, ::ffff:127.x) or `localhost` and its subdomains (RFC 6761)."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# ----------------------------------------------------------------------------------------------
# Origin
# ----------------------------------------------------------------------------------------------
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def _split_origin(value: str) -> tuple[str, str, int | None]:
    scheme, sep, authority = value.strip().lower().partition("://")
    if not sep or not _SCHEME.fullmatch(scheme) or not authority or "/" in authority or "@" in authority:
        raise BadRequest(f"not an origin (scheme://host[:port]): {value!r}")
    host, port = parse_host(authority)
    return scheme, host, port


def normalize_origin(value: str) -> str:
    """`value` as browsers write an `Origin` header: lowercase, no default port, no trailing slash
    (`HTTP://LocalHost:80/` -> `http://localhost`). For allow-lists; BadRequest when it is none."""
    if value.strip().lower() == "null":
        raise BadRequest("'null' is not an origin that can be allowed (sandboxed pages and files send it)")
    scheme, host, port = _split_origin(value.rstrip("/"))
    shown = f"[{host}]" if ":" in host else host
    return (
        f"{scheme}://{shown}"
        if port is None or port == DEFAULT_PORTS.get(scheme)
        else f"{scheme}://{shown}:{port}"
    )


def origin_allowed(origin: str | None, host: tuple[str, int | None], allowed: Iterable[str] = ()) -> bool:
    """True when a request with this `Origin` header (None: none sent) may use the runner.

    Allowed: no `Origin` (not a browser); the runner's own page: an http(s) origin with the same
    host and port as the request's `Host` (`host`; a port missing from `Host` is the scheme's
    default); an origin in `allowed` (normalized with `normalize_origin`). Refused: anything else,
    `null` included.
    """
    if origin is None:
        return True
    try:
        scheme, o_host, o_port = _split_origin(origin)
    except BadRequest:
        return False  # "null", or garbage
    if scheme in ("http", "https"):
        default = DEFAULT_PORTS[scheme]
        if o_host == host[0] and (o_port or default) == (host[1] or default):
            return True
    try:
        return normalize_origin(origin) in set(allowed)
    except BadRequest:
        return False


# ----------------------------------------------------------------------------------------------
# Per-address bookkeeping
# ----------------------------------------------------------------------------------------------
def address_key(peer: str | None) -> str:
    """The key a client's address is counted under: an IPv4 address as is (IPv4-mapped IPv6
    too), an IPv6 address by its /64 network, anything else (a Unix socket) as given."""
    if not peer:
        return "?"
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class FailureLimiter:
    """Failed token attempts per address: `max_failures` within `window` seconds block it until
    the oldest of them is `window` old. At most `max_addresses` are remembered (oldest first out),
    so memory stays bounded whatever the number of addresses."""

    def __init__(
        self,
        max_failures: int = DEFAULT_MAX_AUTH_FAILURES,
        window: float = DEFAULT_AUTH_FAILURE_WINDOW,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        if max_failures < 1 or window <= 0 or max_addresses < 1:
            raise ValueError("max_failures and max_addresses must be >= 1, window > 0")
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, key: str, now: float) -> float | None:
        """Seconds until `key` may try again, or None when it is not blocked."""
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        if len(times) < self.max_failures:
            return None
        return max(times[0] + self.window - now, 0.001)

    def record_failure(self, key: str, now: float) -> bool:
        """Count a failure of `key`; True when this one blocks it."""
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.max_failures)
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
        times.append(now)
        return self.retry_after(key, now) is not None


class ConnectionCounter:
    """Open connections per address key, for a per-address limit."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("the per-address limit must be >= 1 (or None)")
        self.limit = limit
        self._open: dict[str, int] = {}

    def count(self, key: str) -> int:
        return self._open.get(key, 0)

    def acquire(self, key: str) -> bool:
        """Count one more connection of `key`; False (nothing counted) when it is at the limit."""
        n = self._open.get(key, 0)
        if self.limit is not None and n >= self.limit:
            return False
        self._open[key] = n + 1
        return True

    def release(self, key: str) -> None:
        n = self._open.get(key, 0) - 1
        if n > 0:
            self._open[key] = n
        else:
            self._open.pop(key, None)


# ----------------------------------------------------------------------------------------------
# The policy
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AccessConfig:
    """What a runner's front enforces. `token`: None = no token (then only loopback `Host`
    names are served); `allowed_origins`: origins allowed besides the runner's own page, as
    `normalize_origin` writes them; `max_auth_failures`: None = no failure limit, only for a
    token no one can guess (a cluster worker's internal one: 192 random bits), so that strangers'
    wrong tokens cannot lock its one legitimate client (the gateway) out."""

    token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    max_auth_failures: int | None = DEFAULT_MAX_AUTH_FAILURES
    auth_failure_window: float = DEFAULT_AUTH_FAILURE_WINDOW

    def __repr__(self) -> str:  # never show the token
        return (
            f"AccessConfig(token={'***' if self.token else None}, "
            f"allowed_origins={sorted(self.allowed_origins)})"
        )


@dataclass(frozen=True)
class RequestFacts:
    """What the rules read from one HTTP request (every value of each header, in order)."""

    method: str
    target: str
    host: tuple[str, ...] = ()
    origin: tuple[str, ...] = ()
    authorization: tuple[str, ...] = ()
    peer: str | None = None
    fetch_site: tuple[str, ...] = ()
    """`Sec-Fetch-Site` (browsers send it on every request: `same-origin`, `same-site`,
    `cross-site` or `none`; other clients do not)."""

    @classmethod
    def from_headers(
        cls, method: str, target: str, get_all: Callable[[str], Iterable[str]], peer: str | None
    ) -> RequestFacts:
        """From a headers object's `get_all(name)` (websockets' `Headers`, aiohttp's `getall`...)."""
        return cls(
            method=method,
            target=target,
            host=tuple(get_all("Host")),
            origin=tuple(get_all("Origin")),
            authorization=tuple(get_all("Authorization")),
            peer=peer,
            fetch_site=tuple(get_all("Sec-Fetch-Site")),
        )


@dataclass(frozen=True)
class Refusal:
    """An answer refusing a request: HTTP `status`, a stable `error` code, a `reason` for humans
    (never a secret), extra `headers`, and `warn`: worth a warning in the log."""

    status: int
    error: str
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    warn: bool = True


@dataclass
class AccessPolicy:
    """The access rules of one runner front; `check()` each request (module docstring)."""

    config: AccessConfig
    limiter: FailureLimiter = field(default_factory=FailureLimiter)

    def __post_init__(self) -> None:
        # Kept as bytes: hmac.compare_digest compares str only when it is ASCII.
        self._token = self.config.token.encode("utf-8") if self.config.token else None
        if self.config.token and self.config.max_auth_failures is not None:
            self.limiter = FailureLimiter(self.config.max_auth_failures, self.config.auth_failure_window)

    @property
    def requires_token(self) -> bool:
        return self._token is not None

    def check(
        self,
        request: RequestFacts,
        *,
        now: float,
        protected: bool = True,
        methods: frozenset[str] = frozenset({"GET", "HEAD"}),
    ) -> Refusal | None:
        """None when `request` may go on, else the `Refusal` to answer.

        In order: the target (400), `Host` (400 malformed, 403 not this runner's name without a
        token), the method (405), then for a `protected` resource (the websocket, `/info`):
        `Origin` (403), another site's page (403), the failure limit (429) and the token (401;
        counted as a failure only when a token was presented and is wrong).
        """
        try:
            split_target(request.target)
        except BadRequest as exc:
            return Refusal(400, "bad_request", str(exc))
        if len(request.host) != 1:
            return Refusal(400, "bad_request", "a request needs exactly one Host header")
        try:
            host = parse_host(request.host[0])
        except BadRequest as exc:
            return Refusal(400, "bad_request", str(exc))
        if self._token is None and not is_loopback_name(host[0]):
            return Refusal(
                403,
                "host_not_allowed",
                f"this runner has no token, so it only answers requests for localhost or a "
                f"loopback address, not {host[0]!r}",
            )
        if request.method not in methods:
            allow = ", ".join(sorted(methods))
            return Refusal(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here",
                (("Allow", allow),),
                warn=False,
            )
        if not protected:
            return None
        if len(request.origin) > 1:
            return Refusal(403, "origin_not_allowed", "more than one Origin header")
        origin = request.origin[0] if request.origin else None
        if not origin_allowed(origin, host, self.config.allowed_origins):
            return Refusal(
                403,
                "origin_not_allowed",
                f"pages from {origin!r} may not use this runner (only its own page, and origins "
                "given with --allow-origin)",
            )
        if origin is None and any(v.strip().lower() in _OTHER_SITES for v in request.fetch_site):
            return Refusal(
                403,
                "cross_site_request",
                "a page from another site may not use this runner (its browser says so with "
                "Sec-Fetch-Site); open the runner's own page, or use the SDK",
            )
        if self._token is None:
            return None
        key = address_key(request.peer)
        limited = self.config.max_auth_failures is not None
        wait = self.limiter.retry_after(key, now) if limited else None
        if wait is not None:
            return Refusal(
                429,
                "too_many_failures",
                f"too many failed token attempts from this address; retry in {wait:.0f} s",
                (("Retry-After", str(int(wait) + 1)),),
                warn=False,
            )
        presented = self._presented(request)
        if presented is not None and self._matches(presented):
            return None
        # No credentials at all is not a guess (what any page's <img> would send): refused,
        # never counted, so that it cannot lock the right token out of this address.
        blocked = self.limiter.record_failure(key, now) if limited and presented is not None else False
        return Refusal(
            401,
            "unauthorized",
            "this runner needs a token: send 'Authorization: Bearer <token>' "
            f"(or the query parameter '{TOKEN_QUERY_PARAM}')",
            (("WWW-Authenticate", 'Bearer realm="longlive"'),),
            warn=blocked,
        )

    @staticmethod
    def _presented(request: RequestFacts) -> list[str] | None:
        """The tokens `request` presents (a Bearer value, `token=` values); None when it presents
        none: no credentials, not wrong ones. Two `Authorization` headers are ambiguous
        credentials: presented, and never right ([] matches nothing)."""
        if len(request.authorization) > 1:
            return []
        presented: list[str] = []
        if request.authorization:
            scheme, _, value = request.authorization[0].strip().partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                presented.append(value.strip())
        presented += [t for t in query_tokens(request.target.partition("?")[2]) if t]
        return presented or None

    def _matches(self, presented: list[str]) -> bool:
        assert self._token is not None
        # Every candidate is compared (constant time each); no early exit on the first match.
        ok = False
        for candidate in presented:
            ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)
        return ok
