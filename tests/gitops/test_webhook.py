"""The push webhook over real HTTP on loopback: HMAC check, routing, and a push that fetches at once."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from flyslice.operator.gitops.fetcher import GitSource, GitSourceSpec
from flyslice.operator.gitops.watch import SourceWatcher
from flyslice.operator.gitops.webhook import SIGNATURE_HEADER, PushEvent, WebhookReceiver, sign

from .conftest import SmartHttpServer, Upstream

pytestmark = pytest.mark.timeout(60)

SECRET = "webhook-secret"


def push_body(ref: str = "refs/heads/main", after: str = "0" * 40) -> bytes:
    return json.dumps({"ref": ref, "after": after, "repository": {"full_name": "acme/fleet"}}).encode()


_deliveries = itertools.count(1)


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    signature: str | None,
    event: str = "push",
    delivery: str | None = None,
) -> tuple[int, dict[str, object]]:
    # Every call is a new delivery unless the test replays one: the receiver drops repeats.
    delivery = delivery or f"d-{next(_deliveries)}"
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    async with session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as resp:
        return resp.status, await resp.json()


def test_signed_push_fetches_at_once_over_http(upstream: Upstream, tmp_path: Path) -> None:
    server = SmartHttpServer(upstream.base)

    async def scenario() -> None:
        source = GitSource(GitSourceSpec(url=server.url(), interval_s=3600), tmp_path / "c")
        watcher = SourceWatcher(source)
        receiver = WebhookReceiver()
        receiver.register("fleet", SECRET, watcher.handle_push)
        port = await receiver.start()
        assert port > 0
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        try:
            first = await watcher.wait_newer(None, timeout=10)
            assert first is not None
            pushed = await asyncio.to_thread(upstream.commit, {"README": "pushed\n"})
            body = push_body(after=pushed)
            async with aiohttp.ClientSession() as session:
                status, reply = await post(session, receiver.url("fleet"), body, sign(SECRET, body))
            assert (status, reply) == (202, {"source": "fleet", "triggered": True})
            # The poll interval is an hour: only the webhook explains this fetch.
            newer = await watcher.wait_newer(first.revision, timeout=10)
            assert newer is not None and newer.revision == pushed
            assert watcher.trigger.last_reason == "webhook push refs/heads/main"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await receiver.stop()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_bad_or_missing_signature_is_refused_and_triggers_nothing() -> None:
    async def scenario() -> None:
        events: list[PushEvent] = []
        receiver = WebhookReceiver()
        receiver.register("fleet", SECRET, events.append)
        await receiver.start()
        body = push_body()
        try:
            async with aiohttp.ClientSession() as session:
                url = receiver.url("fleet")
                assert (await post(session, url, body, sign("wrong-secret", body)))[0] == 401
                assert (await post(session, url, body, None))[0] == 401
                assert (await post(session, url, body + b" ", sign(SECRET, body)))[0] == 401  # body altered
                assert (await post(session, url, body, "sha1=" + sign(SECRET, body)[7:]))[0] == 401
                assert events == []
                assert receiver.rejected == 4

                status, reply = await post(session, receiver.url("other"), body, sign(SECRET, body))
                assert status == 404 and "other" in str(reply["error"])
                assert (await post(session, url, b"{}", sign(SECRET, b"{}"), event="ping")) == (
                    200,
                    {"pong": True},
                )
                assert events == []

                status, _ = await post(session, url, body, sign(SECRET, body), delivery="d-first")
                assert status == 202
                assert events == [PushEvent("fleet", "push", "refs/heads/main", "0" * 40, "d-first")]

                # Names may carry a namespace, as GitSource objects do.
                receiver.register("edge/fleet", SECRET, events.append)
                assert (await post(session, receiver.url("edge/fleet"), body, sign(SECRET, body)))[0] == 202
                assert events[-1].source == "edge/fleet"

                # GitHub's form-encoded delivery carries the JSON in a `payload` field.
                form = b"payload=" + quote(push_body(ref="refs/heads/dev").decode()).encode()
                assert (await post(session, url, form, sign(SECRET, form)))[0] == 202
                assert events[-1].ref == "refs/heads/dev"
        finally:
            await receiver.stop()

    asyncio.run(scenario())


def test_push_to_a_branch_not_followed_is_ignored(upstream: Upstream, tmp_path: Path) -> None:
    async def scenario() -> None:
        watcher = SourceWatcher(GitSource(GitSourceSpec(url=str(upstream.bare)), tmp_path / "c"))
        receiver = WebhookReceiver()
        receiver.register("fleet", SECRET, watcher.handle_push)
        await receiver.start()
        try:
            async with aiohttp.ClientSession() as session:
                other = push_body(ref="refs/heads/feature")
                status, reply = await post(session, receiver.url("fleet"), other, sign(SECRET, other))
                assert (status, reply["triggered"]) == (202, False)
                assert watcher.trigger.generation == 0
                mine = push_body()
                status, reply = await post(session, receiver.url("fleet"), mine, sign(SECRET, mine))
                assert (status, reply["triggered"]) == (202, True)
                assert watcher.trigger.generation == 1
        finally:
            await receiver.stop()

    asyncio.run(scenario())


def test_oversized_payload_is_refused() -> None:
    async def scenario() -> None:
        events: list[PushEvent] = []
        receiver = WebhookReceiver(max_body=1024)
        receiver.register("fleet", SECRET, events.append)
        await receiver.start()
        try:
            body = b"{" + b" " * 4096 + b"}"
            async with aiohttp.ClientSession() as session:
                headers = {SIGNATURE_HEADER: sign(SECRET, body)}
                async with session.post(receiver.url("fleet"), data=body, headers=headers) as resp:
                    assert resp.status == 413
            assert events == []
        finally:
            await receiver.stop()

    asyncio.run(scenario())


def test_empty_secret_is_rejected() -> None:
    with pytest.raises(ValueError, match="secret must not be empty"):
        WebhookReceiver().register("fleet", "", lambda e: True)


def test_a_delivery_is_handled_once_within_the_window() -> None:
    now = [1000.0]

    async def scenario() -> None:
        events: list[PushEvent] = []
        receiver = WebhookReceiver(dedupe_window_s=60, clock=lambda: now[0])
        receiver.register("fleet", SECRET, events.append)
        receiver.register("other", SECRET, events.append)
        await receiver.start()
        body = push_body()
        try:
            async with aiohttp.ClientSession() as session:
                url = receiver.url("fleet")
                assert (await post(session, url, body, sign(SECRET, body), delivery="same"))[0] == 202
                replies = [
                    await post(session, url, body, sign(SECRET, body), delivery="same") for _ in range(300)
                ]
                assert {(s, r["duplicate"], r["triggered"]) for s, r in replies} == {(200, True, False)}
                assert len(events) == 1 and receiver.duplicates == 300
                # The same id for another source is another delivery.
                assert (
                    await post(session, receiver.url("other"), body, sign(SECRET, body), delivery="same")
                )[0] == 202
                # An unsigned request with a fresh id neither triggers nor uses up the id.
                assert (await post(session, url, body, None, delivery="fresh"))[0] == 401
                assert (await post(session, url, body, sign(SECRET, body), delivery="fresh"))[0] == 202
                assert len(events) == 3
                now[0] += 61  # past the window: a redelivery is handled again
                assert (await post(session, url, body, sign(SECRET, body), delivery="same"))[0] == 202
                assert len(events) == 4
        finally:
            await receiver.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than json's recursion limit
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"a string"',
    ],
    ids=["deep-list", "deep-object", "malformed", "not-utf8", "list", "string"],
)
def test_a_signed_body_that_is_not_a_json_object_gets_400(body: bytes) -> None:
    async def scenario() -> None:
        events: list[PushEvent] = []
        receiver = WebhookReceiver()
        receiver.register("fleet", SECRET, events.append)
        await receiver.start()
        try:
            async with aiohttp.ClientSession() as session:
                status, reply = await post(session, receiver.url("fleet"), body, sign(SECRET, body))
                assert status == 400 and reply["error"]
                # The receiver still works afterwards.
                good = push_body()
                assert (await post(session, receiver.url("fleet"), good, sign(SECRET, good)))[0] == 202
            assert len(events) == 1
        finally:
            await receiver.stop()

    asyncio.run(scenario())
