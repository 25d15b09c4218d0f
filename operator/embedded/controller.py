"""The embedded controller: the reconcile core plus one node runtime per EdgeNode, no cluster.

Each pass: fetch the desired state (pinned to one revision) -> validate (invalid objects are
reported and skipped; an object that turns invalid keeps its last good version) -> reconcile
-> hand every node runtime its NFInstances -> read back what the runtimes observe. Passes never
wait for NFs to become ready, so a newer revision always supersedes the one being deployed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from flyslice.operator.gitops.sources import DesiredSource, FetchError, Snapshot
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import load_paths
from flyslice.operator.intake.validation import ValidationResult, validate
from flyslice.operator.planning.actions import InstanceAction
from flyslice.operator.reconcile import (
    ControllerState,
    InstanceObservation,
    NodeObservation,
    Observation,
    keep_last_good,
    reconcile,
)

log = logging.getLogger("flyslice.embedded")


class NodeRuntime(Protocol):
    """What the controller needs from the agent of one node."""

    node: str

    async def converge(self, actions: Sequence[InstanceAction]) -> None: ...

    def observe(self) -> tuple[NodeObservation, Mapping[tuple[str, str], InstanceObservation]]: ...

    async def stop(self) -> None: ...


@dataclass
class SourceStatus:
    url: str
    last_fetched_revision: str = ""
    last_applied_revision: str = ""
    last_fetched_at: float | None = None
    last_error: str = ""
    errors: list[ManifestError] = field(default_factory=list)


class EmbeddedController:
    def __init__(
        self,
        source: DesiredSource,
        runtime_factory: Callable[[str, Catalog], Any],
        *,
        clock: Callable[[], float] = time.time,
        heartbeat_timeout_s: float = 30.0,
        solve_options: Any = None,
        on_applied: Callable[[str, list[tuple[str, str, str]], list[ManifestError]], None] | None = None,
    ) -> None:
        self.source = source
        self._factory = runtime_factory
        self._clock = clock
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._solve_options = solve_options
        #: Told (revision, objects applied, errors) after each new revision, e.g. to record it in
        #: the GitSource status.
        self._on_applied = on_applied
        self.state = ControllerState()
        self.catalog = Catalog()
        self.runtimes: dict[str, NodeRuntime] = {}
        self.source_status = SourceStatus(source.describe())
        self.slice_status: dict[str, dict[str, Any]] = {}
        self.observation = Observation()
        self.events: list[str] = []
        self.passes = 0
        self.last_pass_at: float | None = None
        self._validated: ValidationResult | None = None
        self._revision = ""
        self._wake = asyncio.Event()

    # -- one pass ------------------------------------------------------------------------

    async def run_once(self) -> None:
        self._refresh_desired_state()
        await self._sync_runtimes()
        observation = self.observation = self._observe()
        outcome = reconcile(
            self.catalog,
            self.state,
            observation,
            now=self._clock(),
            revision=self._revision,
            options=self._solve_options,
            heartbeat_timeout_s=self._heartbeat_timeout_s,
        )
        self.state = outcome.state
        for event in outcome.events:
            log.info(event)
        self.events = (self.events + list(outcome.events))[-100:]
        by_node: dict[str, list[InstanceAction]] = {n: [] for n in self.runtimes}
        for action in outcome.actions:
            by_node.setdefault(action.node, []).append(action)
        for node, actions in by_node.items():
            runtime = self.runtimes.get(node)
            if runtime is not None:
                try:
                    await runtime.converge(actions)
                except Exception as exc:
                    log.error("node %s failed to converge: %s", node, exc)
        self.slice_status = dict(outcome.slice_status)
        self.source_status.last_applied_revision = self._revision
        self.passes += 1
        self.last_pass_at = self._clock()

    def _refresh_desired_state(self) -> None:
        status = self.source_status
        try:
            snap = self.source.fetch()
        except FetchError as exc:
            status.last_error = str(exc)
            if self._revision:
                log.warning("fetch failed, keeping revision %s: %s", self._revision, exc)
            else:  # nothing applied yet: a source still on its first fetch is not a failure to shout about
                log.info("no desired state yet: %s", exc)
            return
        status.last_fetched_revision = snap.revision
        status.last_fetched_at = self._clock()
        status.last_error = ""
        if snap.revision == self._revision:
            return
        self._apply_snapshot(snap)

    def _apply_snapshot(self, snap: Snapshot) -> None:
        manifests, load_errors = load_paths([snap.root])
        result = validate(manifests)
        errors = [*load_errors, *result.errors]
        catalog = keep_last_good(result, self._validated, errors)
        self.catalog = catalog
        self._validated = replace(result, catalog=catalog)
        self._revision = snap.revision
        self.source_status.errors = errors
        if self._on_applied is not None:
            self._on_applied(snap.revision, sorted(result.sources), errors)
        for e in errors:
            (log.info if e.severity == "note" else log.warning)("%s: %s", snap.revision, e)

    async def _sync_runtimes(self) -> None:
        for node in self.catalog.nodes:
            if node not in self.runtimes:
                runtime = self._factory(node, self.catalog)
                if asyncio.iscoroutine(runtime) or isinstance(runtime, asyncio.Future):
                    runtime = await runtime
                self.runtimes[node] = runtime
        for node in [n for n in self.runtimes if n not in self.catalog.nodes]:
            # The EdgeNode is gone from the desired state: its NFs are re-planned elsewhere.
            await self.runtimes.pop(node).stop()

    def _observe(self) -> Observation:
        nodes: dict[str, NodeObservation] = {}
        instances: dict[tuple[str, str], InstanceObservation] = {}
        for node, runtime in self.runtimes.items():
            try:
                n_obs, i_obs = runtime.observe()
            except Exception as exc:
                log.warning("node %s did not report: %s", node, exc)
                continue
            nodes[node] = n_obs
            instances.update(i_obs)
        return Observation(nodes, instances)

    # -- loop ----------------------------------------------------------------------------

    def trigger(self) -> None:
        """Reconcile now (a webhook or a status change)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("reconcile pass failed")
            self._wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            _, pending = await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        for runtime in list(self.runtimes.values()):
            await runtime.stop()
        self.runtimes.clear()

    # -- status --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The document served at /status and printed by ``flyslice status -o json``."""
        now = self._clock()
        src = self.source_status
        slices = []
        for key, st in sorted(self.slice_status.items()):
            ns, _, name = key.partition("/")
            slices.append(
                {
                    "name": name,
                    "namespace": ns,
                    "phase": st["phase"],
                    "revision": st.get("lastAppliedRevision", ""),
                    "networkService": st.get("networkService"),
                    "instances": st.get("placement", []),
                    "predictedLatencyMs": st.get("predictedLatencyMs"),
                    "observedLatencyMs": st.get("observedLatencyMs"),
                    "budgetMs": st["paths"][0]["budgetMs"] if st.get("paths") else None,
                    "expiresAt": st.get("expiresAt"),
                    "reasons": st.get("reasons", []),
                }
            )
        nodes = []
        for name, spec in sorted(self.catalog.nodes.items()):
            # What the last pass observed: the status view must not poll every agent a second time.
            n_obs = self.observation.nodes.get(name)
            beat = n_obs.heartbeat_at if n_obs else None
            nodes.append(
                {
                    "name": name,
                    "tier": spec.tier,
                    "heartbeatAgeS": None if beat is None else round(max(0.0, now - beat), 3),
                    "load": n_obs.load if n_obs else None,
                }
            )
        return {
            "source": {
                "url": src.url,
                "lastFetchedRevision": src.last_fetched_revision,
                "lastAppliedRevision": src.last_applied_revision,
                "lastError": src.last_error,
                "errors": [e.as_dict() for e in src.errors],
            },
            "slices": slices,
            "nodes": nodes,
            "passes": self.passes,
            "events": self.events[-20:],
        }
