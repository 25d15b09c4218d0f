"""The reconcile core, shared by the embedded controller and the kopf operator.

One pure, level-triggered function: desired state (a :class:`Catalog` at a revision) plus
what the agents observe plus the controller's memory of its last decision in; the NFInstances
that must exist, every slice's status and the new memory out. It performs no I/O, so the
embedded mode and the Kubernetes operator run exactly the same logic.

Re-placement happens when the desired state changes, when a node stops heartbeating or
disappears, when a node's load moves by ``LOAD_CHANGE`` or more since the last placement
(GNF's 15 % rule), and when a slice's attachments move (roaming).

Admission is incremental by default: the solver holds every running slice whose intent is unchanged
and whose placement is still complete and valid fixed (``SolveOptions(mode="incremental")``) and
places only the others against it: new slices, slices whose intent changed, slices that lost a node,
and running slices that no longer fit once a node shrank or its load grew (kept in priority order, the
rest re-placed). Slices refused before are tried again unless the only news is new slices. Running,
unchanged slices never move for a newcomer. ``admission="full"`` re-plans every slice instead (the
migration term keeps moves few, but any may move). The global improvement incremental admission
gives up is the background re-optimiser's job (:mod:`flyslice.operator.planning.reoptimize`); a pass
applies its proposal (``proposal=``) only when the state is still the one it was computed from and
the placement passes the solver's independent checks.

Scale-out (``operator/planning/scale_out.py``): a shared instance that its agent reports overloaded
for ``ScaleOutSettings.sustain_s`` gets its pool derated on its node (``Problem.derated``): the
solver's re-check of the running slices keeps the tenants that still fit and moves the others into
another instance (on the node when it has room, else wherever the model places them); a plan that
would drop a running slice for it is not applied (everything keeps running, an event says so). A
cool-down follows either way. The deratings in force enter every later plan, re-optimisation
included, so nothing merges what a scale-out split.

What runs keeps running: a slice whose new intent cannot be admitted keeps its last good placement
(``Degraded``, reason ``NewIntentNotAdmitted``) unless it opts in with the annotation
``flyslice.io/allow-teardown: "true"``, and the other slices are planned around it. So does a slice
that a node stopped heartbeating under when no other node can take that node's NFs (``Degraded``,
reason ``NodeUnavailable``): the NFs on live nodes keep running untouched, those on the lost node stay
desired there, and the slice is planned again when the node returns or the nodes change. A slice whose
planning raises is isolated (``Stalled``) so that it never stops the others.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from flyslice import solver
from flyslice.operator.intake.catalog import Catalog, EdgeNodeSpec, SliceSpec
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.quantities import cpu_millis, memory_bytes
from flyslice.operator.intake.validation import ValidationResult
from flyslice.operator.planning import scale_out as scaling
from flyslice.operator.planning.actions import InstanceAction, node_usage, shared_instances, slice_actions
from flyslice.operator.planning.pipeline import Plan, SlicePlan, plan
from flyslice.operator.planning.reoptimize import (
    Decision,
    Proposal,
    Reoptimizer,
    describe_applied,
    guarantee_of,
    propose,
)
from flyslice.operator.planning.scale_out import ScaleOutSettings, ScaleOutState
from flyslice.solver.model import Assignment, Resources

LOAD_CHANGE = 0.15
HEARTBEAT_TIMEOUT_S = 30.0

#: ``incremental``: running, unchanged slices are held fixed; ``full``: every slice is re-planned.
Admission = Literal["incremental", "full"]
INCREMENTAL_NOTE = (
    "placed with the running slices held fixed (incremental admission): moving running NFs might admit it, "
    "which only the background re-optimisation does"
)


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
    #: A tenant of a shared instance: that instance's id (``spec.sharedInstance.name``).
    shared_instance: str = ""
    #: The agent reports that shared instance overloaded (queue drops sample after sample): the
    #: scale-out signal (``operator/planning/scale_out.py``).
    shared_overloaded: bool = False


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
    #: What the placement's optimality claim is ("restricted: running slices held fixed", ...).
    guarantee: str = ""
    #: Held because these nodes stopped heartbeating and the slice cannot be re-placed without them
    #: (``held`` says why not); the placement kept includes the NFs desired on them.
    unavailable: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControllerState:
    slices: Mapping[str, SliceRecord] = field(default_factory=dict)
    plan_fingerprint: str = ""
    load_at_plan: Mapping[str, float] = field(default_factory=dict)
    plans: int = 0
    #: The last solve's wall time and relative MIP gap (None: not proven / no solve yet), for metrics.
    solve_seconds: float = 0.0
    solve_gap: float | None = None
    #: Nodes, packages and services as last planned: unchanged, a slice that was not admitted then
    #: cannot fit now unless a slice left or changed (see ``_settled_pending``).
    infra_fingerprint: str = ""
    #: Overload seen on shared instances, and the scale-outs' deratings and cool-downs.
    scale_out: ScaleOutState = field(default_factory=ScaleOutState)


@dataclass(frozen=True)
class Outcome:
    actions: tuple[InstanceAction, ...]
    slice_status: Mapping[str, dict[str, Any]]
    state: ControllerState
    replanned: bool
    #: Human-readable decisions, e.g. for Kubernetes Events.
    events: tuple[str, ...] = ()
    #: What this pass did with the re-optimiser's proposal (``None``: it was given none).
    reoptimization: Decision | None = None


def reconcile(
    catalog: Catalog,
    state: ControllerState,
    observation: Observation,
    *,
    now: float,
    revision: str = "",
    options: solver.SolveOptions | None = None,
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
    admission: Admission = "incremental",
    proposal: Proposal | None = None,
    scale_out: ScaleOutSettings | None = None,
) -> Outcome:
    """One pass: what must run, every slice's status and the new memory.

    ``admission`` picks how a re-plan treats running slices (module docstring); it overrides
    ``options.mode``. ``proposal`` is a finished background re-optimisation; it is applied only when
    this pass has nothing else to re-plan, the state is the one it was computed from, and it passes
    the checks (``Outcome.reoptimization`` says what became of it). ``scale_out``: when an overloaded
    shared instance scales out, and the cool-down after it (``operator/planning/scale_out.py``).
    """
    if admission not in ("incremental", "full"):
        raise ValueError(f"reconcile: admission must be 'incremental' or 'full', got {admission!r}")
    events: list[str] = []
    down, live, expired, placeable = _placeable(catalog, state, observation, now, heartbeat_timeout_s)
    for n in sorted(down):
        events.append(f"node {n} has not sent a heartbeat for over {heartbeat_timeout_s:g}s: moving its NFs")
    infra = _infra_fingerprint(placeable)
    fingerprint = _fingerprint(placeable, infra)
    load_moved = _load_moved(catalog, observation, state)
    for n in load_moved:
        events.append(
            f"load on node {n} changed by {LOAD_CHANGE:.0%} or more since the last placement: re-planning"
        )

    # Overloaded shared instances (observed) -> this pass's scale-outs, tried in the plan below.
    scale_settings = scale_out if scale_out is not None else ScaleOutSettings()
    wanted_now = {s.key for s in placeable.slices.values()}
    running_actions = {k: rec.actions for k, rec in state.slices.items() if rec.admitted and k in wanted_now}
    scale = scaling.assess(
        state.scale_out, placeable, running_actions, overloaded_instances(observation),
        now=now, settings=scale_settings,
    )  # fmt: skip
    events += scale.events
    scale_state = scale.state
    needs_plan = fingerprint != state.plan_fingerprint or bool(load_moved) or bool(scale.trials)
    replanned = needs_plan
    records = dict(state.slices)
    load_at_plan = dict(state.load_at_plan)
    plans = state.plans
    solve_seconds, solve_gap = state.solve_seconds, state.solve_gap
    held: dict[str, tuple[str, ...]] = {}
    broken: dict[str, str] = {}
    decision: Decision | None = None
    if proposal is not None:
        if needs_plan:
            decision = _stale(
                proposal,
                "a shared instance is scaled out"
                if scale.trials and fingerprint == state.plan_fingerprint and not load_moved
                else "the desired state or the nodes changed since it started",
            )
        elif proposal.base != state_key(state):
            decision = _stale(proposal, "the placement changed since it started")
        else:
            decision, applied = _apply_proposal(
                proposal, placeable, state, observation, options, now, revision
            )
            if applied is not None:
                records, more = applied
                events += more
                replanned = True
                plans += 1
                load_at_plan = {n: o.load for n, o in observation.nodes.items() if o.load is not None}
        events.append(decision.message)
    if needs_plan:
        running = {key: rec.assignments for key, rec in state.slices.items() if rec.admitted}
        # Incremental: only running slices whose intent is unchanged keep a current placement, which
        # the solver holds fixed while it is complete and still fits; the others are placed anew.
        current = running if admission == "full" else _unchanged(running, state, placeable)
        # The shared instance every running shared NF is a tenant of: the solver keeps instance ids
        # (and so the running processes) stable for the tenants that stay.
        instances = {key: shared_instances(rec.actions) for key, rec in state.slices.items() if rec.admitted}
        opts = replace(options or solver.SolveOptions(), mode=admission)
        background = _background(placeable, observation, state)
        # Slices still refused for the same reasons are not re-tried when only newcomers arrived.
        settled = (
            _settled_pending(state, placeable, infra, bool(load_moved), expired)
            if admission == "incremental"
            else set()
        )
        placeable = replace(
            placeable, slices={k: s for k, s in placeable.slices.items() if s.key not in settled}
        )
        # A scale-out is tried first: its pool derated on its node. The solver re-checks the running
        # slices against it, and tenants that no longer fit are re-placed (scale_out.py). A plan that
        # drops a running slice for it is not applied.
        derated = scale.derated()
        the_plan, broken = _plan_isolating_failures(placeable, opts, current, background, instances, derated)
        if scale.trials:
            lost = _lost(the_plan, broken, current)
            if lost:
                scale_state, said = scaling.refused(scale, lost, now=now, settings=scale_settings)
                derated = scale.derated(with_trials=False)
                the_plan, broken = _plan_isolating_failures(
                    placeable, opts, current, background, instances, derated
                )
            else:
                scale_state, said = scaling.applied(scale, running_actions, the_plan.placement)
            events += said
        # A running slice that the new plan drops keeps its placement; the others are planned again
        # around what it holds, until no further running slice is dropped.
        for _round in range(len(placeable.slices)):
            newly = _to_hold(the_plan, state, set(live.nodes), down)
            if not newly:
                break
            held.update(newly)
            rest = replace(
                placeable,
                slices={
                    k: s for k, s in placeable.slices.items() if s.key not in held and s.key not in broken
                },
            )
            # What held slices run on live nodes stays reserved; their NFs on a lost node reserve nothing
            # (the node is not in this plan; it is planned again, with them, once it returns).
            kept = _usage(state.slices[k].actions for k in held)
            reserved = _add(background, {n: r for n, r in kept.items() if n in live.nodes})
            the_plan, more_broken = _plan_isolating_failures(
                rest, opts, current, reserved, instances, derated
            )
            broken.update(more_broken)
        plans += 1
        solve_seconds, solve_gap = the_plan.placement.seconds, the_plan.placement.gap
        load_at_plan = {n: o.load for n, o in observation.nodes.items() if o.load is not None}
        records = {k: v for k, v in records.items() if k in expired or k in settled}
        held_fixed = admission == "incremental" and any(
            sp.placement.admitted
            and sp.slice.key in current
            and sp.placement.assignments == current[sp.slice.key]
            for sp in the_plan.slices
        )
        guarantee = guarantee_of(the_plan.placement, opts, held_fixed=held_fixed)
        for sp in the_plan.slices:
            key = sp.slice.key
            note = held_fixed and key not in the_plan.unplaced
            rec, said = _record(placeable, sp, state.slices.get(key), now, revision, guarantee, note)
            records[key] = rec
            events += said
        for key, reasons in held.items():
            old = state.slices[key]
            on_lost = tuple(sorted({a.node for a in old.actions if a.node in down}))
            teardown = (
                ""
                if old.held == reasons and old.unavailable == on_lost
                else ' (set the annotation flyslice.io/allow-teardown: "true" to tear it down instead)'
            )
            if on_lost and (old.held != reasons or old.unavailable != on_lost):
                events.append(
                    f"slice {key}: node unavailable, keeping the last good placement: "
                    f"{_node_loss(old.actions, on_lost, reasons, heartbeat_timeout_s)}{teardown}"
                )
            elif old.held != reasons or old.unavailable != on_lost:
                events.append(
                    f"slice {key}: new intent not admitted, keeping the last good placement "
                    f"({len(old.actions)} NF(s)): {'; '.join(reasons)}{teardown}"
                )
            records[key] = replace(
                old,
                fingerprint=_slice_fingerprint(placeable, key),
                held=reasons,
                stalled="",
                unavailable=on_lost,
            )
        for key, error in broken.items():
            prior = state.slices.get(key)
            if prior is None or prior.stalled != error:
                events.append(f"slice {key}: cannot be planned, keeping what runs: {error}")
            records[key] = (
                replace(prior, stalled=error) if prior is not None else _stalled_record(error, revision)
            )
    # Slices removed from the desired state are forgotten; their instances are pruned because
    # they are no longer in the action list.
    wanted = {s.key for s in catalog.slices.values()}
    records = {k: v for k, v in records.items() if k in wanted}
    for key in expired:
        if key in records and records[key].actions:
            events.append(f"slice {key}: lifetime over, tearing down")
            records[key] = replace(records[key], actions=(), assignments={})

    all_actions = tuple(a for rec in records.values() for a in rec.actions)
    statuses = {
        key: _status(
            catalog.slices[_split(key)], rec, observation, expired=key in expired, timeout=heartbeat_timeout_s
        )
        for key, rec in records.items()
    }
    new_state = ControllerState(
        records, fingerprint, load_at_plan, plans, solve_seconds, solve_gap, infra, scale_state
    )
    return Outcome(all_actions, statuses, new_state, replanned, tuple(events), decision)


def _placeable(
    catalog: Catalog, state: ControllerState, observation: Observation, now: float, heartbeat_timeout_s: float
) -> tuple[set[str], Catalog, set[str], Catalog]:
    """(nodes down, the catalog without them, slices whose lifetime is over, what may be placed)."""
    down = unavailable_nodes(catalog, observation, now, heartbeat_timeout_s)
    live = replace(catalog, nodes={k: v for k, v in catalog.nodes.items() if k not in down})
    expired = {
        key for key, rec in state.slices.items() if rec.expires_at is not None and now >= rec.expires_at
    }
    placeable = replace(live, slices={k: s for k, s in live.slices.items() if s.key not in expired})
    return down, live, expired, placeable


def _unchanged(
    running: Mapping[str, Mapping[str, Assignment]], state: ControllerState, catalog: Catalog
) -> dict[str, Mapping[str, Assignment]]:
    """The running slices whose placement-relevant intent is what it was when they were placed.

    A record without a fingerprint (adopted from the cluster after a restart) counts as unchanged:
    the solver still re-places it if its placement is incomplete or no longer valid.
    """
    keys = {s.key for s in catalog.slices.values()}
    return {
        k: a
        for k, a in running.items()
        if k in keys
        and (not state.slices[k].fingerprint or state.slices[k].fingerprint == _slice_fingerprint(catalog, k))
    }


def _record(
    catalog: Catalog,
    sp: SlicePlan,
    old: SliceRecord | None,
    now: float,
    revision: str,
    guarantee: str,
    incremental_note: bool,
) -> tuple[SliceRecord, list[str]]:
    """The record of one planned slice, and the events its change deserves."""
    key = sp.slice.key
    events: list[str] = []
    first = old.first_placed_at if old and old.first_placed_at is not None else None
    if sp.placement.admitted and first is None:
        first = now
    expires = first + sp.slice.lifetime_s if first is not None and sp.slice.lifetime_s else None
    actions: tuple[InstanceAction, ...] = ()
    if sp.service is not None and sp.demand is not None:
        actions = tuple(slice_actions(catalog, sp.slice, sp.service, sp.demand, sp.placement))
    moved = _moves(old, sp.placement.assignments) if old else 0
    if old and old.unavailable and sp.placement.admitted:
        back = ", ".join(old.unavailable)
        events.append(
            f"slice {key}: re-placed, {moved} NF(s) moved off unavailable node(s) {back}"
            if moved
            else f"slice {key}: node(s) {back} available again, the kept placement is admitted as it was"
        )
    elif old and old.held and sp.placement.admitted:
        events.append(f"slice {key}: new intent admitted, {moved} NF(s) moved")
    elif old and moved:
        events.append(f"slice {key}: re-placed, {moved} NF(s) moved")
    elif (not old or not old.admitted) and sp.placement.admitted:
        events.append(f"slice {key}: placed {len(actions)} NF(s)")
    reasons = tuple(sp.placement.reasons)
    if not sp.placement.admitted:
        if incremental_note and not any("fixed" in r for r in reasons):
            reasons += (INCREMENTAL_NOTE,)
        events.append(f"slice {key}: not admitted: {'; '.join(reasons)}")
    unmoved = old is not None and old.admitted and dict(old.assignments) == dict(sp.placement.assignments)
    record = SliceRecord(
        fingerprint=_slice_fingerprint(catalog, key),
        admitted=sp.placement.admitted,
        service=sp.service.name if sp.service else None,
        assignments=dict(sp.placement.assignments),
        path_latency_ms=dict(sp.placement.path_latency_ms),
        budget_ms=sp.slice.max_latency_ms,
        reasons=reasons,
        first_placed_at=first,
        expires_at=expires,
        revision=revision or (old.revision if old else ""),
        actions=actions,
        # A slice that did not move keeps the claim it was placed with (held fixed, it was not re-judged).
        guarantee=(old.guarantee if unmoved and old is not None and old.guarantee else guarantee)
        if sp.placement.admitted
        else "",
    )
    return record, events


def state_key(state: ControllerState) -> str:
    """What a background proposal depends on: the planned desired state, the loads and every placement."""
    slices = [
        [k, r.fingerprint, r.admitted, _placed_on(r.assignments), list(r.held), r.stalled]
        for k, r in sorted(state.slices.items())
    ]
    doc: list[Any] = [state.plan_fingerprint, sorted(state.load_at_plan.items()), slices]
    if derated := state.scale_out.in_force():  # a proposal made before a scale-out would undo it
        doc.append(sorted(derated.items()))
    return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()


def _placed_on(assignments: Mapping[str, Assignment]) -> list[tuple[str, str, str]]:
    return sorted((nf, a.host, str(a.flavor)) for nf, a in assignments.items())


def reoptimization_job(
    catalog: Catalog,
    state: ControllerState,
    observation: Observation,
    *,
    now: float,
    options: solver.SolveOptions | None = None,
    migration_budget: int | None = None,
    heartbeat_timeout_s: float = HEARTBEAT_TIMEOUT_S,
) -> Callable[[], Proposal] | None:
    """A background re-optimisation of ``state`` (after the pass that produced it), or ``None``.

    Cheap: it gathers the inputs of the pass; the returned job does the solving and is meant for a
    worker thread. ``None`` when nothing runs, or when the next pass re-plans anyway.
    """
    _down, _live, _expired, placeable = _placeable(catalog, state, observation, now, heartbeat_timeout_s)
    if _fingerprint(placeable) != state.plan_fingerprint or _load_moved(catalog, observation, state):
        return None
    keep = _kept_aside(state)
    keys = {s.key for s in placeable.slices.values()}
    running = {
        k: rec.assignments for k, rec in state.slices.items() if rec.admitted and k not in keep and k in keys
    }
    if not running:
        return None
    cat, background = _reoptimised_part(placeable, state, observation, keep)
    base = state_key(state)
    instances = {k: shared_instances(state.slices[k].actions) for k in running}
    derated = state.scale_out.in_force()

    def job() -> Proposal:
        return propose(
            cat,
            running,
            background,
            base=base,
            options=options,
            migration_budget=migration_budget,
            current_instances=instances,
            derated=derated,
        )

    return job


def schedule_reoptimization(
    reoptimizer: Reoptimizer,
    catalog: Catalog,
    state: ControllerState,
    observation: Observation,
    *,
    now: Callable[[], float],
    options: solver.SolveOptions | None,
    heartbeat_timeout_s: float,
    replanned: bool,
) -> None:
    """After a pass (embedded or operator): start a background re-optimisation of the state it left,
    when one is due (the re-optimiser decides; this returns at once)."""
    settings = reoptimizer.settings
    if not settings.enabled:
        return
    reoptimizer.after_pass(
        lambda: reoptimization_job(
            catalog,
            state,
            observation,
            now=now(),
            options=options,
            migration_budget=settings.migration_budget,
            heartbeat_timeout_s=heartbeat_timeout_s,
        ),
        replanned=replanned,
        base=lambda: state_key(state),
    )


def _kept_aside(state: ControllerState) -> set[str]:
    """Slices re-optimisation leaves alone: held (new intent not admitted) and stalled ones."""
    return {k for k, rec in state.slices.items() if rec.held or rec.stalled}


def _reoptimised_part(
    placeable: Catalog, state: ControllerState, observation: Observation, keep: set[str]
) -> tuple[Catalog, dict[str, Resources]]:
    cat = replace(placeable, slices={k: s for k, s in placeable.slices.items() if s.key not in keep})
    reserved = _usage(state.slices[k].actions for k in keep if k in state.slices)
    return cat, _add(_background(placeable, observation, state), reserved)


def _stale(proposal: Proposal, why: str) -> Decision:
    return Decision(
        "stale",
        f"re-optimisation: proposal not applied, {why} (objective {proposal.objective_before:.3f} -> "
        f"{proposal.objective_after:.3f} was computed for an older state)",
        proposal.objective_before,
        proposal.objective_after,
        proposal.moved,
    )


def _apply_proposal(
    proposal: Proposal,
    placeable: Catalog,
    state: ControllerState,
    observation: Observation,
    options: solver.SolveOptions | None,
    now: float,
    revision: str,
) -> tuple[Decision, tuple[dict[str, SliceRecord], list[str]] | None]:
    """Check a current proposal independently of the model that made it; the new records if it passes.

    The check is the reconcile pass's own: the proposal's placements are handed to the solver as the
    running ones in incremental mode, which keeps each only if it is complete and valid against the
    capacity, bandwidth, budgets and availability of now (the background load included). Every slice
    the proposal admits must come back exactly as proposed; no running slice may be torn down unless it
    allows it; no more running NFs may move than the migration budget allows.
    """
    figures = (proposal.objective_before, proposal.objective_after, proposal.moved)

    def refused(why: str) -> tuple[Decision, None]:
        return Decision("refused", f"re-optimisation: proposal refused, {why}", *figures), None

    keep = _kept_aside(state)
    cat, background = _reoptimised_part(placeable, state, observation, keep)
    specs = {s.key: s for s in cat.slices.values()}
    running = {k: rec for k, rec in state.slices.items() if rec.admitted and k in specs}
    dropped = sorted(k for k in running if k not in proposal.assignments and not specs[k].allow_teardown)
    if dropped:
        return refused(f"it would tear down running slice(s) {', '.join(dropped)}")
    moved = sum(
        1
        for k, a in proposal.assignments.items()
        if k in running
        for nf, where in a.items()
        if running[k].assignments.get(nf) != where
    )
    budget = proposal.migration_budget
    if budget is not None and moved > budget:
        return refused(f"it moves {moved} running NF(s), over the migration budget of {budget}")
    opts = replace(options or solver.SolveOptions(), mode="incremental")
    try:
        # Running slices outside the proposal keep their instances; proposed ones are checked in
        # the proposal's own packing (see Proposal.instances).
        instances: dict[str, Mapping[str, str]] = {
            k: shared_instances(rec.actions) for k, rec in running.items()
        }
        instances.update(proposal.instances)
        the_plan = plan(
            cat,
            options=opts,
            current=proposal.assignments,
            background=background,
            current_instances=instances,
            derated=state.scale_out.in_force(),
        )
    except Exception as exc:  # the pass goes on with what runs
        return refused(f"its check raised {type(exc).__name__}: {exc}")
    by_key = {sp.slice.key: sp for sp in the_plan.slices}
    for key, wanted in sorted(proposal.assignments.items()):
        sp = by_key.get(key)
        if sp is None or not sp.placement.admitted or dict(sp.placement.assignments) != dict(wanted):
            why = "; ".join(sp.placement.reasons) if sp is not None and sp.placement.reasons else "changed"
            return refused(f"slice {key} fails the independent check ({why})")
    records = dict(state.slices)
    events: list[str] = []
    for sp in the_plan.slices:
        key = sp.slice.key
        proposed = key in proposal.assignments
        claim = proposal.guarantee if proposed else guarantee_of(the_plan.placement, opts, held_fixed=True)
        records[key], said = _record(cat, sp, state.slices.get(key), now, revision, claim, not proposed)
        events += said
    return Decision("applied", describe_applied(proposal), *figures), (records, events)


def _plan_isolating_failures(
    catalog: Catalog,
    options: solver.SolveOptions | None,
    current: Mapping[str, Mapping[str, Assignment]],
    background: Mapping[str, Resources],
    instances: Mapping[str, Mapping[str, str]] | None = None,
    derated: Mapping[tuple[str, str], float] | None = None,
) -> tuple[Plan, dict[str, str]]:
    """Plan every slice; when planning raises, find the slices it raises on and plan the rest.

    Raises only when the failure is not one slice's (a node or package breaks every plan): then the
    whole pass fails and the caller reports it as stalled.
    """

    def run(cat: Catalog) -> Plan:
        return plan(
            cat,
            options=options,
            current=current,
            background=background,
            current_instances=instances,
            derated=derated,
        )

    try:
        return run(catalog), {}
    except Exception as whole:
        broken: dict[str, str] = {}
        for key, spec in catalog.slices.items():
            try:
                run(replace(catalog, slices={key: spec}))
            except Exception as exc:
                broken[spec.key] = f"{type(exc).__name__}: {exc}"
        if not broken or len(broken) == len(catalog.slices):
            raise whole
        rest = replace(catalog, slices={k: s for k, s in catalog.slices.items() if s.key not in broken})
        return run(rest), broken


def _lost(
    the_plan: Plan, broken: Mapping[str, str], current: Mapping[str, Mapping[str, Assignment]]
) -> dict[str, tuple[str, ...]]:
    """Running slices (``current``) that a plan does not admit, with the reasons it gives."""
    by_key = {sp.slice.key: sp for sp in the_plan.slices}
    out: dict[str, tuple[str, ...]] = {}
    for key in current:
        if key in broken:
            out[key] = (broken[key],)
        elif (sp := by_key.get(key)) is not None and not sp.placement.admitted:
            out[key] = tuple(sp.placement.reasons)
    return out


def overloaded_instances(obs: Observation) -> dict[str, bool]:
    """Shared instance id -> whether a tenant's agent reports it overloaded (one report suffices: the
    flag is the instance's, every tenant carries the same one)."""
    out: dict[str, bool] = {}
    for o in obs.instances.values():
        if o.shared_instance:
            out[o.shared_instance] = out.get(o.shared_instance, False) or o.shared_overloaded
    return out


def _to_hold(
    the_plan: Plan, state: ControllerState, live_nodes: set[str], down: set[str]
) -> dict[str, tuple[str, ...]]:
    """Slices the plan does not admit whose last good placement should keep running instead.

    A placement with NFs on a node that stopped heartbeating (``down``) is kept too: its NFs on live
    nodes must not stop because the lost ones have nowhere else to go, and the node may come back.
    A node removed from the desired state is not coming back: such a placement is not kept.
    """
    held = {}
    for sp in the_plan.slices:
        old = state.slices.get(sp.slice.key)
        if sp.placement.admitted or old is None or not old.admitted or not old.actions:
            continue
        if sp.slice.allow_teardown:
            continue
        if any(a.node not in live_nodes and a.node not in down for a in old.actions):
            continue  # part of it ran on a node removed from the desired state: no whole placement to keep
        held[sp.slice.key] = tuple(sp.placement.reasons) or ("the solver did not admit it",)
    return held


def _node_loss(
    actions: Iterable[InstanceAction], lost: tuple[str, ...], reasons: Iterable[str], timeout: float
) -> str:
    """Why a slice is held on a lost node, and what of it keeps running (event and status)."""
    on_lost = sum(1 for a in actions if a.node in lost)
    on_live = sum(1 for a in actions if a.node not in lost)
    nodes = ", ".join(lost)
    return (
        f"node(s) {nodes} unavailable (no heartbeat for over {timeout:g}s) and the slice cannot be "
        f"re-placed: {'; '.join(reasons)}; keeping the {on_live} NF(s) on live nodes running and the "
        f"{on_lost} on {nodes} desired there until it returns"
    )


def _usage(actions: Any) -> dict[str, Resources]:
    # A shared instance is reserved once per node, however many of these slices are its tenants.
    return node_usage((a for group in actions for a in group), _cpu, _memory)


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


def unavailable_nodes(catalog: Catalog, obs: Observation, now: float, timeout: float) -> set[str]:
    """Nodes whose last heartbeat is older than ``timeout``: their NFs are moved elsewhere."""
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
    if not any(o.load is not None for o in obs.nodes.values()):
        return {}
    # What flyslice runs, each shared instance counted once (its agent reports it once in the load).
    ours = {n: r.cpu_millis for n, r in _usage(rec.actions for rec in state.slices.values()).items()}
    out = {}
    for name, node in catalog.nodes.items():
        o = obs.nodes.get(name)
        if o is None or o.load is None:
            continue
        other = int(o.load * node.cpu_millis) - ours.get(name, 0)
        if other > 0:
            out[name] = Resources(cpu_millis=min(other, node.cpu_millis), memory_bytes=0)
    return out


@functools.lru_cache(maxsize=1024)
def _cpu(quantity: str | int | float) -> int:
    # Every pass sums every instance's CPU; the same few quantities are parsed over and over.
    return cpu_millis(quantity)


@functools.lru_cache(maxsize=1024)
def _memory(quantity: str | int | float) -> int:
    return memory_bytes(quantity)


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


def _fingerprint(catalog: Catalog, infra: str | None = None) -> str:
    doc = {
        "infra": _infra_fingerprint(catalog) if infra is None else infra,
        "slices": [repr(catalog.slices[k]) for k in sorted(catalog.slices)],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _infra_fingerprint(catalog: Catalog) -> str:
    doc = {
        "nodes": [_node_fingerprint(catalog.nodes[k]) for k in sorted(catalog.nodes)],
        "packages": [repr(catalog.packages[k]) for k in sorted(catalog.packages)],
        "services": [repr(catalog.services[k]) for k in sorted(catalog.services)],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _settled_pending(
    state: ControllerState, catalog: Catalog, infra: str, load_moved: bool, expired: set[str]
) -> set[str]:
    """Slices refused by the last plan that this incremental pass need not try again.

    When the nodes (live ones included), packages and services are as last planned, no load moved,
    and every slice of the last plan is still there with the same intent, the only news is new slices:
    the running ones stay fixed and the newcomers only take capacity, so what did not fit still does
    not (its status and reasons stand). Anything else — a slice removed, expired or changed, a node
    down, back, added or resized — frees or moves capacity, and every refused slice is tried again.
    """
    if load_moved or not state.infra_fingerprint or infra != state.infra_fingerprint:
        return set()
    keys = {s.key for s in catalog.slices.values()}
    for key, rec in state.slices.items():
        if key in expired and not rec.actions:
            continue  # torn down before: nothing of it is freed now
        if key not in keys or not rec.fingerprint or rec.fingerprint != _slice_fingerprint(catalog, key):
            return set()
    return {k for k, rec in state.slices.items() if not rec.admitted and not rec.stalled}


def _slice_fingerprint(catalog: Catalog, key: str) -> str:
    """The slice's intent as far as placement goes: a change here re-places it under incremental admission.

    Configuration, lifetime, generation and the teardown annotation are left out: they change what an
    instance does or how long it lives, not where it may run, and the running placement stays.
    """
    s = catalog.slices[_split(key)]
    # Compared, never parsed: the repr of the placement-relevant fields is enough (and cheap per pass).
    # Sharing forbidden is appended only when set, so that the fingerprints of other slices stay as they were.
    return repr((s.max_latency_ms, s.availability, s.attachments, sorted(s.services), s.network_service_ref,
                 s.isolation_required, s.priority) + (("sharing", s.sharing),) * (s.sharing == "forbidden"))  # fmt: skip


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None


def _status(
    slice_: SliceSpec,
    rec: SliceRecord,
    obs: Observation,
    *,
    expired: bool,
    timeout: float = HEARTBEAT_TIMEOUT_S,
) -> dict[str, Any]:
    placement = []
    states: list[str] = []
    observed: list[float] = []
    for action in rec.actions:
        o = obs.instances.get((action.namespace, action.name))
        state = o.state if o else "Pending"
        if action.node in rec.unavailable:
            # Whatever its agent said last is stale: nobody knows whether it still runs.
            state = "Unknown"
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
        shared = action.spec.get("sharedInstance")
        if isinstance(shared, Mapping) and shared.get("name"):
            entry["sharedInstance"] = shared["name"]
        if o is not None and o.restarts:
            entry["restarts"] = o.restarts
        placement.append(entry)
    reasons = list(rec.reasons)
    if rec.stalled:
        reasons.insert(0, f"planning failed, keeping what runs: {rec.stalled}")
    if rec.unavailable:
        reasons.insert(0, _node_loss(rec.actions, rec.unavailable, rec.held, timeout))
    elif rec.held:
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
    if rec.guarantee and rec.admitted:
        status["placementGuarantee"] = rec.guarantee
    return status


def _msg(obs: Observation, ns: str, name: str) -> str:
    o = obs.instances.get((ns, name))
    return o.message if o else ""


def _conditions(phase: str, rec: SliceRecord, reasons: list[str]) -> list[dict[str, Any]]:
    def cond(kind: str, ok: bool, reason: str, message: str) -> dict[str, Any]:
        return {"type": kind, "status": "True" if ok else "False", "reason": reason, "message": message}

    detail = "; ".join(reasons)
    held_why = "NodeUnavailable" if rec.unavailable else "NewIntentNotAdmitted"
    why = "PlanningFailed" if rec.stalled else held_why if rec.held else phase
    placed_reason = "Placed" if rec.admitted else "PlanningFailed" if rec.stalled else "Infeasible"
    # kstatus (docs/health-checks.md): Reconciling while flyslice still acts toward this generation on its
    # own; Stalled when it cannot get there without the user: planning failed, the intent is infeasible,
    # or a lost node's NFs have nowhere to go (it must come back, or capacity be added).
    stuck = "PlanningFailed" if rec.stalled else held_why if rec.held else ""
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
