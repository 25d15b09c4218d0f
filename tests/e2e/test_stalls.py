"""A controller whose passes fail says so: Stalled in the status at once, /healthz 503 after
``unhealthy_after`` failures in a row, never Ready meanwhile; and it recovers by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from flyslice.operator.embedded.agent_runtime import LocalAgentFleet
from flyslice.operator.embedded.controller import EmbeddedController
from flyslice.operator.gitops.sources import DirectorySource, Snapshot
from flyslice.operator.status_api import StatusServer

from .up_process import copy_wildfire

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class BreakableSource(DirectorySource):
    """The real directory source, with a fault the test switches on (a bug, not a fetch error)."""

    broken = False

    def fetch(self) -> Snapshot:
        if self.broken:
            raise KeyError("simulated bug in the pass")
        return super().fetch()


def test_failing_passes_are_stalled_unhealthy_and_never_ready(tmp_path: Path) -> None:
    source = BreakableSource(copy_wildfire(tmp_path / "src"))
    controller = EmbeddedController(source, LocalAgentFleet(tmp_path / "agents"), unhealthy_after=3)
    server = StatusServer(controller.snapshot, controller.healthy)

    async def until(cond, timeout=60.0):  # type: ignore[no-untyped-def]
        for _ in range(int(timeout / 0.1)):
            if await cond():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(controller.snapshot())

    async def scenario() -> None:
        stop = asyncio.Event()
        await server.start("127.0.0.1:0")
        task = asyncio.create_task(controller.run(stop, interval_s=0.2))
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as http:

            async def get(path: str) -> tuple[int, object]:
                async with http.get(base + path) as resp:
                    return resp.status, await (resp.json() if path == "/status" else resp.text())

            async def ready() -> bool:
                _, doc = await get("/status")
                return bool(doc["slices"]) and doc["slices"][0]["phase"] == "Ready"  # type: ignore[index]

            try:
                await until(ready)
                assert (await get("/healthz"))[0] == 200
                source.broken = True
                await until(lambda: _stalled(controller))
                doc = controller.snapshot()
                (s,) = doc["slices"]
                assert s["phase"] == "Degraded" and s["stalled"]
                assert "simulated bug" in s["reasons"][0]
                assert doc["controller"]["stalled"] and "KeyError" in doc["controller"]["lastPassError"]

                async def unhealthy() -> bool:
                    return (await get("/healthz"))[0] == 503

                await until(unhealthy)
                assert controller.consecutive_failures >= 3
                assert sum("reconcile pass failed" in e for e in controller.events) == 1  # once, not per pass
                source.broken = False
                await until(ready)
                assert (await get("/healthz"))[0] == 200
                assert "reconcile resumed" in " ".join(controller.events)
            finally:
                stop.set()
                await task
                await server.stop()

    asyncio.run(scenario())


async def _stalled(controller: EmbeddedController) -> bool:
    return bool(controller.snapshot()["controller"]["stalled"])
