"""Who is asking, and whether this server answers them at all.

One ASGI middleware in front of everything, so no route can forget it:

- **Host.** Only the names in settings.allowed_hosts are served (400 otherwise): a page on
  evil.example that rebinds its DNS name to this machine's address reaches the server with
  `Host: evil.example`, and is refused.
- **Origin.** A request that may change state (any method but GET, HEAD, OPTIONS) from a
  browser must come from a page of this server: its `Origin` (or, without one, its
  `Referer`) must name the host the request was sent to (403 otherwise). Browsers send a
  multipart upload or a body-less POST cross-origin without a CORS preflight; this is what
  stops a web page a student opens from changing the server. Clients that send neither
  header (curl, scripts) are not browsers and pass.
- **Owner.** Every requester has an owner key: the `X-Rnnscope-Owner` header, else the
  `rnnscope_owner` cookie, else a new random key sent back as that cookie (HttpOnly,
  SameSite=Strict), which a browser then keeps. Runs and corpora remember a hash of the key
  that made them; only that key or the admin may cancel, resume or delete them.
- **Admin.** The holder of settings.token: `Authorization: Bearer <token>`, or a browser
  that opened any page with `?token=<token>` once (the URL `rnnscope serve` prints), which
  sets the `rnnscope_admin` cookie and redirects to the same page without the token.
  The token never reaches a log: uvicorn's access log line of that first request shows
  `token=<hidden>`.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import socket
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, quote, unquote_plus, urlencode, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

OWNER_HEADER = "x-rnnscope-owner"
OWNER_COOKIE = "rnnscope_owner"
ADMIN_COOKIE = "rnnscope_admin"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_OWNER_KEY = 200
YEAR = 365 * 24 * 3600
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Requester:
    """Who sent a request: `owner` is the hash of their owner key, never the key itself."""

    owner: str
    admin: bool

    def may_change(self, resource_owner: str | None) -> bool:
        return self.admin or (resource_owner is not None and hmac.compare_digest(resource_owner, self.owner))


def owner_id(key: str) -> str:
    """What the store keeps of an owner key: a hash, so neither the database nor the API
    ever holds a key that would let someone act as its owner."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def is_loopback(host: str) -> bool:
    """Whether a bind address serves this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def default_allowed_hosts(bind_host: str) -> list[str]:
    """The loopback names and the bind address; for a wildcard bind (0.0.0.0), also this
    machine's name and addresses, which is how a class reaches it."""
    hosts = list(LOOPBACK_NAMES)
    if not is_wildcard(bind_host):
        hosts.append(bind_host)
        return hosts
    name = socket.gethostname()
    hosts += [name, socket.getfqdn()]
    try:
        hosts += [info[4][0] for info in socket.getaddrinfo(name, None)]
    except OSError:
        pass
    return list(dict.fromkeys(h for h in hosts if h))


def host_name(netloc: str) -> str:
    """The host of `host[:port]` or `[v6]:port`, lower case."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc
    if netloc.count(":") > 1:                      # a bare IPv6 address
        return netloc
    return netloc.split(":", 1)[0]


def host_allowed(host: str, allowed: list[str]) -> bool:
    if "*" in allowed:
        return True
    for pattern in allowed:
        pattern = pattern.lower().strip("[]")
        if pattern.startswith("*.") and (host.endswith(pattern[1:]) or host == pattern[2:]):
            return True
        if host == pattern:
            return True
    return False


def same_origin(url: str, host_header: str) -> bool:
    """Whether `url` (an Origin or a Referer) names the host and port the request was sent to."""
    try:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        default = 443 if parts.scheme == "https" else 80
        return normal_netloc(parts.netloc, default) in (normal_netloc(host_header, default),
                                                        normal_netloc(host_header, 443 if default == 80 else 80))
    except ValueError:
        return False


def normal_netloc(netloc: str, default_port: int) -> tuple[str, int]:
    netloc = netloc.strip().lower().rsplit("@", 1)[-1]
    host = host_name(netloc)
    rest = netloc[netloc.find("]") + 1:] if netloc.startswith("[") else (
        "" if netloc.count(":") > 1 else netloc[len(host):])
    port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return host, port


def same_site_location(scope: Scope, query: list[tuple[str, str]]) -> bytes:
    """This request's path and `query`, as a redirect that stays on this server: a path
    that starts `//` or `/\\` would send the browser to another host."""
    path, root = scope["path"], scope.get("root_path", "")
    path = path if path.startswith(root) else root + path
    location = "/" + quote(path.lstrip("/\\"), errors="replace")   # encodes \ CR LF and non-ASCII too
    return (location + (f"?{urlencode(query)}" if query else "")).encode("ascii")


def cookies(headers: dict[bytes, bytes]) -> dict[str, str]:
    raw = headers.get(b"cookie", b"").decode("latin-1")
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


# A query parameter in a logged request line: its name (percent-encoded, as sent) and value.
QUERY_PARAMETER = re.compile(r"(?<=[?&])([^=&\s\"#]*)=([^&\s\"#]*)")


class TokensOutOfLogs(logging.Filter):
    """Hides the value of every `token` query parameter in a log line (uvicorn's access log
    writes each request's path and query): whoever reads the log must not become the admin."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Argument by argument: uvicorn's access formatter unpacks the arguments by position.
        if isinstance(record.msg, str):
            record.msg = hide_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(hide_tokens(a) if isinstance(a, str) else a for a in record.args)
        return True


def hide_tokens(text: str) -> str:
    return QUERY_PARAMETER.sub(lambda m: f"{m[1]}=<hidden>" if unquote_plus(m[1]).strip().lower() == "token"
                               else m[0], text)


def keep_tokens_out_of_logs(logger_name: str = "uvicorn.access") -> None:
    """Add TokensOutOfLogs to a logger once, however many apps are made in one process."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, TokensOutOfLogs) for f in logger.filters):
        logger.addFilter(TokensOutOfLogs())


class SharedServer:
    """The Host, Origin, owner and admin checks above, as pure ASGI (no per-request task)."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str], token: str | None):
        keep_tokens_out_of_logs()
        self.app = app
        self.allowed_hosts = [h.lower() for h in allowed_hosts]
        self.token = token.encode() if token else None
        # The admin cookie holds a digest of the token, not the token: any token is a valid
        # cookie value, and the browser's cookie store never holds the token itself.
        self.admin_cookie = hashlib.sha256(b"rnnscope admin cookie\0" + self.token).hexdigest() if token else None

    async def refuse(self, scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        if scope["type"] == "websocket":              # a handshake refused: close, policy violation
            return await send({"type": "websocket.close", "code": 1008, "reason": detail[:120]})
        body = json.dumps({"detail": detail}, ensure_ascii=True).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def is_token(self, given: str | None) -> bool:
        return bool(self.token and given and hmac.compare_digest(given.encode("utf-8", "replace"), self.token))

    def is_admin_cookie(self, given: str | None) -> bool:
        return bool(self.admin_cookie and given and hmac.compare_digest(given.encode("utf-8", "replace"),
                                                                        self.admin_cookie.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers", ()))
        origins = [v for k, v in scope.get("headers", ()) if k == b"origin"]    # every one, should there be two
        host_header = headers.get(b"host", b"").decode("latin-1")
        host = host_name(host_header)
        if not host_allowed(host, self.allowed_hosts):
            return await self.refuse(scope, receive, send, 400,
                                     f"this server does not answer to the host name {host!r}; if that is "
                                     "how people reach it, add it to RNNSCOPE_ALLOWED_HOSTS (comma-separated)")
        method = scope.get("method", "GET")
        # A WebSocket handshake is a GET that browsers send cross-site with cookies: checked too.
        if method not in SAFE_METHODS or scope["type"] == "websocket":
            sources = origins or [v for k, v in scope.get("headers", ()) if k == b"referer"][:1]
            for source in sources:
                if not same_origin(source.decode("latin-1"), host_header):
                    what = "Origin" if origins else "Referer"
                    return await self.refuse(scope, receive, send, 403,
                                             f"a request from another site ({what}: {source.decode('latin-1')[:100]}) "
                                             "may not change anything on this server; use rnnscope's own pages or "
                                             "a client that sends no Origin")
        jar = cookies(headers)
        key = headers.get(OWNER_HEADER.encode(), b"").decode("latin-1") or jar.get(OWNER_COOKIE, "")
        if len(key) > MAX_OWNER_KEY:
            return await self.refuse(scope, receive, send, 400,
                                     f"the owner key is over {MAX_OWNER_KEY} characters; send a shorter "
                                     f"{OWNER_HEADER} header or clear the {OWNER_COOKIE} cookie")
        minted = not key
        if minted:
            key = secrets.token_urlsafe(24)
        auth = headers.get(b"authorization", b"").decode("latin-1")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        admin = self.is_token(bearer) or self.is_admin_cookie(jar.get(ADMIN_COOKIE))
        scope.setdefault("state", {})["requester"] = Requester(owner_id(key), admin)

        set_cookies: list[bytes] = []
        if minted:
            set_cookies.append(f"{OWNER_COOKIE}={key}; Path=/; Max-Age={YEAR}; HttpOnly; "
                               "SameSite=Strict".encode())
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        tokens = [v for k, v in query if k == "token"]
        if method == "GET" and tokens and scope["type"] == "http":
            if not all(self.is_token(t) for t in tokens):
                return await self.refuse(scope, receive, send, 401,
                                         "the token in the URL is not this server's; copy the URL "
                                         "`rnnscope serve` printed")
            # The admin URL: remember the token in a cookie and drop it from the address bar.
            set_cookies.append(f"{ADMIN_COOKIE}={self.admin_cookie}; Path=/; HttpOnly; SameSite=Strict".encode())
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", same_site_location(scope, [(k, v) for k, v in query
                                                                             if k != "token"])),
                                    (b"content-length", b"0")]
                                   + [(b"set-cookie", c) for c in set_cookies]})
            await send({"type": "http.response.body", "body": b""})
            return

        if not set_cookies:
            return await self.app(scope, receive, send)

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()),
                                                  *((b"set-cookie", c) for c in set_cookies)]}
            await send(message)

        await self.app(scope, receive, send_with_cookies)
