"""Prometheus metrics in controller-runtime's names plus flyslice's own (docs/metrics.md lists them).

Counters and histograms are updated as passes happen (:meth:`Metrics.instrument`); gauges are computed
at scrape time from the Slice status documents the controller already keeps, so a scrape always shows
the last pass and never a half-updated one.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

#: Every phase a Slice can be in (docs/resources.md), so `flyslice_slices{phase}` always has all series.
PHASES = ("Pending", "Placing", "Deploying", "Ready", "Degraded", "Infeasible", "Expired")
CONTENT_TYPE = CONTENT_TYPE_LATEST
# controller-runtime's default buckets for reconcile time, so its dashboards' quantiles line up.
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0)
SOLVER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

P = ParamSpec("P")
R = TypeVar("R")


class SolveState(Protocol):
    """The part of ``reconcile.ControllerState`` the metrics read (duck-typed: no upward import)."""

    plans: int
    solve_seconds: float
    solve_gap: float | None


@dataclass
class SourceFacts:
    """Where the desired state comes from, as the metrics need it."""

    url: str
    applied_revision: str = ""
    last_error: str = ""
    #: When the last fetch failed (a new value counts one more error); None: only ``last_error`` is known.
    last_error_at: float | None = None
    #: Failed fetches since the last success, when the source counts them (a GitSource's
    #: ``status.fetchFailures``); each increment is one error, and it wins over ``last_error_at``.
    fetch_failures: int | None = None


@dataclass
class _Memory:
    """What the previous look at the world saw, to turn level readings into counters."""

    plans_seen: int = 0
    #: (slice key, instance) -> the agent's restart count last seen.
    restarts: dict[tuple[str, str], int] = field(default_factory=dict)
    #: source -> (last_error, last_error_at) last seen.
    error_seen: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    #: source -> fetch_failures last seen.
    failures_seen: dict[str, int] = field(default_factory=dict)
    #: source -> (revision applied, when this process first saw it applied).
    revision: dict[str, tuple[str, float]] = field(default_factory=dict)


class Metrics:
    """One registry per server: tests and a process running two controllers never share series."""

    def __init__(
        self,
        controller: str,
        statuses: Callable[[], Mapping[str, Mapping[str, Any]]],
        *,
        solve_state: Callable[[], SolveState | None] = lambda: None,
        sources: Callable[[], Sequence[SourceFacts]] = lambda: (),
        leader: Callable[[], tuple[str, bool]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.controller = controller
        #: (identity, leads) of a replica under leader election; None where there is no election.
        self._leader = leader
        self._statuses = statuses
        self._solve_state = solve_state
        self._sources = sources
        self._clock = clock
        self._memory = _Memory()
        self._lock = threading.Lock()  # the operator's passes run in a worker thread
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_total = Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        # Pre-create the label sets dashboards query, so a fresh process shows 0, not "no data".
        for result in ("success", "error"):
            self.reconcile_total.labels(controller, result)
        self.reconcile_errors.labels(controller)
        self.solver_seconds = Histogram(
            "flyslice_solver_duration_seconds",
            "Wall time of each placement solve (a re-plan of every slice)",
            buckets=SOLVER_BUCKETS,
            registry=r,
        )
        self.nf_restarts = Counter(
            "flyslice_nf_restarts_total",
            "Restarts of NF instances by their agents after a failure (per slice and node)",
            ["namespace", "slice", "node"],
            registry=r,
        )
        self.fetch_errors = Counter(
            "flyslice_git_fetch_errors_total",
            "Failed fetches of the desired state's source",
            ["source"],
            registry=r,
        )
        self._gap: float | None = None
        r.register(_ScrapeTimeCollector(self))

    # -- passes --------------------------------------------------------------------------------

    def observe_pass(self, seconds: float, error: BaseException | None) -> None:
        """Record one reconcile pass, then the counters derived from what it left behind."""
        self.reconcile_time.labels(self.controller).observe(seconds)
        self.reconcile_total.labels(self.controller, "error" if error else "success").inc()
        if error is not None:
            self.reconcile_errors.labels(self.controller).inc()
        self.refresh()

    def instrument(self, pass_: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """Wrap an async reconcile pass (the embedded controller's ``run_once``)."""

        @functools.wraps(pass_)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.monotonic()
            try:
                result = await pass_(*args, **kwargs)
            except BaseException as exc:
                self.observe_pass(time.monotonic() - started, exc)
                raise
            self.observe_pass(time.monotonic() - started, None)
            return result

        return run

    def instrument_sync(self, pass_: Callable[P, R]) -> Callable[P, R]:
        """Wrap a blocking reconcile pass (the operator's ``ReconcileLoop.run_once``)."""

        @functools.wraps(pass_)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.monotonic()
            try:
                result = pass_(*args, **kwargs)
            except BaseException as exc:
                self.observe_pass(time.monotonic() - started, exc)
                raise
            self.observe_pass(time.monotonic() - started, None)
            return result

        return run

    def refresh(self) -> None:
        """Turn the latest level readings (solves done, instance states, source errors) into counters."""
        with self._lock:
            self._refresh_solver()
            self._refresh_restarts()
            self._refresh_source()

    def _refresh_solver(self) -> None:
        state = self._solve_state()
        if state is None or state.plans <= self._memory.plans_seen:
            return
        # Passes that re-plan more than once between two looks record only the last solve's time.
        self._memory.plans_seen = state.plans
        self.solver_seconds.observe(state.solve_seconds)
        self._gap = state.solve_gap

    def _refresh_restarts(self) -> None:
        """The agents count restarts (``restarts`` of each placement entry, an NFInstance's
        ``status.restarts``); the counter adds what they added since the last look. An instance seen
        for the first time adds its whole count, so a restarted operator shows what the cluster says."""
        mem = self._memory
        seen: set[tuple[str, str]] = set()
        for key, status in self._statuses().items():
            ns, _, name = key.partition("/")
            for inst in status.get("placement") or []:
                ident = (key, str(inst.get("instance", "")))
                seen.add(ident)
                count = int(inst.get("restarts") or 0)
                added = _increase(mem.restarts.get(ident, 0), count)
                if added:
                    self.nf_restarts.labels(ns, name, str(inst.get("node", ""))).inc(added)
                mem.restarts[ident] = count
        # Instances that are gone (slice deleted, NF moved away) start afresh if they come back.
        for ident in [i for i in mem.restarts if i not in seen]:
            del mem.restarts[ident]

    def _refresh_source(self) -> None:
        mem = self._memory
        for src in self._sources():
            if src.fetch_failures is not None:
                added = _increase(mem.failures_seen.get(src.url, 0), src.fetch_failures)
                mem.failures_seen[src.url] = src.fetch_failures
            else:
                fresh = (src.last_error, src.last_error_at) != mem.error_seen.get(src.url, ("", None))
                added = 1 if src.last_error and fresh else 0
                mem.error_seen[src.url] = (src.last_error, src.last_error_at)
            self.fetch_errors.labels(src.url).inc(added)  # also creates the series at 0
            last = mem.revision.get(src.url)
            if src.applied_revision and (last is None or last[0] != src.applied_revision):
                mem.revision[src.url] = (src.applied_revision, self._clock())

    # -- scrape --------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        self.refresh()
        return generate_latest(self.registry)

    def collect_gauges(self) -> Iterable[Metric]:
        statuses = dict(self._statuses())
        by_phase = dict.fromkeys(PHASES, 0)
        admitted = rejected = 0
        predicted = GaugeMetricFamily(
            "flyslice_path_predicted_latency_seconds",
            "Predicted end-to-end latency of each budgeted path of an admitted slice",
            labels=["namespace", "slice", "path"],
        )
        budget = GaugeMetricFamily(
            "flyslice_path_latency_budget_seconds",
            "Latency budget of each budgeted path (the slice's spec.qos.maxLatencyMs)",
            labels=["namespace", "slice", "path"],
        )
        observed = GaugeMetricFamily(
            "flyslice_slice_observed_latency_seconds",
            "Worst end-to-end latency the slice's sinks observed (absent until one reports)",
            labels=["namespace", "slice"],
        )
        instances = GaugeMetricFamily(
            "flyslice_nf_instances",
            "NF instances by slice, node, flavour (vnf, fnf) and observed state",
            labels=["namespace", "slice", "node", "flavor", "state"],
        )
        for key, st in sorted(statuses.items()):
            ns, _, name = key.partition("/")
            phase = str(st.get("phase", "Pending"))
            by_phase[phase] = by_phase.get(phase, 0) + 1
            if phase == "Infeasible":
                rejected += 1
            elif phase != "Expired":
                admitted += 1
            for path in st.get("paths") or []:
                if path.get("predictedLatencyMs") is not None:
                    predicted.add_metric([ns, name, path["name"]], path["predictedLatencyMs"] / 1000)
                budget.add_metric([ns, name, path["name"]], path["budgetMs"] / 1000)
            if st.get("observedLatencyMs") is not None:
                observed.add_metric([ns, name], st["observedLatencyMs"] / 1000)
            counts: dict[tuple[str, str, str], int] = {}
            for inst in st.get("placement") or []:
                k = (
                    str(inst.get("node", "")),
                    str(inst.get("flavor", "")),
                    str(inst.get("state", "Pending")),
                )
                counts[k] = counts.get(k, 0) + 1
            for (node, flavor, state), n in sorted(counts.items()):
                instances.add_metric([ns, name, node, flavor, state], n)
        slices = GaugeMetricFamily("flyslice_slices", "Slices by phase", labels=["phase"])
        for phase, n in by_phase.items():
            slices.add_metric([phase], n)
        admission = GaugeMetricFamily(
            "flyslice_slice_admission",
            "Slices the last placement admitted or rejected (Infeasible)",
            labels=["result"],
        )
        admission.add_metric(["admitted"], admitted)
        admission.add_metric(["rejected"], rejected)
        gap = GaugeMetricFamily(
            "flyslice_solver_gap_ratio",
            "Relative optimality gap of the last solve: 0 proven optimal, NaN unknown (not proven)",
        )
        gap.add_metric([], math.nan if self._gap is None else self._gap)
        yield from (slices, admission, predicted, budget, observed, instances, gap)
        if self._leader is not None:
            identity, leads = self._leader()
            leader = GaugeMetricFamily(
                "flyslice_leader",
                "1 on the replica holding the leader Lease (the one that reconciles), 0 on a standby",
                labels=["identity"],
            )
            leader.add_metric([identity], 1.0 if leads else 0.0)
            yield leader
        sources = list(self._sources())
        if sources:
            age = GaugeMetricFamily(
                "flyslice_last_applied_revision_age_seconds",
                "Seconds since the revision now applied was first applied (by this process)",
                labels=["source", "revision"],
            )
            for src in sources:
                applied = self._memory.revision.get(src.url)
                if applied is not None:
                    age.add_metric([src.url, applied[0]], max(0.0, self._clock() - applied[1]))
            yield age


def _increase(before: int, now: int) -> int:
    """What a cumulative count added since ``before``; a smaller value means it restarted from 0."""
    return now - before if now >= before else now


class _ScrapeTimeCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics.collect_gauges())

    def describe(self) -> Iterable[Metric]:
        # Nothing up front: the registry would otherwise call collect() at registration time.
        return []


def statuses_from_state(
    state: Any,
    phases: Mapping[str, str],
    instances: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Slice status documents rebuilt from the operator's controller state and its last phases.

    The operator writes the full status into each Slice object but keeps only phases in memory; the
    paths and placement come from the reconcile records, which hold the same numbers. Each instance's
    state and restart count are in its NFInstance's status, written by the node's agent: ``instances``
    maps (namespace, name) to that status, as the operator last listed it; an instance not in it (not
    yet created, or not yet listed) is ``Unknown``.
    """
    if state is None:
        return {}
    observed = instances or {}
    out: dict[str, dict[str, Any]] = {}
    for key, rec in state.slices.items():
        placement = []
        for a in rec.actions:
            st = observed.get((a.namespace, a.name)) or {}
            placement.append(
                {
                    "instance": a.name,
                    "node": a.node,
                    "flavor": a.spec.get("flavor", ""),
                    # An NFInstance the agent has not reported on yet is Pending, as its CRD says.
                    "state": str(st.get("state") or "Pending")
                    if (a.namespace, a.name) in observed
                    else "Unknown",
                    "restarts": int(st.get("restarts") or 0),
                }
            )
        out[key] = {
            "phase": phases.get(key, "Pending"),
            "paths": [
                {"name": n, "predictedLatencyMs": lat, "budgetMs": rec.budget_ms}
                for n, lat in sorted(rec.path_latency_ms.items())
            ],
            "placement": placement,
        }
    return out
