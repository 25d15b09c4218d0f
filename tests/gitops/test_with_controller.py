"""The GitOps source driving the embedded controller: commit -> webhook -> fetch -> applied revision.

The node runtimes here are a FAKE (``FakeNodeRuntime``): they record the NFInstances they are given
and report them running at once. Node agents are another component with their own tests; this test is
about the revision flow between git and the controller.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from flyslice.operator.embedded.controller import EmbeddedController
from flyslice.operator.gitops.fetcher import GitSource, GitSourceSpec
from flyslice.operator.gitops.watch import SourceWatcher
from flyslice.operator.gitops.webhook import SIGNATURE_HEADER, WebhookReceiver, sign
from flyslice.operator.planning.actions import InstanceAction
from flyslice.operator.reconcile import InstanceObservation, NodeObservation

from .conftest import GitDaemon, Upstream

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cret"


class FakeNodeRuntime:
    """FAKE node agent: every NFInstance it is handed is reported Running immediately."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.instances: dict[tuple[str, str], InstanceAction] = {}

    async def converge(self, actions: Sequence[InstanceAction]) -> None:
        self.instances = {(a.namespace, a.name): a for a in actions}

    def observe(self) -> tuple[NodeObservation, Mapping[tuple[str, str], InstanceObservation]]:
        running = {key: InstanceObservation("Running", self.node) for key in self.instances}
        return NodeObservation(heartbeat_at=time.time(), load=0.1), running

    async def stop(self) -> None:
        self.instances = {}


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> float:
    """Seconds until ``condition`` holds; fails after ``timeout_s``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def test_commit_webhook_apply_and_outage(upstream: Upstream, git_daemon: GitDaemon, tmp_path: Path) -> None:
    wildfire = {f"fleet/{p.name}": p.read_text() for p in (REPO / "examples" / "wildfire").glob("*.yaml")}
    first = upstream.commit(wildfire, "wildfire")

    async def scenario() -> dict[str, Any]:
        runtimes: dict[str, FakeNodeRuntime] = {}

        def factory(node: str, _catalog: object) -> FakeNodeRuntime:
            return runtimes.setdefault(node, FakeNodeRuntime(node))

        source = GitSource(GitSourceSpec(url=git_daemon.url(), path="fleet", interval_s=3600), tmp_path / "c")
        watcher = SourceWatcher(source)
        controller = EmbeddedController(watcher, factory)
        watcher.on_revision = lambda _snap: controller.trigger()
        watcher.on_error_change = lambda _error: controller.trigger()
        await watcher.fetch_now()  # the first pass then already has a revision
        receiver = WebhookReceiver()
        receiver.register("fleet", SECRET, watcher.handle_push)
        await receiver.start()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(watcher.run(stop)),
            asyncio.create_task(controller.run(stop, interval_s=3600)),
        ]
        try:
            await until(lambda: controller.source_status.last_applied_revision == first)
            doc = controller.snapshot()
            assert [s["name"] for s in doc["slices"]] == ["wildfire"]
            source.mark_applied(
                first, inventory=[f"Slice/{s['namespace']}/{s['name']}" for s in doc["slices"]]
            )
            instances = sum(len(r.instances) for r in runtimes.values())
            assert instances == 9

            # A commit removes the slice; the webhook makes it land without waiting for the hour-long poll.
            # Removing every slice is held unless the commit confirms it (see test_prune_guard).
            removed = await asyncio.to_thread(
                upstream.commit, {"fleet/slice.yaml": None}, "remove slice\n\nFlyslice-Prune: confirm\n"
            )
            body = json.dumps({"ref": "refs/heads/main", "after": removed}).encode()
            posted = time.monotonic()
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    receiver.url("fleet"), data=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
                ) as resp,
            ):
                assert resp.status == 202
            await until(lambda: controller.source_status.last_applied_revision == removed)
            push_to_applied_s = time.monotonic() - posted
            assert controller.snapshot()["slices"] == []
            assert sum(len(r.instances) for r in runtimes.values()) == 0

            # The remote goes away: the controller reports it and keeps the applied revision.
            await asyncio.to_thread(git_daemon.stop)
            watcher.trigger.request("test")
            await until(lambda: bool(controller.source_status.last_error))
            assert "git://127.0.0.1" in controller.source_status.last_error
            assert controller.source_status.last_applied_revision == removed
            return {"push_to_applied_s": push_to_applied_s}
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
            await receiver.stop()

    result = asyncio.run(scenario())
    print(f"webhook push -> applied revision: {result['push_to_applied_s'] * 1000:.0f} ms")
