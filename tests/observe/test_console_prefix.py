"""The console behind a path prefix, as the API server's service proxy serves it in-cluster
(``/api/v1/namespaces/flyslice-system/services/flyslice-console:http/proxy/``; docs/console.md):
a prefix-stripping reverse proxy in front of a real `flyslice up`, driven by a real headless Chromium.

The proxy answers 404 to everything outside its prefix, so any absolute URL left in the page, its
scripts, its data fetch or its event stream would break the page here."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .browser import Browser
from .conftest import UpProcess
from .test_console import PLACED_IN_DOM, WILDFIRE, wait_js

PREFIX = "/api/v1/namespaces/flyslice-system/services/flyslice-console:http/proxy"


class PrefixProxy:
    """``PREFIX/<path>`` -> ``upstream/<path>``, streamed chunk by chunk (server-sent events pass)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[str] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        if not request.path.startswith(PREFIX + "/"):
            raise web.HTTPNotFound(text="outside the proxy prefix")
        target = self.upstream + request.path_qs[len(PREFIX) :]
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
            session.get(target, allow_redirects=False) as up,
        ):
            headers = {k: v for k, v in up.headers.items() if k.lower() in ("content-type", "location")}
            resp = web.StreamResponse(status=up.status, headers=headers)
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
            except (ConnectionResetError, aiohttp.ClientError):
                pass
            return resp

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, shutdown_timeout=1)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> PrefixProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}/"


@pytest.fixture
def proxied(start_up: Any, tmp_path: Path) -> Iterator[tuple[UpProcess, PrefixProxy, Path]]:
    src = tmp_path / "manifests"
    shutil.copytree(WILDFIRE, src)
    up: UpProcess = start_up(src)
    up.wait_ready()
    with PrefixProxy(up.base) as proxy:
        yield up, proxy, src


@pytest.mark.slow
def test_console_works_under_a_path_prefix_with_live_updates(
    proxied: tuple[UpProcess, PrefixProxy, Path], tmp_path: Path
) -> None:
    up, proxy, src = proxied
    browser = Browser(tmp_path)
    try:
        # The proxy's root: the console's redirect must stay under the prefix (a relative Location).
        browser.go(proxy.base)
        wait_js(browser, "return document.querySelectorAll('[data-node] .nf').length === 9", 15, "9 NFs")
        assert browser.js("return location.pathname") == PREFIX + "/console/"
        wait_js(browser, "return document.getElementById('live').dataset.state === 'live'", 10, "the stream")
        assert len(browser.js(PLACED_IN_DOM)) == 9
        loaded = browser.js(
            "return performance.getEntriesByType('resource').map(r => new URL(r.name).pathname)"
        )
        assert loaded and all(p.startswith(PREFIX + "/console/") for p in loaded), loaded
        assert f"{PREFIX}/console/events" in proxy.requests

        # The event stream through the proxy carries a change to the page within 2 s.
        slice_file = src / "slice.yaml"
        slice_file.write_text(slice_file.read_text().replace("maxLatencyMs: 10", "maxLatencyMs: 12"))
        up.wait(lambda d: d["slices"][0]["budgetMs"] == 12, timeout=10, what="the new budget in /status")
        applied = time.monotonic()
        wait_js(
            browser,
            "return document.querySelector('[data-slice=\"default/wildfire\"] .budget').textContent === '12 ms'",
            2.0,
            "the console to show the 12 ms budget through the proxy",
        )
        assert time.monotonic() - applied < 2.0
        # The no-JavaScript link to the status document resolves under the prefix too.
        href = browser.js("return new URL('../status', location.href).pathname")
        assert href == PREFIX + "/status"
    finally:
        browser.close()
    assert not [r for r in proxy.requests if not r.startswith(PREFIX + "/")], proxy.requests
