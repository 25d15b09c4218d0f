"""The reconcile core, shared by the embedded controller and the kopf operator.

One pure, level-triggered function: desired state (a :class:`Catalog` at a revision) plus
what the agents observe plus the controller's memory of its last decision in; the NFInstances
that must exist, every slice's status and the new memory out. It performs no I/O, so the
embedded mode and the Kubernetes operator run exactly the same logic.

Re-placement happens when the desired state changes, when a node stops heartbeating or
disappears, when a node's load moves by ``LOAD_CHANGE`` or more since the last placement
(GNF's 15 % rule), and when a slice's attachments move (roaming). Every re-placement passes
the current assignments to the solver, whose migration term keeps moves to a minimum.

What runs keeps running: a slice whose new intent cannot be admitted keeps its last good placement
(``Degraded``, reason ``NewIntentNotAdmitted``) unless it opts in with the annotation
``flyslice.io/allow-teardown: "true"``, and the other slices are planned around it. A slice whose
planning raises is isolated (``Stalled``) so that it never stops the others.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flyslice import solver
from flyslice.operator.intake.catalog import Catalog, EdgeNodeSpec, SliceSpec
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.quantities import cpu_millis, memory_bytes
from flyslice.operator.intake.validation import ValidationResult
from flyslice.operator.planning.actions import InstanceAction, slice_actions
from flyslice.operator.planning.pipeline import Plan, plan
from flyslice.solver.model import Assignment, Resources

LOAD_CHANGE = 0.15
HEARTBEAT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class NodeObservation:
    heartbeat_at: float | None = None
    #: Fraction of the node's CPU in use, 0..1.
    load: float | None = None


@dataclass(frozen=True)
class InstanceObservation:
    state: str
    node: str = ""
    message: str = ""
    #: End-to-end latency observed by this instance (sinks report it), in ms.
    e2e_latency_ms: float | None = None
    #: Restarts after failures, as counted by the node's agent.
    restarts: int = 0


@dataclass(frozen=True)
class Observation:
    nodes: Mapping[str, NodeObservation] = field(default_factory=dict)
    instances: Mapping[tuple[str, str], InstanceObservation] = field(default_factory=dict)  # (ns, name)


@dataclass(frozen=True)
class SliceRecord:
    """What the controller decided for one slice, kept between reconciles."""

    fingerprint: str
    admitted: bool
    service: str | None
    assignments: Mapping[str, Assignment]
    path_latency_ms: Mapping[str, float]
    budget_ms: float
    reasons: tuple[str, ...]
    first_placed_at: float | None
    expires_at: float | None
    revision: str
    actions: tuple[InstanceAction, ...] = ()
    #: Why the slice's newest intent is not admitted while its last good placement keeps running.
    held: tuple[str, ...] = ()
    #: Why planning this slice failed (an error, not a verdict); its last good placement keeps running.
    stalled: str = ""


@dataclass(frozen=True)
class ControllerState:
    slices: Mapping[str, SliceRecord] = field(default_factory=dict)
    plan_fingerprint: str = ""
    load_at_plan: Mapping[str, float] = field(default_factory=dict)
    plans: int = 0
    #: The last solve's wall time and relative MIP gap (None: not proven / no solve yet), for metrics.
    solve_seconds: float = 0.0
    solve_gap: float | None = None


@dataclass(frozen=True)
class Outcome:
    actions: tuple[InstanceAction, ...]
    slice_status: Mapping[str, dict[str, Any]]
    state: ControllerState
    replanned: bool
    #: Human-readable decisions, e.g. for Kubernetes Events.
    events: tuple[str, ...] = ()


def reconcile(
    catalog: Catalog,
    state: ControllerState,
    observation: Observation,
    *,
    now: float,
    revision: str = "",
    options: solver.SolveOptions | None = None,
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
) -> Outcome:
    events: list[str] = []
    down = _unavailable_nodes(catalog, observation, now, heartbeat_timeout_s)
    for n in sorted(down):
        events.append(f"node {n} has not sent a heartbeat for over {heartbeat_timeout_s:g}s: moving its NFs")
    live = replace(catalog, nodes={k: v for k, v in catalog.nodes.items() if k not in down})

    expired = {
        key for key, rec in state.slices.items() if rec.expires_at is not None and now >= rec.expires_at
    }
    placeable = replace(live, slices={k: s for k, s in live.slices.items() if s.key not in expired})
    fingerprint = _fingerprint(placeable)
    load_moved = _load_moved(catalog, observation, state)
    for n in load_moved:
        events.append(
            f"load on node {n} changed by {LOAD_CHANGE:.0%} or more since the last placement: re-planning"
        )

    replanned = fingerprint != state.plan_fingerprint or bool(load_moved)
    records = dict(state.slices)
    load_at_plan = dict(state.load_at_plan)
    plans = state.plans
    solve_seconds, solve_gap = state.solve_seconds, state.solve_gap
    held: dict[str, tuple[str, ...]] = {}
    broken: dict[str, str] = {}
    if replanned:
        current = {key: rec.assignments for key, rec in state.slices.items() if rec.admitted}
        background = _background(placeable, observation, state)
        the_plan, broken = _plan_isolating_failures(placeable, options, current, background)
        # A running slice that the new plan drops keeps its placement; the others are planned again
        # around what it holds, until no further running slice is dropped.
        for _round in range(len(placeable.slices)):
            newly = _to_hold(the_plan, state, set(live.nodes))
            if not newly:
                break
            held.update(newly)
            rest = replace(
                placeable,
                slices={
                    k: s for k, s in placeable.slices.items() if s.key not in held and s.key not in broken
                },
            )
            reserved = _add(background, _usage(state.slices[k].actions for k in held))
            the_plan, more = _plan_isolating_failures(rest, options, current, reserved)
            broken.update(more)
        plans += 1
        solve_seconds, solve_gap = the_plan.placement.seconds, the_plan.placement.gap
        load_at_plan = {n: o.load for n, o in observation.nodes.items() if o.load is not None}
        records = {k: v for k, v in records.items() if k in expired}
        for sp in the_plan.slices:
            key = sp.slice.key
            old = state.slices.get(key)
            first = old.first_placed_at if old and old.first_placed_at is not None else None
            if sp.placement.admitted and first is None:
                first = now
            expires = first + sp.slice.lifetime_s if first is not None and sp.slice.lifetime_s else None
            actions: tuple[InstanceAction, ...] = ()
            if sp.service is not None and sp.demand is not None:
                actions = tuple(slice_actions(placeable, sp.slice, sp.service, sp.demand, sp.placement))
            moved = _moves(old, sp.placement.assignments) if old else 0
            if old and old.held and sp.placement.admitted:
                events.append(f"slice {key}: new intent admitted, {moved} NF(s) moved")
            elif old and moved:
                events.append(f"slice {key}: re-placed, {moved} NF(s) moved")
            elif (not old or not old.admitted) and sp.placement.admitted:
                events.append(f"slice {key}: placed {len(actions)} NF(s)")
            if not sp.placement.admitted:
                events.append(f"slice {key}: not admitted: {'; '.join(sp.placement.reasons)}")
            records[key] = SliceRecord(
                fingerprint=_slice_fingerprint(placeable, key),
                admitted=sp.placement.admitted,
                service=sp.service.name if sp.service else None,
                assignments=dict(sp.placement.assignments),
                path_latency_ms=dict(sp.placement.path_latency_ms),
                budget_ms=sp.slice.max_latency_ms,
                reasons=tuple(sp.placement.reasons),
                first_placed_at=first,
                expires_at=expires,
                revision=revision or (old.revision if old else ""),
                actions=actions,
            )
        for key, reasons in held.items():
            old = state.slices[key]
            teardown = (
                ""
                if old.held == reasons
                else ' (set the annotation flyslice.io/allow-teardown: "true" to tear it down instead)'
            )
            if old.held != reasons:
                events.append(
                    f"slice {key}: new intent not admitted, keeping the last good placement "
                    f"({len(old.actions)} NF(s)): {'; '.join(reasons)}{teardown}"
                )
            records[key] = replace(
                old, fingerprint=_slice_fingerprint(placeable, key), held=reasons, stalled=""
            )
        for key, error in broken.items():
            old = state.slices.get(key)
            if old is None or old.stalled != error:
                events.append(f"slice {key}: cannot be planned, keeping what runs: {error}")
            records[key] = (
                replace(old, stalled=error) if old is not None else _stalled_record(error, revision)
            )
    # Slices removed from the desired state are forgotten; their instances are pruned because
    # they are no longer in the action list.
    records = {k: v for k, v in records.items() if k in {s.key for s in catalog.slices.values()}}
    for key in expired:
        if key in records and records[key].actions:
            events.append(f"slice {key}: lifetime over, tearing down")
            records[key] = replace(records[key], actions=(), assignments={})

    all_actions = tuple(a for rec in records.values() for a in rec.actions)
    statuses = {
        key: _status(catalog.slices[_split(key)], rec, observation, expired=key in expired)
        for key, rec in records.items()
    }
    new_state = ControllerState(records, fingerprint, load_at_plan, plans, solve_seconds, solve_gap)
    return Outcome(all_actions, statuses, new_state, replanned, tuple(events))


def _plan_isolating_failures(
    catalog: Catalog,
    options: solver.SolveOptions | None,
    current: Mapping[str, Mapping[str, Assignment]],
    background: Mapping[str, Resources],
) -> tuple[Plan, dict[str, str]]:
    """Plan every slice; when planning raises, find the slices it raises on and plan the rest.

    Raises only when the failure is not one slice's (a node or package breaks every plan): then the
    whole pass fails and the caller reports it as stalled.
    """
    try:
        return plan(catalog, options=options, current=current, background=background), {}
    except Exception as whole:
        broken: dict[str, str] = {}
        for key, spec in catalog.slices.items():
            try:
                plan(
                    replace(catalog, slices={key: spec}),
                    options=options,
                    current=current,
                    background=background,
                )
            except Exception as exc:
                broken[spec.key] = f"{type(exc).__name__}: {exc}"
        if not broken or len(broken) == len(catalog.slices):
            raise whole
        rest = replace(catalog, slices={k: s for k, s in catalog.slices.items() if s.key not in broken})
        return plan(rest, options=options, current=current, background=background), broken


def _to_hold(the_plan: Plan, state: ControllerState, live_nodes: set[str]) -> dict[str, tuple[str, ...]]:
    """Slices the plan does not admit whose last good placement should keep running instead."""
    held = {}
    for sp in the_plan.slices:
        old = state.slices.get(sp.slice.key)
        if sp.placement.admitted or old is None or not old.admitted or not old.actions:
            continue
        if sp.slice.allow_teardown:
            continue
        if any(a.node not in live_nodes for a in old.actions):
            continue  # part of it ran on a node that is gone: there is no whole placement to keep
        held[sp.slice.key] = tuple(sp.placement.reasons) or ("the solver did not admit it",)
    return held


def _usage(actions: Any) -> dict[str, Resources]:
    out: dict[str, Resources] = {}
    for group in actions:
        for a in group:
            res = a.spec.get("resources", {})
            used = Resources(cpu_millis(res.get("cpu", 0)), memory_bytes(res.get("memory", 0)))
            out[a.node] = out.get(a.node, Resources()) + used
    return out


def _add(a: Mapping[str, Resources], b: Mapping[str, Resources]) -> dict[str, Resources]:
    return {n: a.get(n, Resources()) + b.get(n, Resources()) for n in {*a, *b}}


def _stalled_record(error: str, revision: str) -> SliceRecord:
    return SliceRecord(
        fingerprint="",
        admitted=False,
        service=None,
        assignments={},
        path_latency_ms={},
        budget_ms=0.0,
        reasons=(),
        first_placed_at=None,
        expires_at=None,
        revision=revision,
        stalled=error,
    )


def _split(key: str) -> tuple[str, str]:
    ns, _, name = key.partition("/")
    return ns, name


def _unavailable_nodes(catalog: Catalog, obs: Observation, now: float, timeout: float) -> set[str]:
    # A node that never sent a heartbeat is presumed up: its agent may simply not have started yet.
    return {
        n
        for n in catalog.nodes
        if (o := obs.nodes.get(n)) is not None
        and o.heartbeat_at is not None
        and now - o.heartbeat_at > timeout
    }


def _load_moved(catalog: Catalog, obs: Observation, state: ControllerState) -> list[str]:
    moved = []
    for n in catalog.nodes:
        o = obs.nodes.get(n)
        if o is None or o.load is None or n not in state.load_at_plan:
            continue
        if abs(o.load - state.load_at_plan[n]) >= LOAD_CHANGE:
            moved.append(n)
    return sorted(moved)


def _background(catalog: Catalog, obs: Observation, state: ControllerState) -> dict[str, Resources]:
    """CPU used on each node by anything but flyslice: observed load minus what flyslice placed."""
    ours: dict[str, int] = {}
    for rec in state.slices.values():
        for action in rec.actions:
            ours[action.node] = ours.get(action.node, 0) + _cpu_of(action)
    out = {}
    for name, node in catalog.nodes.items():
        o = obs.nodes.get(name)
        if o is None or o.load is None:
            continue
        other = int(o.load * node.cpu_millis) - ours.get(name, 0)
        if other > 0:
            out[name] = Resources(cpu_millis=min(other, node.cpu_millis), memory_bytes=0)
    return out


def _cpu_of(action: InstanceAction) -> int:
    return cpu_millis(action.spec.get("resources", {}).get("cpu", 0))


def _moves(old: SliceRecord, new: Mapping[str, Assignment]) -> int:
    return sum(1 for nf, a in new.items() if nf in old.assignments and old.assignments[nf] != a)


def _node_fingerprint(n: EdgeNodeSpec) -> Any:
    return [
        n.name,
        n.tier,
        sorted(n.runtimes),
        n.cpu_millis,
        n.memory_bytes,
        n.availability,
        n.cost,
        sorted((lk.node, lk.latency_ms, lk.bandwidth_mbps or 0) for lk in n.links),
    ]


def _fingerprint(catalog: Catalog) -> str:
    doc = {
        "nodes": [_node_fingerprint(catalog.nodes[k]) for k in sorted(catalog.nodes)],
        "packages": [repr(catalog.packages[k]) for k in sorted(catalog.packages)],
        "services": [repr(catalog.services[k]) for k in sorted(catalog.services)],
        "slices": [repr(catalog.slices[k]) for k in sorted(catalog.slices)],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _slice_fingerprint(catalog: Catalog, key: str) -> str:
    return hashlib.sha256(repr(catalog.slices[_split(key)]).encode()).hexdigest()


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def _status(slice_: SliceSpec, rec: SliceRecord, obs: Observation, *, expired: bool) -> dict[str, Any]:
    placement = []
    states: list[str] = []
    observed: list[float] = []
    for action in rec.actions:
        o = obs.instances.get((action.namespace, action.name))
        state = o.state if o else "Pending"
        states.append(state)
        if o and o.e2e_latency_ms is not None:
            observed.append(o.e2e_latency_ms)
        entry = {
            "role": action.spec["role"],
            "package": action.spec["package"],
            "node": action.node,
            "flavor": action.spec["flavor"],
            "instance": action.name,
            "state": state,
        }
        if "attachment" in action.spec:
            entry["attachment"] = action.spec["attachment"]
        if o is not None and o.restarts:
            entry["restarts"] = o.restarts
        placement.append(entry)
    reasons = list(rec.reasons)
    if rec.stalled:
        reasons.insert(0, f"planning failed, keeping what runs: {rec.stalled}")
    if rec.held:
        reasons.insert(0, f"new intent not admitted, keeping the last good placement: {'; '.join(rec.held)}")
    if expired:
        phase = "Expired"
    elif rec.stalled and not rec.admitted:
        phase = "Pending"
    elif not rec.admitted:
        phase = "Infeasible"
    elif states and all(s == "Running" for s in states):
        phase = "Ready"
    elif any(s == "Failed" for s in states):
        phase = "Degraded"
        reasons += [
            f"instance {p['instance']} on {p['node']} failed"
            + (f": {m}" if (m := _msg(obs, slice_.namespace, p["instance"])) else "")
            for p in placement
            if p["state"] == "Failed"
        ]
    else:
        phase = "Deploying"
    worst_observed = max(observed) if observed else None
    if phase == "Ready" and worst_observed is not None and worst_observed > rec.budget_ms:
        phase = "Degraded"
        reasons.append(f"observed latency {worst_observed:.2f} ms exceeds the {rec.budget_ms:g} ms budget")
    if phase in ("Ready", "Deploying") and (rec.held or rec.stalled):
        # Running is not the same as converged: the desired state is not what runs.
        phase = "Degraded"
    nodes_used = sorted({a.host for a in rec.assignments.values()})
    status: dict[str, Any] = {
        "phase": phase,
        "networkService": rec.service,
        "placement": placement,
        "paths": [
            {"name": name, "predictedLatencyMs": round(lat, 3), "budgetMs": rec.budget_ms}
            for name, lat in sorted(rec.path_latency_ms.items())
        ],
        "nodeCount": len(nodes_used),
        "reasons": reasons,
        "observedGeneration": slice_.generation,
        "conditions": _conditions(phase, rec, reasons),
    }
    if rec.path_latency_ms:
        status["predictedLatencyMs"] = round(max(rec.path_latency_ms.values()), 3)
    if worst_observed is not None:
        status["observedLatencyMs"] = round(worst_observed, 3)
    if rec.expires_at is not None:
        status["expiresAt"] = _iso(rec.expires_at)
    if rec.revision:
        status["lastAppliedRevision"] = rec.revision
    return status


def _msg(obs: Observation, ns: str, name: str) -> str:
    o = obs.instances.get((ns, name))
    return o.message if o else ""


def _conditions(phase: str, rec: SliceRecord, reasons: list[str]) -> list[dict[str, Any]]:
    def cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}

    detail = "; ".join(reasons)
    why = "PlanningFailed" if rec.stalled else "NewIntentNotAdmitted" if rec.held else phase
    placed_reason = "Placed" if rec.admitted else "PlanningFailed" if rec.stalled else "Infeasible"
    # kstatus (docs/health-checks.md): Reconciling while flyslice still acts toward this generation on its
    # own; Stalled when it cannot get there without the user: planning failed, or the intent is infeasible.
    stuck = "PlanningFailed" if rec.stalled else "NewIntentNotAdmitted" if rec.held else ""
    stuck = stuck or ("Infeasible" if phase == "Infeasible" else "")
    working = phase in ("Pending", "Placing", "Deploying") and not stuck
    return [
        cond("Placed", rec.admitted, placed_reason, detail if not rec.admitted else ""),
        cond("Ready", phase == "Ready", why, detail),
        cond("Degraded", phase == "Degraded", why, detail if phase == "Degraded" else ""),
        cond("Reconciling", working, phase if working else "Reconciled", detail if working else ""),
        cond("Stalled", bool(stuck), stuck or "Planned", (rec.stalled or detail) if stuck else ""),
    ]


def mark_stalled(status: Mapping[str, Any], error: str) -> dict[str, Any]:
    """A slice status from the last pass that worked, now that passes fail: never Ready while stalled.

    Both front ends apply it to every slice while their reconcile passes keep failing; what runs is
    left alone, but nobody may read Ready from a controller that no longer reconciles.
    """
    out = dict(status)
    message = f"reconcile passes are failing; this status may be stale: {error}"
    if out.get("phase") in ("Ready", "Deploying"):
        out["phase"] = "Degraded"
    out["reasons"] = [message, *[r for r in out.get("reasons", []) if not r.startswith("reconcile passes")]]
    conditions = {c["type"]: dict(c) for c in out.get("conditions", [])}
    conditions["Stalled"] = {"type": "Stalled", "status": "True", "reason": "PassFailed", "message": error}
    conditions["Ready"] = {"type": "Ready", "status": "False", "reason": "Stalled", "message": message}
    out["conditions"] = list(conditions.values())
    out["stalled"] = True
    return out


def keep_last_good(
    result: ValidationResult,
    previous: ValidationResult | None,
    errors: list[ManifestError],
    *,
    root: Path | None = None,
    previous_root: Path | None = None,
) -> Catalog:
    """Objects invalid in this revision keep their last valid version instead of vanishing."""
    return carry_last_good(result, previous, errors, root=root, previous_root=previous_root).catalog


def carry_last_good(
    result: ValidationResult,
    previous: ValidationResult | None,
    errors: list[ManifestError],
    *,
    load_errors: Iterable[ManifestError] = (),
    root: Path | None = None,
    previous_root: Path | None = None,
) -> ValidationResult:
    """``result`` with every object that this revision breaks carried over from ``previous``.

    Broken: an object an error names, and every object of a file that failed as a whole (unreadable,
    empty, too large, not UTF-8) or that the loader reported at all (``load_errors``: a YAML error
    stops the rest of the file) — a truncated or emptied file is a mistake to report, not a deletion. Files are compared relative to their snapshot roots (each git revision is exported
    to its own directory). The carried objects stay in ``sources``, re-rooted, so a file that stays
    broken for several revisions keeps them for as long.
    """
    if previous is None:
        return result
    broken = {e.object for e in errors if e.severity == "error" and e.object}
    loaded = list(load_errors)
    broken_files = _broken_files([*errors, *loaded], root, {id(e) for e in loaded})
    kept = {
        key
        for key, m in previous.sources.items()
        if key not in result.sources
        and (_refs(key) & broken or _relative(m.file, previous_root) in broken_files)
    }
    if not kept:
        return result
    cat = result.catalog
    prev = previous.catalog
    nodes = dict(cat.nodes)
    packages = dict(cat.packages)
    services = dict(cat.services)
    slices = dict(cat.slices)
    for kind, ns, name in kept:
        if kind == "EdgeNode" and name in prev.nodes:
            nodes[name] = prev.nodes[name]
        elif kind == "NFPackage" and (ns, name) in prev.packages:
            packages[(ns, name)] = prev.packages[(ns, name)]
        elif kind == "NetworkService" and (ns, name) in prev.services:
            services[(ns, name)] = prev.services[(ns, name)]
        elif kind == "Slice" and (ns, name) in prev.slices:
            slices[(ns, name)] = prev.slices[(ns, name)]
    sources = dict(result.sources)
    for key in kept:
        m = previous.sources[key]
        sources[key] = replace(m, file=_reroot(m.file, previous_root, root))
    catalog = replace(cat, nodes=nodes, packages=packages, services=services, slices=slices)
    return replace(result, catalog=catalog, sources=sources)


def _broken_files(errors: list[ManifestError], root: Path | None, from_loader: set[int]) -> set[str]:
    """Files the loader reported, and files with an error that names no object."""
    return {
        _relative(e.file, root)
        for e in errors
        if e.severity == "error" and e.file and (id(e) in from_loader or not e.object or "<" in e.object)
    }


def _relative(file: str, root: Path | None) -> str:
    if root is None:
        return file
    try:
        return str(Path(file).relative_to(root))
    except ValueError:
        return file


def _reroot(file: str, old: Path | None, new: Path | None) -> str:
    if old is None or new is None:
        return file
    try:
        return str(new / Path(file).relative_to(old))
    except ValueError:
        return file


def _refs(key: tuple[str, str, str]) -> set[str]:
    """The ways an error may name this object (the default namespace may be left implicit)."""
    kind, ns, name = key
    refs = {f"{kind}/{ns}/{name}" if ns else f"{kind}/{name}"}
    if ns == "default":
        refs.add(f"{kind}/{name}")
    return refs
