"""A push-webhook receiver: a forge POSTs to ``/hooks/<source>``, we check its HMAC and fetch at once.

The signature is GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (Gitea and
Forgejo send the same header). A missing or wrong signature gets 401 and triggers nothing; an unknown
source gets 404; a ``ping`` event gets 200. A valid push gets 202 once the fetch has been requested:
the fetch itself happens in the source's loop, not in the request. A body that is not a JSON object
(malformed, or nested too deeply to parse) gets 400; a delivery id seen again within
``dedupe_window_s`` (forges redeliver, and a replayed request carries a valid signature) gets 200 and
triggers nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from flyslice.operator.local_guard import guard_middleware

log = logging.getLogger("flyslice.webhook")

SIGNATURE_HEADER = "X-Hub-Signature-256"
DEFAULT_MAX_BODY = 1 << 20  # forges cap push payloads well below this
#: Forges retry a delivery within minutes; a replay later than this triggers one (harmless) fetch.
DEFAULT_DEDUPE_WINDOW_S = 600.0
#: Bounds the memory of seen deliveries whatever the request rate.
MAX_REMEMBERED_DELIVERIES = 10_000
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gogs-Delivery", "X-Request-Id")


class BadPayload(ValueError):
    """The body is not a JSON object a forge would send."""


@dataclass(frozen=True)
class PushEvent:
    source: str
    #: The forge's event name (X-GitHub-Event / X-Gitea-Event), ``push`` if absent.
    event: str
    #: ``refs/heads/main`` etc. from the payload, empty if the payload has none.
    ref: str
    #: The pushed commit (payload ``after``), empty if absent.
    after: str
    delivery: str


PushHandler = Callable[[PushEvent], bool | None]


def sign(secret: str | bytes, body: bytes) -> str:
    """The header value a forge sends for ``body``: ``sha256=<hex>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookReceiver:
    """An aiohttp server on 127.0.0.1 (by default) routing signed pushes to per-source handlers.

    ``app`` can instead be mounted into another aiohttp application (e.g. a status server).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        dedupe_window_s: float = DEFAULT_DEDUPE_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self._hooks: dict[str, tuple[bytes, PushHandler]] = {}
        # Host/Origin checks: a browser page (DNS rebinding, cross-site POST) cannot reach the hooks;
        # a forge behind a proxy sends its public name, which FLYSLICE_ALLOWED_HOSTS must then list.
        self.app = web.Application(client_max_size=max_body, middlewares=[guard_middleware([host])])
        self.app.router.add_post("/hooks/{name:.+}", self._handle)  # names may be namespace/name
        self._runner: web.AppRunner | None = None
        self.received = 0
        self.rejected = 0
        self.duplicates = 0
        self._dedupe_window_s = dedupe_window_s
        self._clock = clock
        #: (source, delivery id) -> when it was first accepted, oldest first.
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def register(self, name: str, secret: str | bytes, on_push: PushHandler) -> str:
        """Route ``/hooks/<name>``; returns the path. ``on_push`` returning False means 'ignored'."""
        key = secret.encode() if isinstance(secret, str) else secret
        if not key:
            raise ValueError(f"webhook {name!r}: the secret must not be empty")
        self._hooks[name] = (key, on_push)
        return f"/hooks/{name}"

    def unregister(self, name: str) -> None:
        self._hooks.pop(name, None)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/hooks/{name}"

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hook = self._hooks.get(name)
        if hook is None:
            return _json(404, {"error": f"no GitSource webhook named {name!r}"})
        secret, on_push = hook
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json(413, {"error": "payload too large"})
        given = request.headers.get(SIGNATURE_HEADER, "")
        if not given:
            self.rejected += 1
            return _json(401, {"error": f"missing {SIGNATURE_HEADER} header"})
        if not hmac.compare_digest(given.encode(), sign(secret, body).encode()):
            self.rejected += 1
            log.warning("webhook %s: bad signature from %s", name, request.remote)
            return _json(401, {"error": "signature does not match"})
        self.received += 1
        event_name = request.headers.get("X-GitHub-Event") or request.headers.get("X-Gitea-Event") or "push"
        if event_name == "ping":
            return _json(200, {"pong": True})
        try:
            payload = _payload(body)
        except BadPayload as exc:
            self.rejected += 1
            return _json(400, {"error": str(exc)})
        delivery = next((v for h in DELIVERY_HEADERS if (v := request.headers.get(h, ""))), "")
        # Only signed deliveries are remembered, so an unsigned request cannot pre-empt an id.
        if delivery and self._seen_before(name, delivery):
            self.duplicates += 1
            log.info("webhook %s: delivery %s already handled", name, delivery)
            return _json(200, {"source": name, "triggered": False, "duplicate": True})
        event = PushEvent(
            source=name,
            event=event_name,
            ref=str(payload.get("ref") or ""),
            after=str(payload.get("after") or ""),
            delivery=delivery,
        )
        triggered = on_push(event) is not False
        log.info("webhook %s: %s %s %s", name, event.event, event.ref, "fetching" if triggered else "ignored")
        return _json(202, {"source": name, "triggered": triggered})

    def _seen_before(self, name: str, delivery: str) -> bool:
        """Whether this delivery was accepted within the window; records it if not."""
        now = self._clock()
        while self._seen and (
            len(self._seen) > MAX_REMEMBERED_DELIVERIES
            or now - next(iter(self._seen.values())) > self._dedupe_window_s
        ):
            self._seen.popitem(last=False)
        key = (name, delivery)
        if key in self._seen:
            return True
        self._seen[key] = now
        return False


def _payload(body: bytes) -> dict[str, Any]:
    """The push payload; an empty body is an empty payload. Raises :class:`BadPayload`."""
    try:
        if body.startswith(b"payload="):  # GitHub's application/x-www-form-urlencoded delivery
            body = parse_qs(body.decode()).get("payload", ["{}"])[0].encode()
        data = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPayload(f"body is not JSON: {exc}") from None
    except RecursionError:
        # json's C decoder recurses per nesting level; a signed body can still be hostile.
        raise BadPayload("body is nested too deeply to parse") from None
    if not isinstance(data, dict):
        raise BadPayload(f"body must be a JSON object, not {type(data).__name__}")
    return data


def _json(status: int, data: dict[str, Any]) -> web.Response:
    return web.json_response(data, status=status)
