"""The HTTP routes this package adds to the status server: ``/metrics``, ``/console/`` and its data.

All GET, all read-only. Static assets are files shipped in the package (``static/``): no CDN, so the
console works on an air-gapped edge site and a phone on the site's Wi-Fi.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from flyslice.operator.observe.metrics import CONTENT_TYPE, Metrics

#: How often an open event stream looks for a change; the console promises updates within 2 s.
POLL_S = 0.25
#: A comment line this often keeps proxies and phones from closing an idle stream.
KEEPALIVE_S = 15.0
ASSETS = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
}


def asset(name: str) -> bytes:
    return resources.files("flyslice.operator.observe").joinpath("static", name).read_bytes()


class ObserveRoutes:
    """Registers the routes on an :class:`aiohttp.web.Application` (``StatusServer(routes=...)``)."""

    def __init__(
        self,
        metrics: Metrics | None,
        console_state: Callable[[], dict[str, Any]] | None,
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self.metrics = metrics
        self.console_state = console_state
        self.poll_s = poll_s
        self._closing = asyncio.Event()

    def __call__(self, app: web.Application) -> None:
        if self.metrics is not None:
            app.router.add_get("/metrics", self._metrics)
        if self.console_state is not None:
            app.router.add_get("/", self._root)
            app.router.add_get("/console", self._root)
            app.router.add_get("/console/", self._asset)
            app.router.add_get("/console/state", self._state)
            app.router.add_get("/console/events", self._events)
            app.router.add_get("/console/{name}", self._asset)
            # Event streams never end on their own; without this the server's shutdown waits for them.
            app.on_shutdown.append(self._close_streams)

    async def _metrics(self, _: web.Request) -> web.Response:
        assert self.metrics is not None
        body = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _root(self, request: web.Request) -> web.Response:
        # Relative, so it stays under a proxy's path prefix (the API server's service proxy in-cluster):
        # from "/" and from "/console" alike, "console/" resolves to ".../console/".
        raise web.HTTPFound("console/")

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in ASSETS:
            raise web.HTTPNotFound(text=f"no console asset {name!r}")
        return web.Response(
            body=asset(name),
            content_type=ASSETS[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    def _document(self) -> str:
        assert self.console_state is not None
        return json.dumps(self.console_state(), sort_keys=True, default=str)

    async def _state(self, _: web.Request) -> web.Response:
        return web.Response(text=self._document(), content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx in front must not buffer the stream
            }
        )
        await resp.prepare(request)
        last = ""
        idle = 0.0
        try:
            while not self._closing.is_set():
                doc = self._document()
                if doc != last:
                    await resp.write(f"event: state\ndata: {doc}\n\n".encode())
                    last, idle = doc, 0.0
                elif idle >= KEEPALIVE_S:
                    await resp.write(b": keepalive\n\n")
                    idle = 0.0
                try:
                    await asyncio.wait_for(self._closing.wait(), self.poll_s)
                except TimeoutError:
                    idle += self.poll_s
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went away
        return resp

    async def _close_streams(self, _: web.Application) -> None:
        self._closing.set()
