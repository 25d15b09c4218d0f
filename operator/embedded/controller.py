"""The embedded controller: the reconcile core plus one node runtime per EdgeNode, no cluster.

Each pass: fetch the desired state (pinned to one revision) -> validate (invalid objects are
reported and skipped; an object that turns invalid, or whose file no longer reads, keeps its last
good version; a revision that would prune most of what runs waits for a confirmation) -> reconcile
-> hand every node runtime its NFInstances -> read back what the runtimes observe. Passes never
wait for NFs to become ready, so a newer revision always supersedes the one being deployed.

Reading a revision runs in a child process with a time budget (past it, the source reports the
revision unreadable and the last good one keeps running) and solving in a worker thread, so the
status API on the same event loop keeps answering. Passes admit new slices incrementally (running
ones held fixed); the global re-optimisation runs in its own thread (:class:`Reoptimizer`), and a pass
applies a finished proposal only if nothing changed since it started. A pass that fails is counted: the status says Stalled at once and
:meth:`EmbeddedController.healthy` turns false after ``unhealthy_after`` failures in a row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from flyslice.operator.embedded.intake_worker import DEFAULT_BUDGET_S, IntakeTimeout, read_in_child
from flyslice.operator.gitops import prune_guard
from flyslice.operator.gitops.sources import DesiredSource, FetchError, Snapshot
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.validation import PackagePolicy, ValidationResult
from flyslice.operator.planning.actions import InstanceAction
from flyslice.operator.planning.reoptimize import OFF, Reoptimizer, ReoptimizeSettings
from flyslice.operator.planning.scale_out import ScaleOutSettings
from flyslice.operator.planning.scale_out import status as scale_out_status
from flyslice.operator.reconcile import (
    ControllerState,
    InstanceObservation,
    NodeObservation,
    Observation,
    carry_last_good,
    mark_stalled,
    reconcile,
    schedule_reoptimization,
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
        unhealthy_after: int = 3,
        intake_budget_s: float = DEFAULT_BUDGET_S,
        package_policy: PackagePolicy | None = None,
        confirm_prune: bool = False,
        max_prune_share: float = prune_guard.DEFAULT_MAX_PRUNE_SHARE,
        reoptimize: ReoptimizeSettings = OFF,
        scale_out: ScaleOutSettings | None = None,
    ) -> None:
        self.source = source
        #: When overloaded shared instances scale out, and the cool-down after (``up --scale-out-*``).
        self.scale_out = scale_out or ScaleOutSettings()
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
        self._root: Path | None = None
        self._revision = ""
        self._wake = asyncio.Event()
        #: /healthz fails after this many failed passes in a row (one may be a blip; three are not).
        self.unhealthy_after = unhealthy_after
        self.consecutive_failures = 0
        self.last_pass_error = ""
        self.last_attempt_at: float | None = None
        self._intake_budget_s = intake_budget_s
        #: Namespaces whose packages must be signed (``up --require-signed-packages``).
        self._package_policy = package_policy
        #: A revision that could not be read within the budget, and what the source says about it.
        self._unreadable = ("", "")
        self.confirm_prune = confirm_prune
        self._max_prune_share = max_prune_share
        self.prune_held = prune_guard.PruneDecision((), ())
        #: node -> what its agent cannot do although it runs (an unreachable MQTT broker): a
        #: condition and a warning in the status, so Ready never hides it.
        self.node_warnings: dict[str, list[str]] = {}
        #: The background global re-optimisation (off unless configured; ``up`` turns it on).
        self.reoptimizer = Reoptimizer(reoptimize, clock=clock)

    # -- one pass ------------------------------------------------------------------------

    async def run_once(self) -> None:
        """One pass; a pass that raises is counted as failed (Stalled) and the exception re-raised."""
        self.last_attempt_at = self._clock()
        try:
            await self._refresh_desired_state()
            await self._pass()
        except Exception as exc:
            self._pass_failed(f"{type(exc).__name__}: {exc}")
            raise
        if self.consecutive_failures:
            self._event(f"reconcile resumed after {self.consecutive_failures} failed pass(es)", logging.INFO)
            self.consecutive_failures = 0
            self.last_pass_error = ""

    def _pass_failed(self, error: str) -> None:
        self.consecutive_failures += 1
        if error != self.last_pass_error:
            self._event(f"reconcile pass failed, keeping what runs: {error}", logging.ERROR)
        self.last_pass_error = error

    def _event(self, message: str, level: int) -> None:
        log.log(level, message)
        self.events = [*self.events, message][-100:]

    def healthy(self) -> bool:
        """For /healthz: a pass has run, and fewer than ``unhealthy_after`` in a row failed."""
        return self.last_attempt_at is not None and self.consecutive_failures < self.unhealthy_after

    async def _pass(self) -> None:
        await self._sync_runtimes()
        observation = self.observation = self._observe()
        self._reoptimization_events()
        proposal = self.reoptimizer.take()
        # The solver may run for its whole time limit: off the loop, so the status API answers.
        outcome = await asyncio.to_thread(
            reconcile,
            self.catalog,
            self.state,
            observation,
            now=self._clock(),
            revision=self._revision,
            options=self._solve_options,
            heartbeat_timeout_s=self._heartbeat_timeout_s,
            proposal=proposal,
            scale_out=self.scale_out,
        )
        self.state = outcome.state
        for event in outcome.events:
            log.info(event)
        self.events = (self.events + list(outcome.events))[-100:]
        # A pass that applied a re-optimisation placed the global answer: no run is wanted after it.
        reoptimized = outcome.reoptimization is not None and outcome.reoptimization.result == "applied"
        self._maybe_reoptimize(outcome.replanned and not reoptimized, observation)
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
        # After the slice status: /status never says "applied" next to the placement it replaced.
        self.reoptimizer.settle(outcome.reoptimization)
        self.source_status.last_applied_revision = self._revision
        self.passes += 1
        self.last_pass_at = self._clock()

    def _maybe_reoptimize(self, replanned: bool, observation: Observation) -> None:
        """Start a background re-optimisation of the state this pass left, when one is due."""
        schedule_reoptimization(
            self.reoptimizer, self.catalog, self.state, observation, now=self._clock,
            options=self._solve_options, heartbeat_timeout_s=self._heartbeat_timeout_s, replanned=replanned,
        )  # fmt: skip

    def _reoptimization_events(self) -> None:
        """The re-optimiser's own verdicts (no improvement, a failed run) join the event list."""
        for message in self.reoptimizer.drain_events():
            self._event(message, logging.INFO)

    async def _refresh_desired_state(self) -> None:
        """Fetch and, for a new revision, read it (in a child process, within the time budget)."""
        status = self.source_status
        try:
            # A directory source reads (and hashes) every file: off the loop.
            snap = await asyncio.to_thread(self.source.fetch)
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
        if self._unreadable[0] == snap.revision:
            status.last_error = self._unreadable[1]
            return  # reported once; a new revision is read again
        try:
            result, load_errors = await read_in_child(snap.root, self._intake_budget_s, self._package_policy)
        except IntakeTimeout as exc:
            # Not a failed pass: what runs is reconciled as before; the source says why it is not new.
            message = f"revision {snap.revision}: {exc}; still serving {self._revision or 'nothing'}"
            self._unreadable = (snap.revision, message)
            status.last_error = message
            self._event(message, logging.WARNING)
            return
        self._apply_snapshot(snap, result, load_errors)

    def _apply_snapshot(
        self, snap: Snapshot, result: ValidationResult, load_errors: list[ManifestError]
    ) -> None:
        errors = [*load_errors, *result.errors]
        carried = carry_last_good(
            result, self._validated, errors, load_errors=load_errors, root=snap.root, previous_root=self._root
        )
        catalog = self._guard_prune(snap, carried.catalog)
        self.catalog = catalog
        self._validated = replace(carried, catalog=catalog)
        self._root = snap.root
        self._revision = snap.revision
        self.source_status.errors = errors
        if self._on_applied is not None:
            self._on_applied(snap.revision, sorted(result.sources), errors)
        for e in errors:
            (log.info if e.severity == "note" else log.warning)("%s: %s", snap.revision, e)

    def _guard_prune(self, snap: Snapshot, catalog: Catalog) -> Catalog:
        """Hold back the removal of slices when it would remove too much of what runs."""
        confirmed = self.confirm_prune or prune_guard.confirmed_by_message(snap.message)
        decision = prune_guard.decide(
            [s.key for s in self.catalog.slices.values()],
            [s.key for s in catalog.slices.values()],
            {key: len(rec.actions) for key, rec in self.state.slices.items()},
            max_share=self._max_prune_share,
            confirmed=confirmed,
        )
        if decision.held and decision.reason != self.prune_held.reason:
            self._event(f"revision {snap.revision}: prune held: {decision.reason}", logging.WARNING)
        for key in sorted(set(decision.removed) - set(decision.held)):
            self._event(f"revision {snap.revision} removes slice {key}: pruning it", logging.INFO)
        self.prune_held = decision
        if not decision.held:
            return catalog
        keep = {k: v for k, v in self.catalog.slices.items() if v.key in decision.held}
        # A held slice still needs the nodes, packages and services it runs on: a revision that
        # deleted every manifest deleted those too, and they are held with it.
        prev = self.catalog
        return replace(
            catalog,
            slices={**catalog.slices, **keep},
            nodes={**prev.nodes, **catalog.nodes},
            packages={**prev.packages, **catalog.packages},
            services={**prev.services, **catalog.services},
        )

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
            self._note_warnings(node, runtime)
            # Restarts, crashes and removals the agents did on their own (they logged them already).
            drain = getattr(runtime, "drain_events", None)
            if drain is not None:
                self.events = (self.events + list(drain()))[-100:]
        return Observation(nodes, instances)

    def _note_warnings(self, node: str, runtime: NodeRuntime) -> None:
        """Record a node's warnings; an event when one appears or clears (not one per pass)."""
        read = getattr(runtime, "warnings", None)
        now = list(read()) if read is not None else []
        before = self.node_warnings.get(node, [])
        # The messages carry a running duration: compare what is wrong, not the wording of how long.
        if [w.split(" (", 1)[0] for w in now] != [w.split(" (", 1)[0] for w in before]:
            for w in now:
                self._event(f"node {node}: {w}", logging.WARNING)
            if before and not now:
                self._event(f"node {node}: cleared: {before[0].split(' (', 1)[0]}", logging.INFO)
        if now:
            self.node_warnings[node] = now
        else:
            self.node_warnings.pop(node, None)

    def _slice_warnings(self, namespace: str, name: str) -> list[str]:
        spec = self.catalog.slices.get((namespace, name))
        attachments = spec.attachments if spec is not None else ()
        return [f"{n}: {w}" for n in attachments for w in self.node_warnings.get(n, [])]

    def conditions(self) -> list[dict[str, str]]:
        """Controller-wide conditions (kstatus style); ``IngressReady`` only when an agent has ingress."""
        if not self.node_warnings:
            return []
        message = "; ".join(f"{n}: {w[0]}" for n, w in sorted(self.node_warnings.items()))
        return [
            {"type": "IngressReady", "status": "False", "reason": "BrokerUnreachable", "message": message}
        ]

    # -- loop ----------------------------------------------------------------------------

    def trigger(self) -> None:
        """Reconcile now (a webhook or a status change)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                # run_once reported it (status, event, log line); the traceback once is enough.
                if self.consecutive_failures == 1:
                    log.exception("reconcile pass failed")
            self._wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            _, pending = await asyncio.wait(waiters, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        # A background solve cannot be interrupted; give it a moment, then leave it to the daemon thread.
        await asyncio.to_thread(self.reoptimizer.wait, 5.0)
        for runtime in list(self.runtimes.values()):
            await runtime.stop()
        self.runtimes.clear()

    # -- status --------------------------------------------------------------------------

    def _with_counters(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A placement entry with its instance's counters as its node's agent last reported them."""
        counters = getattr(self.runtimes.get(entry["node"]), "counters", {}).get(entry["instance"])
        return entry if counters is None else {**entry, "counters": counters}

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
                    "instances": [self._with_counters(i) for i in st.get("placement", [])],
                    "predictedLatencyMs": st.get("predictedLatencyMs"),
                    "observedLatencyMs": st.get("observedLatencyMs"),
                    "budgetMs": st["paths"][0]["budgetMs"] if st.get("paths") else None,
                    "expiresAt": st.get("expiresAt"),
                    "reasons": st.get("reasons", []),
                    "guarantee": st.get("placementGuarantee"),
                    # Its devices attach where the agent cannot receive them: Ready, but not the whole truth.
                    "warnings": self._slice_warnings(ns, name),
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
                    # What the agent runs as one instance for several slices (docs/sharing.md).
                    "sharedInstances": dict(getattr(self.runtimes.get(name), "shared_instances", {})),
                }
            )
        if self.consecutive_failures:
            stale = [mark_stalled(st, self.last_pass_error) for st in slices]
            slices = [
                {**s, "phase": m["phase"], "reasons": m["reasons"], "stalled": True}
                for s, m in zip(slices, stale, strict=True)
            ]
        return {
            "controller": {
                "healthy": self.healthy(),
                "stalled": bool(self.consecutive_failures),
                "consecutiveFailedPasses": self.consecutive_failures,
                "lastPassError": self.last_pass_error,
                "conditions": self.conditions(),
                "reoptimization": self.reoptimizer.status(),
                "scaleOut": scale_out_status(self.state.scale_out, self.scale_out, now),
            },
            "warnings": [f"node {n}: {w}" for n, ws in sorted(self.node_warnings.items()) for w in ws],
            "source": {
                "url": src.url,
                "lastFetchedRevision": src.last_fetched_revision,
                "lastAppliedRevision": src.last_applied_revision,
                "lastError": src.last_error,
                "errors": [e.as_dict() for e in src.errors],
                "pruneHeld": {"slices": list(self.prune_held.held), "reason": self.prune_held.reason}
                if self.prune_held.held
                else None,
            },
            "slices": slices,
            "nodes": nodes,
            "passes": self.passes,
            "events": self.events[-20:],
        }
