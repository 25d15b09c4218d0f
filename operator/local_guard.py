"""Guards for flyslice's local HTTP endpoints (status API, console, /metrics, webhook, probes).

Loopback is not a security boundary against the browser on the same machine: a page on
``evil.example`` whose name is re-pointed at 127.0.0.1 (DNS rebinding) reads a loopback server as
same-origin, and any page can *send* requests there. Two checks close that:

* **Host**: a rebinding page's request carries the attacker's name in ``Host``. Allowed are IP
  literals (a page cannot rebind a literal: it would already be that origin), ``localhost`` names, and
  the names in ``FLYSLICE_ALLOWED_HOSTS`` (comma-separated; for a reverse proxy or a Service name),
  plus any given by the server itself. Anything else gets 421 Misdirected Request.
* **Origin**: a browser names the page that made a request in ``Origin`` (and ``Sec-Fetch-Site``).
  A request from another site is refused with 403, so no cross-origin page reads a response, and
  no response carries CORS headers that would allow it.

What this does not do: authenticate callers. A local process (or anyone who can reach a non-loopback
bind address) can still read; bind to loopback, or put authentication in front (docs/security.md).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

ALLOWED_HOSTS_ENV = "FLYSLICE_ALLOWED_HOSTS"
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def configured_hosts() -> set[str]:
    return {h.strip().lower() for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()}


def host_name(header: str) -> str:
    """The name in a ``Host`` header or an origin's netloc, without port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, extra: Iterable[str] = ()) -> bool:
    name = name.rstrip(".")
    if not name:
        return False
    return (
        _is_ip(name)
        or name in LOCAL_NAMES
        or name.endswith(".localhost")
        or name in configured_hosts()
        or name in {e.lower() for e in extra}
    )


def guard_middleware(extra_hosts: Iterable[str] = ()) -> Middleware:
    """aiohttp middleware enforcing the Host and Origin checks above on every route."""
    extra = [h for h in extra_hosts if h]

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "")
        if not host_allowed(host_name(host), extra):
            return web.Response(
                status=421,
                text=f"Host {host!r} is not allowed here; add it to {ALLOWED_HOSTS_ENV} if it is yours\n",
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            # Same origin means the same host *and port*: a page on localhost:3000 is another origin.
            if urlsplit(origin).netloc.lower() != host.strip().lower():
                return web.Response(status=403, text="cross-origin requests are refused\n")
        elif origin == "null" or request.headers.get("Sec-Fetch-Site") == "cross-site":
            return web.Response(status=403, text="cross-origin requests are refused\n")
        return await handler(request)

    return guard


# An absolute POSIX path: a single "/" not preceded by a word character, "/" or "." (so a URL's
# "//host/path" and ratios such as "3/4" stay), followed by at least one path segment.
_ABS_PATH = re.compile(r"(?<![\w/.])/(?!/)(?:[\w.@+~-]+/)*[\w.@+~-]+")


def redact_paths(value: Any) -> Any:
    """``value`` with absolute file-system paths in its strings replaced by ``<path>``.

    For callers that are not on this host: state directories, module files and checkout paths say
    more about the machine than a remote reader needs. Best effort: a path written without a leading
    slash, or inside a word, is not recognised.
    """
    if isinstance(value, str):
        return _ABS_PATH.sub("<path>", value)
    if isinstance(value, list):
        return [redact_paths(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_paths(v) for k, v in value.items()}
    return value


def is_loopback_peer(request: web.Request) -> bool:
    peer = request.remote or ""
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
