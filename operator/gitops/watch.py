"""When to fetch: a poll interval, plus an on-demand trigger (a webhook) that a waiting loop can await.

:class:`FetchTrigger` counts fetch requests; anyone can request (from any thread), and a loop awaits a
request newer than the one it last served. :class:`SourceWatcher` runs the fetch loop of one
:class:`~flyslice.operator.gitops.fetcher.GitSource` and publishes each new revision; a reconcile that is
waiting for NFs to become ready races its wait against :meth:`SourceWatcher.wait_newer`, so a newer
commit supersedes it at once instead of after a health-check time-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from flyslice.operator.gitops.fetcher import GitSource
from flyslice.operator.gitops.sources import FetchError, Snapshot
from flyslice.operator.gitops.webhook import PushEvent

log = logging.getLogger("flyslice.gitwatch")


class _Signal:
    """A broadcast 'something happened' for asyncio waiters, fired from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def _current(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._event is None:
            self._loop, self._event = loop, asyncio.Event()
        return self._event

    def fire(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._swap(event)
        else:
            loop.call_soon_threadsafe(self._swap, event)

    def _swap(self, event: asyncio.Event) -> None:
        # Waiters hold the old event and wake; later waiters get a fresh, unset one.
        if self._event is event:
            self._event = asyncio.Event()
        event.set()

    async def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            event = self._current()
            if predicate():  # re-check after taking the event: a fire in between is not lost
                break
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)
        return True


class FetchTrigger:
    """Fetch-now requests, counted. ``request`` is safe from any thread (a webhook server, a CLI)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self.last_reason = ""
        self._signal = _Signal()

    @property
    def generation(self) -> int:
        return self._generation

    def request(self, reason: str = "") -> int:
        with self._lock:
            self._generation += 1
            self.last_reason = reason
            generation = self._generation
        self._signal.fire()
        return generation

    async def wait(self, after: int, timeout: float | None = None) -> bool:
        """Until a request newer than generation ``after`` exists (True), or ``timeout`` passes (False)."""
        return await self._signal.wait(lambda: self._generation > after, timeout)


class SourceWatcher:
    """The fetch loop of one GitSource: every ``interval_s`` and at once on a trigger.

    It also satisfies the embedded controller's ``DesiredSource`` protocol (``fetch`` returns the
    newest accepted snapshot without touching the network), so the controller's passes never block
    on git.
    """

    def __init__(
        self,
        source: GitSource,
        *,
        trigger: FetchTrigger | None = None,
        interval_s: float | None = None,
        on_revision: Callable[[Snapshot], Any] | None = None,
        on_error_change: Callable[[str], Any] | None = None,
    ) -> None:
        self.source = source
        self.trigger = trigger or FetchTrigger()
        self.interval_s = interval_s if interval_s is not None else source.spec.interval_s
        self.on_revision = on_revision
        #: Called with the new error ("" once fetching works again) whenever the fetch outcome changes,
        #: so a controller can report an outage without waiting for its next pass.
        self.on_error_change = on_error_change
        self._last_error = ""
        self.fetches = 0
        self.latest: Snapshot | None = source.last_good
        self._failed = False
        self._handed_out = ""
        self._changed = _Signal()

    # -- the loop ------------------------------------------------------------------------------

    async def fetch_now(self) -> Snapshot | None:
        """One fetch (in a worker thread). Errors are recorded in the source status, not raised."""
        self.fetches += 1
        try:
            snap = await asyncio.to_thread(self.source.fetch)
        except FetchError as exc:
            self._failed = True
            self._error_is(str(exc))
            return None
        except Exception as exc:  # a bug must not end the loop that keeps the last good revision
            log.exception("%s: fetch crashed", self.source.name)
            self._failed = True
            self._error_is(f"internal error while fetching: {exc}")
            return None
        self._failed = False
        self._error_is("")
        if self.latest is None or snap.revision != self.latest.revision:
            log.info("%s: new revision %s", self.source.name, snap.revision)
            self.latest = snap
            self._changed.fire()
            if self.on_revision is not None:
                self._call(self.on_revision, snap)
        return snap

    def _error_is(self, error: str) -> None:
        if error != self._last_error:
            self._last_error = error
            if self.on_error_change is not None:
                self._call(self.on_error_change, error)

    def _call(self, callback: Callable[[Any], Any], arg: Any) -> None:
        # A failing subscriber must not stop the fetch loop.
        try:
            callback(arg)
        except Exception:
            log.exception("%s: callback %r failed", self.source.name, callback)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch until ``stop`` is set. A request that arrives during a fetch causes one more fetch."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                served = self.trigger.generation
                if not self.source.spec.suspend:
                    await self.fetch_now()
                requested = asyncio.ensure_future(self.trigger.wait(after=served))
                await asyncio.wait(
                    {stopping, requested}, timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                requested.cancel()
        finally:
            stopping.cancel()

    # -- for the reconcile loop ------------------------------------------------------------------

    def superseded(self, revision: str) -> bool:
        """Whether a newer revision than ``revision`` has been fetched."""
        return self.latest is not None and self.latest.revision != revision

    async def wait_newer(self, than: str | None, timeout: float | None = None) -> Snapshot | None:
        """The first snapshot whose revision differs from ``than``, or None after ``timeout``."""

        def newer() -> bool:
            return self.latest is not None and self.latest.revision != than

        if await self._changed.wait(newer, timeout):
            return self.latest
        return None

    def handle_push(self, event: PushEvent) -> bool:
        """Webhook callback: request a fetch unless the push is for a ref this source does not follow."""
        ref = self.source.spec.ref
        if event.ref and ref.kind == "branch" and event.ref.startswith("refs/heads/"):
            if event.ref != f"refs/heads/{ref.name}":
                return False
        elif event.ref and ref.kind == "tag" and event.ref.startswith("refs/heads/"):
            return False
        self.trigger.request(f"webhook {event.event} {event.ref or ''}".strip())
        return True

    # -- DesiredSource ---------------------------------------------------------------------------

    def describe(self) -> str:
        return self.source.describe()

    def fetch(self) -> Snapshot:
        """The newest accepted snapshot. While the last fetch failed this raises :class:`FetchError`
        with the reason, except to hand out once a last-good snapshot that was never handed out (one
        restored from the cache after a restart during an outage)."""
        latest = self.latest
        if latest is not None and (not self._failed or latest.revision != self._handed_out):
            self._handed_out = latest.revision
            return latest
        raise FetchError(self.source.status.last_error or f"{self.describe()} has not been fetched yet")
