"""The fetch loop: polling, triggered fetches, supersession, and the DesiredSource view."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from flyslice.operator.gitops.fetcher import FetchError, GitSource, GitSourceSpec, Snapshot
from flyslice.operator.gitops.watch import FetchTrigger, SourceWatcher

from .conftest import GitDaemon, Upstream

pytestmark = pytest.mark.timeout(60)

#: Long enough that only a trigger, never the poll interval, can explain a prompt fetch.
NEVER_S = 3600.0


async def stop_after(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(task, 10)


def test_trigger_counts_requests_from_any_thread() -> None:
    async def scenario() -> None:
        trigger = FetchTrigger()
        assert not await trigger.wait(after=0, timeout=0.05)
        waiter = asyncio.ensure_future(trigger.wait(after=0, timeout=10))
        await asyncio.sleep(0.01)
        thread = threading.Thread(target=trigger.request, args=("from a thread",))
        thread.start()
        assert await asyncio.wait_for(waiter, 10)
        thread.join()
        assert trigger.generation == 1 and trigger.last_reason == "from a thread"
        # A request made before anyone waits is not lost.
        trigger.request()
        assert await trigger.wait(after=1, timeout=0)

    asyncio.run(scenario())


def test_poll_interval_picks_up_a_push(upstream: Upstream, tmp_path: Path) -> None:
    async def scenario() -> None:
        source = GitSource(GitSourceSpec(url=str(upstream.bare), interval_s=0.1), tmp_path / "c")
        seen: list[str] = []
        watcher = SourceWatcher(source, on_revision=lambda s: seen.append(s.revision))
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        first = await watcher.wait_newer(None, timeout=10)
        assert first is not None and first.revision == upstream.head()
        pushed = await asyncio.to_thread(upstream.commit, {"README": "v2\n"})
        second = await watcher.wait_newer(first.revision, timeout=10)
        assert second is not None and second.revision == pushed
        await stop_after(task, stop)
        assert seen == [first.revision, pushed]
        assert watcher.fetches >= 2

    asyncio.run(scenario())


def test_trigger_fetches_at_once_and_supersedes_a_waiting_reconcile(
    upstream: Upstream, tmp_path: Path
) -> None:
    async def scenario() -> None:
        source = GitSource(GitSourceSpec(url=str(upstream.bare), interval_s=NEVER_S), tmp_path / "c")
        watcher = SourceWatcher(source)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        applied = await watcher.wait_newer(None, timeout=10)
        assert applied is not None

        # A reconcile of `applied` waits for NFs that never become ready; a fix is pushed meanwhile.
        never_ready = asyncio.Event()
        readiness = asyncio.ensure_future(never_ready.wait())
        newer = asyncio.ensure_future(watcher.wait_newer(applied.revision))
        fix = await asyncio.to_thread(upstream.commit, {"README": "fix\n"}, "fix")
        watcher.trigger.request("push")
        done, _ = await asyncio.wait({readiness, newer}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert newer in done and readiness not in done
        assert newer.result() == watcher.latest and watcher.latest is not None
        assert watcher.latest.revision == fix
        assert watcher.superseded(applied.revision) and not watcher.superseded(fix)
        readiness.cancel()
        await stop_after(task, stop)

    asyncio.run(scenario())


def test_fetch_errors_do_not_stop_the_loop(upstream: Upstream, git_daemon: GitDaemon, tmp_path: Path) -> None:
    async def scenario() -> None:
        source = GitSource(GitSourceSpec(url=git_daemon.url(), interval_s=0.05), tmp_path / "c")
        watcher = SourceWatcher(source)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        good = await watcher.wait_newer(None, timeout=10)
        assert good is not None
        assert watcher.fetch() == good  # the DesiredSource view hands out the accepted snapshot

        await asyncio.to_thread(git_daemon.stop)
        pushed = await asyncio.to_thread(upstream.commit, {"README": "while down\n"})
        failures = watcher.fetches
        for _ in range(200):
            if source.status.last_error and watcher.fetches > failures + 1:
                break
            await asyncio.sleep(0.02)
        with pytest.raises(FetchError, match=r"fetching branch main from git://127\.0\.0\.1"):
            watcher.fetch()
        assert watcher.latest == good

        await asyncio.to_thread(git_daemon.start)
        back = await watcher.wait_newer(good.revision, timeout=10)
        assert back is not None and back.revision == pushed
        assert watcher.fetch() == back
        await stop_after(task, stop)

    asyncio.run(scenario())


def test_restart_during_an_outage_serves_the_last_good_revision(upstream: Upstream, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = GitSource(GitSourceSpec(url=upstream.bare.as_uri()), cache)
    good = first.fetch()
    first.mark_applied(good.revision, inventory=["Slice/default/a"])
    upstream.bare.rename(tmp_path / "gone.git")

    # A new process: same cache, remote unreachable.
    restarted = GitSource(GitSourceSpec(url=upstream.bare.as_uri()), cache)
    assert restarted.last_good == good
    assert restarted.status.last_applied_revision == good.revision
    assert restarted.status.inventory == ("Slice/default/a",)
    watcher = SourceWatcher(restarted)
    assert asyncio.run(watcher.fetch_now()) is None
    # Handed out once so the controller can run it; afterwards the error is reported.
    served: Snapshot = watcher.fetch()
    assert served == good and (served.root / "README").read_text() == "hello\n"
    with pytest.raises(FetchError, match="does not appear to be a git repository"):
        watcher.fetch()


def test_a_cache_from_another_spec_is_not_reused(upstream: Upstream, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    GitSource(GitSourceSpec(url=str(upstream.bare), path="deploy"), cache).fetch()
    other = GitSource(GitSourceSpec(url=str(upstream.bare), path="."), cache)
    assert other.last_good is None


def test_suspended_source_does_not_fetch(upstream: Upstream, tmp_path: Path) -> None:
    async def scenario() -> None:
        source = GitSource(
            GitSourceSpec(url=str(upstream.bare), interval_s=0.02, suspend=True), tmp_path / "c"
        )
        watcher = SourceWatcher(source)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await asyncio.sleep(0.2)
        await stop_after(task, stop)
        assert watcher.fetches == 0 and watcher.latest is None

    asyncio.run(scenario())


def test_a_failing_subscriber_does_not_stop_the_loop(upstream: Upstream, tmp_path: Path) -> None:
    async def scenario() -> None:
        def broken(_: object) -> None:
            raise RuntimeError("subscriber bug")

        source = GitSource(GitSourceSpec(url=str(upstream.bare), interval_s=0.05), tmp_path / "c")
        watcher = SourceWatcher(source, on_revision=broken, on_error_change=broken)
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        first = await watcher.wait_newer(None, timeout=10)
        assert first is not None
        pushed = await asyncio.to_thread(upstream.commit, {"README": "again\n"})
        second = await watcher.wait_newer(first.revision, timeout=10)
        assert second is not None and second.revision == pushed
        assert not task.done()
        await stop_after(task, stop)

    asyncio.run(scenario())
