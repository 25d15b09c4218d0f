"""The embedded mode's read-only status API (JSON over HTTP on loopback).

``GET /status`` returns the document ``flyslice status -o json`` prints; ``GET /healthz``
answers 200 while the controller loop is alive. Default address: 127.0.0.1:7433.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

DEFAULT_ADDR = "127.0.0.1:7433"


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"{addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class StatusServer:
    def __init__(self, snapshot: Callable[[], dict[str, Any]], healthy: Callable[[], bool]) -> None:
        self._snapshot = snapshot
        self._healthy = healthy
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, addr: str) -> None:
        host, port = parse_addr(addr)
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_get("/healthz", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _status(self, _: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self._snapshot(), indent=2), content_type="application/json")

    async def _health(self, _: web.Request) -> web.Response:
        ok = self._healthy()
        return web.Response(text="ok" if ok else "stalled", status=200 if ok else 503)
