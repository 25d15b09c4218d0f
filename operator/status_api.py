"""The embedded mode's read-only status API (JSON over HTTP on loopback).

``GET /status`` returns the document ``flyslice status -o json`` prints; ``GET /healthz``
answers 200 while the controller loop is alive. Default address: 127.0.0.1:7433.
Both runtimes also mount ``/metrics`` and the web console here (``flyslice.operator.observe``).
"""

from __future__ import annotations

import errno
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from flyslice.operator.local_guard import guard_middleware, is_loopback_peer, redact_paths

DEFAULT_ADDR = "127.0.0.1:7433"


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class ListenError(Exception):
    """A server could not listen on its address; the message says why in a user's words."""

    def __init__(self, addr: str, cause: OSError) -> None:
        self.addr = addr
        self.in_use = cause.errno == errno.EADDRINUSE
        super().__init__(f"cannot listen on {addr}: {describe_listen_error(cause)}")


def describe_listen_error(exc: OSError) -> str:
    """``Address already in use`` rather than asyncio's "error while attempting to bind on ..."."""
    if isinstance(exc, socket.gaierror) or not exc.errno:
        return str(exc.strerror or exc)
    return os.strerror(exc.errno)


class StatusServer:
    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        healthy: Callable[[], bool],
        routes: Callable[[web.Application], None] | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._healthy = healthy
        #: Adds more read-only routes (``/metrics``, the web console: ``flyslice.operator.observe``).
        self._routes = routes
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, addr: str) -> None:
        """Listen on ``addr`` (HOST:PORT, port 0 = any free port, then read ``port``).

        Raises :class:`ListenError` when the address is taken, not local or not allowed.
        """
        host, port = parse_addr(addr)
        # Host and Origin checks on every route, console and /metrics included (DNS rebinding).
        app = web.Application(middlewares=[guard_middleware([host])])
        app.router.add_get("/status", self._status)
        app.router.add_get("/healthz", self._health)
        if self._routes is not None:
            self._routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ListenError(addr, exc) from exc
        server = site._server  # aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        doc = self._snapshot()
        if not is_loopback_peer(request):
            doc = redact_paths(doc)  # host paths are for this host's users only
        return web.Response(text=json.dumps(doc, indent=2), content_type="application/json")

    async def _health(self, _: web.Request) -> web.Response:
        ok = self._healthy()
        return web.Response(text="ok" if ok else "stalled", status=200 if ok else 503)


class ProbeServer:
    """The operator's probe port: ``/healthz`` and ``/readyz`` and nothing else.

    Kubelet reaches it on the pod IP, so it binds there; status, metrics and the console, which say
    much more, are served by a :class:`StatusServer` on an address configured for them.
    """

    def __init__(self, healthy: Callable[[], bool], ready: Callable[[], bool] | None = None) -> None:
        self._healthy = healthy
        self._ready = ready or healthy
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, addr: str) -> None:
        host, port = parse_addr(addr)
        app = web.Application(middlewares=[guard_middleware([host])])
        app.router.add_get("/healthz", self._probe(self._healthy))
        app.router.add_get("/readyz", self._probe(self._ready))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ListenError(addr, exc) from exc
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    @staticmethod
    def _probe(check: Callable[[], bool]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_: web.Request) -> web.Response:
            ok = check()
            return web.Response(text="ok" if ok else "stalled", status=200 if ok else 503)

        return handler
