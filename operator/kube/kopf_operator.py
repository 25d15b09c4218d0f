"""``flyslice operator``: the cluster form of the control plane, on kopf.

kopf watches Slice, NetworkService, NFPackage, EdgeNode, NFInstance and GitSource objects; every
change only *triggers* a debounced, global reconcile pass, because the ILP places all slices
together. A pass is the embedded controller's, with the API server as source and sink:

    list the desired objects -> validate (like git YAML) -> reconcile (the shared core)
    -> create / patch / delete NFInstances (owned by their Slice) -> Slice status + Events

A pass reads the desired objects and NFInstances from a watch-fed cache (:mod:`.cache`), not the API;
the cache's watches are what trigger passes (kopf itself handles GitSources only).

Every Slice carries the finalizer ``flyslice.io/teardown`` (added by a pass): a deleted Slice leaves
the plan, so the pass deletes its NFInstances, and releases the finalizer once none is left. The
agents then stop the NFs and delete the VNF pods.
Only the holder of the leader Lease runs any of this (:mod:`.leader`); a standby replica waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kopf

from flyslice import solver
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.validation import PackagePolicy, ValidationResult, validate
from flyslice.operator.kube.cache import WatchCache
from flyslice.operator.kube.cluster import (
    API_VERSION,
    DESIRED_KINDS,
    MANAGED_BY,
    OPERATOR,
    PLURALS,
    ClusterClient,
    derive_state,
    event_for,
    manifests_from_objects,
    merge_conditions,
    node_ingress,
    object_ref,
    observe,
    slice_ingress_conditions,
    status_changed,
)
from flyslice.operator.kube.events import EventRecorder
from flyslice.operator.planning.reoptimize import OFF, Reoptimizer, ReoptimizeSettings
from flyslice.operator.planning.scale_out import ScaleOutSettings, ScaleOutState
from flyslice.operator.planning.scale_out import status as scale_out_status
from flyslice.operator.reconcile import (
    HEARTBEAT_TIMEOUT_S,
    ControllerState,
    Observation,
    carry_last_good,
    mark_stalled,
    reconcile,
    schedule_reoptimization,
    unavailable_nodes,
)

log = logging.getLogger("flyslice.operator")

FINALIZER = "flyslice.io/teardown"
LEASE_NAME = "flyslice-operator"


@dataclass
class OperatorOptions:
    kubeconfig: str | None = None
    #: Namespaces to watch; empty = the whole cluster.
    namespaces: Sequence[str] = ()
    lease_namespace: str = "flyslice-system"
    lease_name: str = LEASE_NAME
    identity: str | None = None
    #: The probe port (``/healthz``, ``/readyz`` only); ``flyslice operator`` defaults it to the pod IP.
    liveness: str | None = "127.0.0.1:8080"
    #: Status, ``/metrics`` and the console: off unless configured (they describe the whole cluster).
    status_addr: str | None = None
    #: Quiet time after a change before a pass starts, so a burst of changes makes one pass.
    debounce_s: float = 0.5
    #: A pass also runs this often with no change (stale heartbeats, expiring lifetimes).
    resync_s: float = 10.0
    #: The watch cache lists every kind again this often (repairs anything a watch missed).
    cache_resync_s: float = 300.0
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S
    lease_duration_s: float = 15.0
    renew_s: float = 5.0
    retry_s: float = 2.0
    git_cache: Path = Path("/tmp/flyslice-gitsources")
    solve_options: solver.SolveOptions | None = None
    #: Namespaces whose NFPackages must carry a module signature (``*``: all), as ``up`` has it.
    signed_namespaces: frozenset[str] = frozenset()
    #: The background re-optimisation (``--reoptimize-*``, ``--migration-budget``); on by default.
    reoptimize: ReoptimizeSettings = field(default_factory=ReoptimizeSettings)
    #: Scale-out of overloaded shared instances (``--scale-out-*``).
    scale_out: ScaleOutSettings = field(default_factory=ScaleOutSettings)


@dataclass
class PassReport:
    passes: int = 0
    last_pass_at: float | None = None
    last_pass_s: float = 0.0
    last_error: str = ""
    #: Failed passes in a row; /healthz fails from ``ReconcileLoop.unhealthy_after`` on.
    consecutive_failures: int = 0
    created: int = 0
    updated: int = 0
    deleted: int = 0
    slices: dict[str, str] = field(default_factory=dict)  # key -> phase


class ReconcileLoop:
    """The global reconcile pass and its debounced trigger. ``run_once`` is blocking (API calls and
    the solver); :meth:`run` runs it in a worker thread so kopf's event loop stays responsive."""

    def __init__(
        self,
        client: ClusterClient,
        *,
        namespaces: Sequence[str] = (),
        debounce_s: float = 0.5,
        resync_s: float = 10.0,
        heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
        solve_options: solver.SolveOptions | None = None,
        clock: Callable[[], float] = time.time,
        unhealthy_after: int = 3,
        package_policy: PackagePolicy | None = None,
        cache: WatchCache | None = None,
        reoptimize: ReoptimizeSettings = OFF,
        scale_out: ScaleOutSettings | None = None,
    ) -> None:
        self.client = client
        #: When an overloaded shared instance scales out (its tenants' status.counters.sharedOverloaded).
        self.scale_out = scale_out or ScaleOutSettings()
        #: Where a pass reads the cluster; None: list every kind from the API each pass.
        self.cache = cache
        self.package_policy = package_policy or PackagePolicy()
        self.unhealthy_after = unhealthy_after
        self.namespaces = tuple(namespaces)
        self.debounce_s = debounce_s
        self.resync_s = resync_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.solve_options = solve_options
        self._clock = clock
        #: The background global re-optimisation; a pass applies its proposal only if nothing changed.
        self.reoptimizer = Reoptimizer(reoptimize, clock=clock)
        #: A pass admitted or re-placed slices since the re-optimiser was last offered a run.
        self._reoptimize_wanted = False
        #: Nodes the last pass found without a recent heartbeat (confirmed by a fresh read).
        self._confirmed_down: set[str] = set()
        #: None until the first pass rebuilds it from the cluster (operator restart).
        self.state: ControllerState | None = None
        self._validated: ValidationResult | None = None
        self._reported_errors: dict[str, tuple[str, ...]] = {}
        self.report = PassReport()
        #: Held by a pass and by a Slice's teardown, so a pass never re-creates what a teardown deletes.
        self.lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._aio: asyncio.AbstractEventLoop | None = None
        self.events = EventRecorder(client)
        #: EdgeNode -> "" or why its agent cannot reach its MQTT broker (IngressReady), this pass.
        self._ingress: dict[str, str] = {}

    # -- trigger ----------------------------------------------------------------------------

    def trigger(self) -> None:
        """Ask for a pass; from any thread (the cache's watches run in their own)."""
        wake, aio = self._wake, self._aio
        if wake is None or aio is None:
            return
        try:
            if asyncio.get_running_loop() is aio:
                wake.set()
                return
        except RuntimeError:  # not in an event loop: a watch or pass thread
            pass
        with contextlib.suppress(RuntimeError):  # the loop has closed
            aio.call_soon_threadsafe(wake.set)

    def pass_pending(self) -> bool:
        """Whether a change arrived since the running pass started (another pass will follow)."""
        return self._wake is not None and self._wake.is_set()

    async def run(self, stop: asyncio.Event) -> None:
        self._aio = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._wake.set()  # a first pass at once: adopt what runs, place what is new
        while not stop.is_set():
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            _, pending = await asyncio.wait(
                waiters, timeout=self.resync_s, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if stop.is_set():
                break
            await asyncio.sleep(self.debounce_s)
            # Cleared before the pass: whatever changes while it runs wakes exactly one more pass.
            self._wake.clear()
            try:
                await asyncio.to_thread(self.run_once)
                self.report.consecutive_failures = 0
            except Exception as exc:  # a failed pass is retried on the next trigger or resync
                error = _pass_error(exc)
                self.report.last_error = error
                self.report.consecutive_failures += 1
                log.exception("reconcile pass failed")
                await asyncio.to_thread(self.mark_stalled, error)

    # -- one pass ---------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        with self.lock:
            return self._run_once()

    def _read(self) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
        """(desired kind -> objects, the operator's NFInstances): from the cache when there is one
        (one consistent snapshot, no request), else listed from the API."""
        if self.cache is None:
            objects = {kind: self._list(kind) for kind in DESIRED_KINDS}
            return objects, self._list("NFInstance", f"{MANAGED_BY}={OPERATOR}")
        if not self.cache.wait_synced(60.0):
            raise self.cache.failure() or RuntimeError("the watch cache has not listed every kind yet")
        if (failure := self.cache.failure()) is not None:
            raise failure  # e.g. 403: the cache can no longer be refreshed; act on no stale view
        snapshot = self.cache.snapshot()
        return {kind: snapshot[kind] for kind in DESIRED_KINDS}, snapshot["NFInstance"]

    def _list(self, kind: str, label_selector: str = "") -> list[dict[str, Any]]:
        if not self.namespaces or kind == "EdgeNode":
            return self.client.list_kind(kind, label_selector=label_selector)
        return [
            o
            for ns in self.namespaces
            for o in self.client.list_kind(kind, label_selector=label_selector, namespace=ns)
        ]

    @property
    def catalog(self) -> Catalog | None:
        """The desired state of the last pass (the last good one where objects failed validation)."""
        return self._validated.catalog if self._validated is not None else None

    def _run_once(self) -> PassReport:
        started = time.monotonic()
        objects, instances = self._read()
        result = validate(
            manifests_from_objects(o for kind in DESIRED_KINDS for o in objects[kind]),
            policy=self.package_policy,
        )
        self._validated = carry_last_good(result, self._validated, result.errors)
        catalog = self._validated.catalog
        if self.state is None:
            self.state = derive_state(catalog, instances, objects["Slice"])
            log.info(
                "adopted %d slice(s) with %d NFInstance(s) from the cluster",
                len(self.state.slices),
                len(instances),
            )
        observation = observe(objects["EdgeNode"], instances)
        down = unavailable_nodes(catalog, observation, self._clock(), self.heartbeat_timeout_s)
        if self.cache is not None and down - self._confirmed_down:
            # Moving a node's NFs away is disruptive, and a watch can lag behind the heartbeats on a
            # loaded API server: confirm a newly missed heartbeat with a fresh read (one request, only
            # then; a node already confirmed down costs nothing in later passes).
            objects["EdgeNode"] = self._list("EdgeNode")
            observation = observe(objects["EdgeNode"], instances)
            down = unavailable_nodes(catalog, observation, self._clock(), self.heartbeat_timeout_s)
        self._confirmed_down = down
        read_s = time.monotonic() - started
        for message in self.reoptimizer.drain_events():  # its verdicts without a proposal
            log.info(message)
        outcome = reconcile(
            catalog,
            self.state,
            observation,
            now=self._clock(),
            options=self.solve_options,
            heartbeat_timeout_s=self.heartbeat_timeout_s,
            proposal=self.reoptimizer.take(),
            scale_out=self.scale_out,
        )
        self.state = outcome.state
        self.reoptimizer.settle(outcome.reoptimization)
        reoptimized = outcome.reoptimization is not None and outcome.reoptimization.result == "applied"
        # Recorded now, started after the writes (below): a pass that fails midway keeps the request.
        self._reoptimize_wanted |= outcome.replanned and not reoptimized
        plan_s = time.monotonic() - started - read_s
        by_ref = {object_ref(o): o for kind in DESIRED_KINDS for o in objects[kind]}
        owners = {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o["metadata"]["uid"]
            for o in objects["Slice"]
            if not o["metadata"].get("deletionTimestamp")
        }
        applied = self.client.apply_instances(outcome.actions, instances, owners)
        apply_s = time.monotonic() - started - read_s - plan_s
        for ref, why in applied.failed.items():
            log.warning("NFInstance %s: %s", ref, why)
        self._post_decisions(outcome.events, by_ref)
        self._post_invalid(result.errors, by_ref)
        self._ingress = node_ingress(objects["EdgeNode"])
        # Before the status writes: the finalizer patch is conditional on the version this pass read.
        self._finalizers(objects["Slice"])
        phases = self._write_slice_status(
            objects["Slice"], outcome.slice_status, result.errors, applied.failed
        )
        self._flush_events()
        # The background re-optimisation solves the whole catalog again: started while a burst of new
        # slices is still being written, it competed with the writes for the CPU (a third of the
        # operator's in the 500-slice benchmark) and its proposal was stale before it finished. So it
        # waits while this pass wrote NFInstances and another pass is already due; a pass that writes
        # nothing (heartbeats, resyncs) never defers it, so steady churn cannot starve it.
        wrote = bool(applied.created or applied.updated or applied.deleted)
        if not (wrote and self.pass_pending()):
            self._maybe_reoptimize(catalog, self._reoptimize_wanted, observation)
            self._reoptimize_wanted = False
        r = self.report
        r.passes += 1
        r.last_pass_at = self._clock()
        r.last_pass_s = time.monotonic() - started
        r.last_error = ""
        r.created += len(applied.created)
        r.updated += len(applied.updated)
        r.deleted += len(applied.deleted)
        r.slices = phases
        if applied.created or applied.updated or applied.deleted or outcome.replanned:
            log.info(
                "pass %d: %s; NFInstances +%d ~%d -%d (%.2fs: read %.2f, plan %.2f, apply %.2f, status %.2f)",
                r.passes, "re-planned" if outcome.replanned else "no re-plan",
                len(applied.created), len(applied.updated), len(applied.deleted), r.last_pass_s,
                read_s, plan_s, apply_s, r.last_pass_s - read_s - plan_s - apply_s,
            )  # fmt: skip
        return r

    def _write_slice_status(
        self,
        slices: Sequence[Mapping[str, Any]],
        statuses: Mapping[str, Mapping[str, Any]],
        errors: Sequence[ManifestError],
        failed: Mapping[str, str],
    ) -> dict[str, str]:
        now = self._clock()
        phases = {}
        writes: list[tuple[Mapping[str, Any], Mapping[str, Any], dict[str, Any], list[str]]] = []
        for obj in slices:
            meta = obj["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            key = f"{meta['namespace']}/{meta['name']}"
            generation = int(meta.get("generation") or 0)
            wanted = dict(statuses.get(key) or _invalid_status(key, errors, generation))
            apply_failures = [f"NFInstance {ref} could not be written: {why}" for ref, why in sorted(failed.items())
                              if ref.startswith(f"{meta['namespace']}/") and _is_of_slice(ref, meta["name"], wanted)]  # fmt: skip
            if apply_failures:
                wanted["reasons"] = [*wanted.get("reasons", []), *apply_failures]
            current = obj.get("status") or {}
            conditions = [*wanted.get("conditions", []), *slice_ingress_conditions(obj, self._ingress)]
            wanted["conditions"] = merge_conditions(
                conditions, current.get("conditions", []), now, generation
            )
            phases[key] = str(wanted.get("phase", ""))
            if status_changed(current, wanted):
                writes.append((obj, current, wanted, apply_failures))

        def write(item: tuple[Mapping[str, Any], Mapping[str, Any], dict[str, Any], list[str]]) -> bool:
            meta = item[0]["metadata"]
            try:
                self.client.patch_status("Slice", meta["namespace"], meta["name"], item[2])
                return True
            except Exception as exc:
                log.warning("status of Slice %s/%s: %s", meta["namespace"], meta["name"], exc)
                return False

        for item, ok in zip(writes, self.client.parallel(write, writes), strict=True):
            if ok:
                self._post_transition(*item)
        return phases

    def _post_transition(
        self,
        obj: Mapping[str, Any],
        current: Mapping[str, Any],
        wanted: Mapping[str, Any],
        failures: Sequence[str],
    ) -> None:
        """Events for what went wrong or right since the last status: Ready, Degraded, ApplyFailed."""
        phase, before = wanted.get("phase"), current.get("phase")
        detail = "; ".join(wanted.get("reasons", []))
        if phase != before and phase == "Ready":
            self._event(obj, "Ready", "every NF instance is running", "Normal")
        elif phase != before and phase == "Degraded":
            self._event(obj, "Degraded", detail or "degraded", "Warning")
        if failures and failures != [r for r in current.get("reasons", []) if r.startswith("NFInstance ")]:
            self._event(obj, "ApplyFailed", "; ".join(failures), "Warning")
        # IngressReady (an attached node's agent cannot reach its MQTT broker): once when it turns
        # False or its reason changes, once when it clears.
        was, now = ({c.get("type"): (c.get("status"), c.get("message")) for c in st.get("conditions", [])}
                    .get("IngressReady") for st in (current, wanted))  # fmt: skip
        if now is not None and now[0] == "False" and now != was:
            self._event(obj, "IngressNotReady", str(now[1]), "Warning")
        elif now is not None and now[0] == "True" and was is not None and was[0] == "False":
            self._event(obj, "IngressReady", "the MQTT broker is reachable again", "Normal")

    def _post_decisions(
        self, events: Sequence[str], by_ref: Mapping[tuple[str, str, str], Mapping[str, Any]]
    ) -> None:
        for message in events:
            log.info(message)
            spec = event_for(message)
            if spec is None:
                continue
            involved = by_ref.get((spec.kind, spec.namespace, spec.name))
            if involved is None:
                continue
            self._event(involved, spec.reason, spec.message, spec.type)

    def _post_invalid(
        self, errors: Sequence[ManifestError], by_ref: Mapping[tuple[str, str, str], Mapping[str, Any]]
    ) -> None:
        """One Warning Event per object whose validation errors changed since the last pass."""
        now: dict[str, tuple[str, ...]] = {}
        for e in errors:
            if e.severity == "error" and e.object:
                now.setdefault(e.object, ())
                now[e.object] += (f"{e.path}: {e.message}" if e.path else e.message,)
        for ref, messages in now.items():
            if self._reported_errors.get(ref) == messages:
                continue
            kind, _, rest = ref.partition("/")
            ns, _, name = rest.rpartition("/")
            involved = by_ref.get((kind, ns, name))
            if involved is not None:
                self._event(involved, "Invalid", "; ".join(messages), "Warning")
        self._reported_errors = now

    def _event(self, involved: Mapping[str, Any], reason: str, message: str, type_: str) -> None:
        """Queue an Event; they are posted together at the end of the pass."""
        self.events.add(involved, reason, message, type_)

    def _flush_events(self) -> None:
        self.events.flush()  # de-duplicated and aggregated (see .events); never raises

    def _finalizers(self, slices: Sequence[Mapping[str, Any]]) -> None:
        """The teardown finalizer on every live Slice; released from a deleted one once none of its
        NFInstances is left (this pass deleted them: a deleted Slice is no longer in the plan)."""
        adding = [o for o in slices if not o["metadata"].get("deletionTimestamp")
                  and FINALIZER not in (o["metadata"].get("finalizers") or [])]  # fmt: skip
        leaving = [o for o in slices if o["metadata"].get("deletionTimestamp")
                   and FINALIZER in (o["metadata"].get("finalizers") or [])]  # fmt: skip

        def add(obj: Mapping[str, Any]) -> None:
            finalizers = [*(obj["metadata"].get("finalizers") or []), FINALIZER]
            try:
                self.client.set_finalizers("Slice", obj, finalizers)
            except Exception as exc:  # a newer version was written meanwhile: its watch event
                log.info("finalizer of Slice %s: %s", object_ref(obj)[2], _pass_error(exc))  # retriggers

        def release(obj: Mapping[str, Any]) -> None:
            meta = obj["metadata"]
            try:
                # The API, not the cache, says whether the teardown is complete.
                remaining = self.client.slice_instances(meta["namespace"], meta["name"])
                for inst in remaining:
                    if not inst["metadata"].get("deletionTimestamp"):
                        self.client.delete_instance(meta["namespace"], inst["metadata"]["name"])
                if not remaining:
                    rest = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
                    self.client.set_finalizers("Slice", obj, rest)
                    return
            except Exception as exc:
                log.info("teardown of Slice %s/%s: %s", meta["namespace"], meta["name"], _pass_error(exc))
            # Not yet: the NFInstances' deletion events (or the periodic pass) bring the next look.

        self.client.parallel(add, adding)
        self.client.parallel(release, leaving)

    def mark_stalled(self, error: str) -> None:
        """After a failed pass: every Slice says Stalled (Ready=False) with the error, best effort
        (the API server may be what failed). What runs is left alone."""
        try:
            slices = self.cache.snapshot()["Slice"] if self.cache is not None else self._list("Slice")
        except Exception as exc:
            log.warning("cannot mark slices stalled: %s", exc)
            return
        for obj in slices:
            meta, current = obj["metadata"], obj.get("status") or {}
            stalled = mark_stalled(current, error)
            stalled.pop("stalled", None)  # not a field of the Slice status schema
            if status_changed(current, stalled):
                try:
                    self.client.patch_status("Slice", meta["namespace"], meta["name"], stalled)
                    # On the transition only (the status changed), not once per failed pass.
                    self.client.post_event(
                        {**obj, "kind": "Slice"},
                        "Stalled",
                        f"reconcile pass failed, keeping what runs: {error}",
                        "Warning",
                    )
                except Exception as exc:
                    log.warning("status of Slice %s/%s: %s", meta["namespace"], meta["name"], exc)

    def _maybe_reoptimize(self, catalog: Any, replanned: bool, observation: Observation) -> None:
        """Start a background re-optimisation of the state this pass left, when one is due."""
        if self.state is not None:
            schedule_reoptimization(
                self.reoptimizer, catalog, self.state, observation, now=self._clock,
                options=self.solve_options, heartbeat_timeout_s=self.heartbeat_timeout_s, replanned=replanned,
            )  # fmt: skip

    # -- health -----------------------------------------------------------------------------

    def healthy(self, stale_after_s: float) -> bool:
        if self.report.consecutive_failures >= self.unhealthy_after:
            return False
        last = self.report.last_pass_at
        return last is None or self._clock() - last < stale_after_s


def _is_of_slice(ref: str, slice_name: str, status: Mapping[str, Any]) -> bool:
    name = ref.partition("/")[2]
    return any(p.get("instance") == name for p in status.get("placement", [])) or name.startswith(
        f"{slice_name}-"
    )


def _invalid_status(key: str, errors: Sequence[ManifestError], generation: int) -> dict[str, Any]:
    """Status of a Slice the reconcile could not consider: why, in the validator's words."""
    ns, _, name = key.partition("/")
    reasons = [
        f"{e.path}: {e.message}" if e.path else e.message
        for e in errors
        if e.severity == "error" and e.object in (f"Slice/{ns}/{name}", f"Slice/{name}")
    ] or ["not yet considered by the controller"]
    detail = "; ".join(reasons)
    return {
        "phase": "Pending",
        "reasons": reasons,
        "observedGeneration": generation,
        "placement": [],
        "nodeCount": 0,
        "conditions": [
            {"type": "Placed", "status": "False", "reason": "Invalid", "message": detail},
            {"type": "Ready", "status": "False", "reason": "Invalid", "message": detail},
            {"type": "Degraded", "status": "False", "reason": "Invalid", "message": ""},
        ],
    }


# -- kopf wiring ------------------------------------------------------------------------------


WATCHED = ("slices", "networkservices", "nfpackages", "edgenodes", "nfinstances")


def _pass_error(exc: Exception) -> str:
    """A failed pass in one stable line: for the API server's refusals its own message, since the
    exception's text carries per-request headers (Audit-Id, Date) that would make every failed pass
    look like a new error (a status patch and an Event each time)."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        return f"{type(exc).__name__}: {exc.status} {_api_message(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)


def build_registry(loop: ReconcileLoop, gitsources: Any = None) -> kopf.OperatorRegistry:
    """kopf handlers: GitSources. The reconciled kinds reach the loop through its watch cache; a loop
    without one (tests of the pass alone) is triggered by kopf watches of those kinds instead."""
    registry = kopf.OperatorRegistry()

    if loop.cache is None:
        for plural in WATCHED:

            @kopf.on.event("flyslice.io", "v1alpha1", plural, registry=registry)
            async def changed(**_: Any) -> None:
                loop.trigger()

    if gitsources is not None:

        @kopf.on.event("flyslice.io", "v1alpha1", "gitsources", registry=registry)
        async def gitsource_changed(type: str | None, body: Any, **_: Any) -> None:
            gitsources.observe(type, dict(body))

        @kopf.on.delete("flyslice.io", "v1alpha1", "gitsources", registry=registry)
        async def gitsource_deleted(body: Any, **_: Any) -> None:
            # The finalizer kopf adds for this handler makes the cleanup survive an operator restart.
            gitsources.observe("DELETED", dict(body))
            await asyncio.to_thread(gitsources.prune_all, dict(body))
            loop.trigger()

    return registry


def kopf_settings(settings: kopf.OperatorSettings | None = None) -> kopf.OperatorSettings:
    s = settings or kopf.OperatorSettings()
    s.persistence.finalizer = FINALIZER
    # Slice status has a strict schema: keep kopf's own bookkeeping in annotations.
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.flyslice.io")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kopf.flyslice.io")
    s.posting.level = logging.WARNING
    s.watching.server_timeout = 60
    s.watching.client_timeout = 90
    return s


def kopf_login(kubeconfig: str | None) -> Callable[..., kopf.ConnectionInfo]:
    """A kopf login handler for exactly this kubeconfig (not whatever the environment points at)."""

    def login(**_: Any) -> kopf.ConnectionInfo:
        from flyslice.operator.kube.cluster import api_client_for

        cfg = api_client_for(kubeconfig).configuration
        # The kubernetes client keeps the token under 'BearerToken' (newer) or 'authorization' (older).
        token = cfg.get_api_key_with_prefix("BearerToken", alias="authorization") or ""
        token = token.split(" ", 1)[1] if token.lower().startswith("bearer ") else token
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            token=token or None,
            scheme="Bearer" if token else None,
        )

    return login


_NAMESPACE_OK = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def leadership(identity: str, leader: bool, holder: str) -> dict[str, Any]:
    """The status document's answer to "is this the replica that acts?" (``holder``: the Lease's)."""
    if leader:
        return {"role": "leader", "leaderIdentity": identity, "message": f"leader: {identity} reconciles"}
    return {
        "role": "standby",
        "leaderIdentity": holder or None,
        "message": "standby: not the leader; the leader is "
        + (holder or "unknown (no replica holds the lease yet)"),
    }


async def run_operator(opts: OperatorOptions, stop: asyncio.Event | None = None) -> int:
    """Stand by until leader, then run kopf and the reconcile loop until ``stop`` or lost leadership.

    Returns 0 on a requested stop, 1 when leadership was lost (so the process restarts as a candidate).
    """
    from kubernetes import client as k8s

    from flyslice.operator.kube.cluster import api_client_for
    from flyslice.operator.kube.cluster_git import GitSourceManager
    from flyslice.operator.kube.dataplane_ca import DataplaneSigner
    from flyslice.operator.kube.leader import LeaderPodLabel, LeaseElector
    from flyslice.operator.status_api import ProbeServer, StatusServer

    for ns in opts.namespaces:
        if not _NAMESPACE_OK.match(ns):
            raise ValueError(f"--namespace {ns!r} is not a valid namespace name")
    stop = stop or asyncio.Event()
    # One line per handled event is noise at this rate (every change triggers the loop).
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    cluster = ClusterClient.from_kubeconfig(opts.kubeconfig)
    cache = WatchCache(
        cluster, {**dict.fromkeys(DESIRED_KINDS, ""), "NFInstance": f"{MANAGED_BY}={OPERATOR}"},
        namespaces=opts.namespaces, resync_s=opts.cache_resync_s,
    )  # fmt: skip
    cluster.sink = cache
    loop = ReconcileLoop(
        cluster, namespaces=opts.namespaces, debounce_s=opts.debounce_s, resync_s=opts.resync_s,
        heartbeat_timeout_s=opts.heartbeat_timeout_s, solve_options=opts.solve_options,
        package_policy=PackagePolicy(opts.signed_namespaces), cache=cache, reoptimize=opts.reoptimize,
        scale_out=opts.scale_out,
    )  # fmt: skip
    cache.on_change = loop.trigger
    elector = LeaseElector(
        k8s.CoordinationV1Api(cluster.api), opts.lease_namespace, opts.lease_name, identity=opts.identity,
        lease_duration_s=opts.lease_duration_s, renew_s=opts.renew_s, retry_s=opts.retry_s,
    )  # fmt: skip
    # The console Service selects the pod labelled leader; off when the pod name is unknown.
    label = LeaderPodLabel.from_env(k8s.CoreV1Api(cluster.api))
    stale = max(60.0, 6 * opts.resync_s)

    def snapshot() -> dict[str, Any]:
        r = loop.report
        return {
            "identity": elector.identity,
            "leader": elector.is_leader,
            **leadership(elector.identity, elector.is_leader, elector.holder),
            "passes": r.passes,
            "lastPassSeconds": round(r.last_pass_s, 3),
            "lastError": r.last_error,
            "apiRequests": cluster.requests,
            "watchCache": asdict(cache.stats),
            "nfinstances": {"created": r.created, "updated": r.updated, "deleted": r.deleted},
            "slices": r.slices,
            "reoptimization": loop.reoptimizer.status(),
            "scaleOut": scale_out_status(
                loop.state.scale_out if loop.state else ScaleOutState(), loop.scale_out, time.time()
            ),
        }

    server: StatusServer | None = None
    probes: ProbeServer | None = None
    if opts.liveness:
        # Only the probes here: the port kubelet reaches on the pod IP says nothing about the cluster.
        probes = ProbeServer(lambda: loop.healthy(stale))
        await probes.start(opts.liveness)
        log.info("liveness on http://%s:%d/healthz", opts.liveness.rpartition(":")[0], probes.port)
    if opts.status_addr:
        from flyslice.operator.observe.adapters import for_operator

        # /status, /metrics (controller-runtime names) and the read-only console, where configured.
        server = StatusServer(snapshot, lambda: loop.healthy(stale), for_operator(loop, snapshot))
        try:
            await server.start(opts.status_addr)
        except Exception:
            if probes is not None:
                await probes.stop()
            raise
        log.info("status on http://%s:%d/status", opts.status_addr.rpartition(":")[0], server.port)
    try:
        log.info("standing by for lease %s/%s as %s", opts.lease_namespace, opts.lease_name, elector.identity)
        # A container restarted in the same pod (after lost leadership) may still carry "true".
        await asyncio.to_thread(label.set, False)
        if not await elector.acquire(stop):
            return 0
        cache.start()  # the leader only: a standby keeps no watches open
        gitsources = GitSourceManager(cluster, opts.git_cache, on_applied=loop.trigger)
        registry = build_registry(loop, gitsources)
        kopf.on.login(registry=registry)(kopf_login(opts.kubeconfig))
        kopf_stop = asyncio.Event()
        tasks = [
            asyncio.create_task(
                kopf.operator(
                    registry=registry,
                    settings=kopf_settings(),
                    # Without it kopf derives one from the user name, and a container's uid need not
                    # have one (getpass raises KeyError): the Lease identity is unique already.
                    identity=elector.identity,  # type: ignore[arg-type]  # kopf's NewType(str)
                    standalone=True,
                    stop_flag=kopf_stop,
                    clusterwide=not opts.namespaces,
                    namespaces=list(opts.namespaces),
                ),
                name="kopf",
            ),
            asyncio.create_task(loop.run(kopf_stop), name="the reconcile loop"),
            asyncio.create_task(gitsources.run(kopf_stop), name="the GitSource manager"),
            # The data-plane CA (Secret flyslice-dataplane-ca) and its CSR signer: agents' mTLS certificates.
            asyncio.create_task(
                # A client of its own: its watch holds a connection for up to 30 s at a time.
                DataplaneSigner(api_client_for(opts.kubeconfig, pool=2), opts.lease_namespace).run(kopf_stop),
                name="the data-plane signer",
            ),
        ]
        labelling = asyncio.create_task(label.keep(True, kopf_stop, opts.retry_s))
        # The label comes off before the Lease is released, so the Service never routes to two pods.
        holding = asyncio.create_task(elector.hold(stop, before_release=lambda: label.set(False)))
        done, _ = await asyncio.wait([holding, *tasks], return_when=asyncio.FIRST_COMPLETED)
        lost = holding in done and not stop.is_set()
        # A task that ends by itself (kopf, the loop, the signer) is a failure, never a clean stop:
        # say which and why, and exit non-zero so the pod restarts as a candidate. kopf installs its own
        # SIGTERM handler and returns normally on it: that is the requested, clean stop.
        ended = [
            t
            for t in tasks
            if t in done
            and not t.cancelled()
            and (t.exception() is not None or (t.get_name() != "kopf" and not stop.is_set()))
        ]
        for task in ended:
            exc = task.exception()
            log.error("%s ended while leading: %s", task.get_name(), exc or "returned", exc_info=exc)
        kopf_stop.set()
        await asyncio.gather(*tasks, labelling, return_exceptions=True)
        if not holding.done():
            stop.set()
            await holding
        if lost:
            await asyncio.to_thread(label.set, False)  # best effort; the restarted process retries
        return 1 if lost or ended else 0
    finally:
        await asyncio.to_thread(cache.stop)
        if server is not None:
            await server.stop()
        if probes is not None:
            await probes.stop()


def main_operator(opts: OperatorOptions) -> int:
    """Blocking entry point for the CLI: SIGINT/SIGTERM stop it cleanly (and release the lease)."""
    import signal

    async def runner() -> int:
        stop = asyncio.Event()
        running = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            running.add_signal_handler(sig, stop.set)
        return await run_operator(opts, stop)

    return asyncio.run(runner())


__all__ = [
    "API_VERSION",
    "FINALIZER",
    "PLURALS",
    "OperatorOptions",
    "ReconcileLoop",
    "build_registry",
    "leadership",
    "main_operator",
    "run_operator",
]
