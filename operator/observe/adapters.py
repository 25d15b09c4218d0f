"""Wire metrics and the console to the two runtimes, each a one-line hook in its start-up code.

Duck-typed on purpose: ``embedded`` and ``kube`` sit above this package and import it, never the
other way round (tests/test_layout.py).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flyslice.operator.observe.console import console_document, topology
from flyslice.operator.observe.metrics import Metrics, SourceFacts, statuses_from_state
from flyslice.operator.observe.web import ObserveRoutes

log = logging.getLogger("flyslice.operator.observe")
R = TypeVar("R")


def for_embedded(controller: Any, watcher: Any = None) -> ObserveRoutes:
    """Metrics and console for ``flyslice up``; instruments ``controller.run_once`` in place.

    ``controller`` is an ``EmbeddedController``; ``watcher`` the git ``SourceWatcher`` (None for a
    directory, whose read errors are then counted as fetch errors from the controller's status).
    """

    def source() -> SourceFacts:
        st = controller.source_status
        if watcher is not None:
            git = watcher.source.status
            return SourceFacts(st.url, st.last_applied_revision, git.last_error, git.last_error_at)
        return SourceFacts(st.url, st.last_applied_revision, st.last_error, st.last_fetched_at)

    metrics = Metrics(
        "flyslice-embedded",
        lambda: controller.slice_status,
        solve_state=lambda: controller.state,
        sources=lambda: [source()],
    )
    controller.run_once = metrics.instrument(controller.run_once)

    def state() -> dict[str, Any]:
        actions = [a for rec in controller.state.slices.values() for a in rec.actions]
        doc = controller.snapshot()
        # The status document keeps only the worst path; the console shows each path and the conditions.
        for s in doc["slices"]:
            full = controller.slice_status.get(f"{s['namespace']}/{s['name']}", {})
            s["paths"] = full.get("paths", [])
            s["conditions"] = full.get("conditions", [])
        return console_document(doc, topology(controller.catalog, actions))

    return ObserveRoutes(metrics, state)


def for_operator(loop: Any, snapshot: Any) -> ObserveRoutes:
    """Metrics and console for ``flyslice operator``; instruments ``loop.run_once`` (a ``ReconcileLoop``).

    Phases and placement come from the operator's memory. Each instance's state and restarts are in
    its NFInstance's status and fetch failures in each GitSource's status, written by the agents and
    the GitSource sync: after every pass the operator lists both (two more list calls per pass, in
    the pass's worker thread), so a scrape never calls the API server.
    """
    cluster = _ClusterFacts(loop)

    def statuses() -> dict[str, dict[str, Any]]:
        return statuses_from_state(loop.state, loop.report.slices, cluster.instances)

    def leader() -> tuple[str, bool]:
        snap = snapshot()
        return str(snap.get("identity", "")), bool(snap.get("leader"))

    metrics = Metrics(
        "flyslice-operator", statuses, solve_state=lambda: loop.state, sources=lambda: cluster.sources,
        leader=leader,
    )  # fmt: skip
    loop.run_once = metrics.instrument_sync(cluster.after(loop.run_once))

    def state() -> dict[str, Any]:
        doc = dict(snapshot())
        doc["slices"] = [
            {
                "namespace": key.partition("/")[0],
                "name": key.partition("/")[2],
                "phase": st["phase"],
                "instances": st["placement"],
                "predictedLatencyMs": max((p["predictedLatencyMs"] for p in st["paths"]), default=None),
                "budgetMs": st["paths"][0]["budgetMs"] if st["paths"] else None,
                "reasons": [],
            }
            for key, st in sorted(statuses().items())
        ]
        doc.setdefault("nodes", [])
        # The nodes by tier come from the last validated desired state (EdgeNodes), as in `up`; without
        # it the page had no node to draw a slice's instances on (seen on the real cluster).
        catalog = loop.catalog
        if catalog is None:
            return console_document(doc, None)
        state = loop.state
        actions = [a for rec in state.slices.values() for a in rec.actions] if state is not None else []
        return console_document(doc, topology(catalog, actions))

    return ObserveRoutes(metrics, state)


class _ClusterFacts:
    """What the agents and the GitSource sync wrote into the cluster, as of the end of the last pass."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        #: (namespace, name) -> NFInstance status.
        self.instances: dict[tuple[str, str], dict[str, Any]] = {}
        self.sources: list[SourceFacts] = []

    def after(self, pass_: Callable[[], R]) -> Callable[[], R]:
        @functools.wraps(pass_)
        def run() -> R:
            try:
                return pass_()
            finally:
                self.refresh()

        return run

    def _list(self, kind: str) -> list[dict[str, Any]]:
        client, namespaces = self._loop.client, tuple(self._loop.namespaces)
        if not namespaces:
            return list(client.list_kind(kind))
        return [o for ns in namespaces for o in client.list_kind(kind, namespace=ns)]

    def refresh(self) -> None:
        # Metrics are informative: a failed list keeps the last readings and never fails the pass.
        try:
            self.instances = {
                (o["metadata"]["namespace"], o["metadata"]["name"]): dict(o.get("status") or {})
                for o in self._list("NFInstance")
            }
        except Exception as exc:
            log.warning("metrics: cannot list NFInstances: %s", exc)
        try:
            self.sources = [_source_facts(o) for o in self._list("GitSource")]
        except Exception as exc:
            log.warning("metrics: cannot list GitSources: %s", exc)


def _source_facts(obj: dict[str, Any]) -> SourceFacts:
    meta, st = obj["metadata"], obj.get("status") or {}
    ready: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
    return SourceFacts(
        f"{meta['namespace']}/{meta['name']}",
        str(st.get("lastAppliedRevision") or ""),
        str(ready.get("message") or "") if ready.get("status") == "False" else "",
        fetch_failures=int(st.get("fetchFailures") or 0),
    )
