"""A push-webhook receiver: a forge POSTs to ``/hooks/<source>``, we check its HMAC and fetch at once.

The signature is GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (Gitea and
Forgejo send the same header). A missing or wrong signature gets 401 and triggers nothing; an unknown
source gets 404; a ``ping`` event gets 200. A valid push gets 202 once the fetch has been requested:
the fetch itself happens in the source's loop, not in the request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

log = logging.getLogger("flyslice.webhook")

SIGNATURE_HEADER = "X-Hub-Signature-256"
DEFAULT_MAX_BODY = 1 << 20  # forges cap push payloads well below this


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

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.host = host
        self.port = port
        self._hooks: dict[str, tuple[bytes, PushHandler]] = {}
        self.app = web.Application(client_max_size=max_body)
        self.app.router.add_post("/hooks/{name:.+}", self._handle)  # names may be namespace/name
        self._runner: web.AppRunner | None = None
        self.received = 0
        self.rejected = 0

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
        payload = _payload(body)
        event = PushEvent(
            source=name,
            event=event_name,
            ref=str(payload.get("ref") or ""),
            after=str(payload.get("after") or ""),
            delivery=request.headers.get("X-GitHub-Delivery", ""),
        )
        triggered = on_push(event) is not False
        log.info("webhook %s: %s %s %s", name, event.event, event.ref, "fetching" if triggered else "ignored")
        return _json(202, {"source": name, "triggered": triggered})


def _payload(body: bytes) -> dict[str, Any]:
    # The signature already proved the sender; an unparsable body still means "something changed".
    try:
        if body.startswith(b"payload="):  # GitHub's application/x-www-form-urlencoded delivery
            body = parse_qs(body.decode()).get("payload", ["{}"])[0].encode()
        data = json.loads(body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _json(status: int, data: dict[str, Any]) -> web.Response:
    return web.json_response(data, status=status)
