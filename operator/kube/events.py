"""Kubernetes Events from the operator, de-duplicated and aggregated so a burst costs few requests.

A pass queues its Events and :meth:`EventRecorder.flush` posts them at the end, in parallel:

* **De-duplication** (client-go's correlator, simplified): an Event identical to one already posted
  (same object uid, reason, type and message) within ``window_s`` is not created again; its
  ``count`` and ``lastTimestamp`` are patched onto the existing Event, at most once per
  ``repeat_every_s`` (repeats in between are counted and written with the next patch).
* **Aggregation of Normal Events across objects**: when one pass would post more than ``burst``
  Normal Events of the same reason in one namespace (500 slices placed at once), the first
  ``burst`` go out one per object and the rest as one Event on the Namespace naming the objects
  ("Placed: 490 more Slice(s) in this pass: slice-10, ..."). Each object's own status
  (its ``Placed`` condition) still says it. Warnings are never aggregated: they are what a user acts on.
  A burst spans several passes (slices keep arriving while a pass writes): once a pass aggregated a
  reason in a namespace, the passes that follow within ``burst_window_s`` of it spend no more
  per-object Events on that reason there; each posts one aggregate (500 slices: 33 -> 14 Events).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("flyslice.operator.events")

#: How many object names an aggregated Event lists (Events hold at most 1 kB of message).
_NAMES_SHOWN = 40


class EventSink(Protocol):
    def post_event(
        self, involved: Mapping[str, Any], reason: str, message: str, type_: str = "Normal"
    ) -> str: ...

    def patch_event(self, namespace: str, name: str, count: int) -> None: ...

    def parallel(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]: ...


@dataclass
class _Posted:
    namespace: str
    name: str
    count: int
    first_at: float
    written_at: float
    written_count: int


Item = tuple[Mapping[str, Any], str, str, str]  # involved object, reason, message, type


class EventRecorder:
    def __init__(
        self,
        sink: EventSink,
        *,
        burst: int = 10,
        window_s: float = 600.0,
        repeat_every_s: float = 60.0,
        burst_window_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.burst = burst
        self.burst_window_s = burst_window_s
        #: (namespace, reason) -> when a flush last aggregated it (a burst in progress).
        self._bursting: dict[tuple[str, str], float] = {}
        self.window_s = window_s
        self.repeat_every_s = repeat_every_s
        self.clock = clock
        self._queue: list[Item] = []
        self._posted: dict[tuple[str, str, str, str], _Posted] = {}
        self._lock = threading.Lock()
        #: Requests saved so far: repeats not written and Events folded into an aggregate.
        self.suppressed = 0

    def add(self, involved: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        self._queue.append((involved, reason, message, type_))

    def flush(self) -> None:
        """Post what :meth:`add` queued (never raises: an Event is informative)."""
        queue, self._queue = self._queue, []
        now = self.clock()
        self._posted = {k: p for k, p in self._posted.items() if now - p.first_at < self.window_s}
        creates: list[Item] = []
        patches: list[_Posted] = []
        seen: set[tuple[str, str, str, str]] = set()
        for item in self._aggregate(queue, now):
            key = _key(item)
            if key in seen:
                self.suppressed += 1
                continue
            seen.add(key)
            old = self._posted.get(key)
            if old is None:
                creates.append(item)
                continue
            old.count += 1
            if now - old.written_at >= self.repeat_every_s:
                patches.append(old)
            else:
                self.suppressed += 1

        def create(item: Item) -> None:
            try:
                name = self.sink.post_event(*item)
            except Exception as exc:
                log.warning("could not post event %s on %s: %s", item[1], _describe(item[0]), exc)
                return
            ns = str((item[0].get("metadata") or {}).get("namespace") or "")
            with self._lock:
                self._posted[_key(item)] = _Posted(ns, name, 1, now, now, 1)

        def patch(p: _Posted) -> None:
            try:
                self.sink.patch_event(p.namespace, p.name, p.count)
                p.written_at, p.written_count = now, p.count
            except Exception as exc:  # e.g. the Event expired (TTL): the next repeat creates one
                log.info("could not update event %s/%s: %s", p.namespace, p.name, exc)
                with self._lock:
                    self._posted = {k: v for k, v in self._posted.items() if v is not p}

        self.sink.parallel(create, creates)
        self.sink.parallel(patch, patches)

    def _aggregate(self, queue: list[Item], now: float) -> list[Item]:
        groups: dict[tuple[str, str], list[Item]] = {}
        for item in queue:
            if item[3] == "Normal":
                ns = str((item[0].get("metadata") or {}).get("namespace") or "")
                groups.setdefault((ns, item[1]), []).append(item)
        out = [i for i in queue if i[3] != "Normal"]
        self._bursting = {k: t for k, t in self._bursting.items() if now - t < self.burst_window_s}
        for (ns, reason), items in groups.items():
            names = list(dict.fromkeys(_describe(i[0]) for i in items))
            # Within a burst that earlier passes aggregated, their per-object budget is spent.
            budget = 0 if (ns, reason) in self._bursting else self.burst
            if len(names) <= budget or not ns:
                out += items
                continue
            self._bursting[(ns, reason)] = now
            shown = [i for i in items if _describe(i[0]) in set(names[:budget])]
            rest = names[budget:]
            kinds = sorted({str(i[0].get("kind", "object")) for i in items})
            listed = ", ".join(n.rpartition("/")[2] for n in rest[:_NAMES_SHOWN])
            more = f" and {len(rest) - _NAMES_SHOWN} more" if len(rest) > _NAMES_SHOWN else ""
            message = f"{reason}: {len(rest)} {'more ' if shown else ''}{'/'.join(kinds)}(s) in this pass: {listed}{more}"
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "namespace": ns}}
            out += [*shown, (namespace, reason, message, "Normal")]
            self.suppressed += len(items) - len(shown) - 1
        return out


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind', '')}/{meta.get('namespace') or ''}/{meta.get('name', '')}"


def _key(item: Item) -> tuple[str, str, str, str]:
    meta = item[0].get("metadata") or {}
    return (str(meta.get("uid") or _describe(item[0])), item[1], item[3], item[2])


__all__ = ["EventRecorder", "EventSink"]
