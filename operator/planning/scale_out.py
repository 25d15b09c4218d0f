"""Scale-out of overloaded shared instances (issue 15; docs/sharing.md, "Scale-out"). Pure: no I/O.

The agents report, per shared instance, whether its queue has dropped messages in each of its last
samples (*overloaded*). The reconcile core feeds that observation through :func:`assess`, which
decides, pass by pass:

* **Sustained.** An instance scales out only once it has been reported overloaded in every pass for
  at least ``ScaleOutSettings.sustain_s`` (a pass without the report restarts the count). The agent
  already needs drops in each of its last samples; the controller's own window keeps one slow pass or
  a burst that outlives the agent's samples from moving tenants.
* **Derating.** Its pool on its node is then planned with a capacity below the load it carried
  (``Problem.derated[(pool, node)]``): the capacity of the most even split of its tenants' predicted
  loads into *two* instances (the smallest capacity with which they fit in two; µNF likewise adds one
  instance per scale-out). It is below the instance's load whenever two of its tenants carry load, so
  the solver must open another instance (on the node or another one) and move tenants into it, and it
  is at least the largest tenant's load, so no tenant is shut out of the node by it.
* **Who moves.** Incremental admission holds a running slice fixed only while its placement is still
  valid, and the solver's checker re-packs the running tenants against the derated capacity (in
  priority order, each into the instance it runs in while that has room): the tenants that still fit
  stay where they are, untouched; the others join another instance of the pool on the node, opened
  when the node has room for it (a tenant that changes instance on its node is not a migration), and
  a tenant with no room left on its node makes its slice no longer fixed, so the model re-places it,
  typically into an instance on another node, at the migration cost of any move. Releasing every
  tenant of the overloaded instance instead (dropping them from the running placement) was tried and
  is worse: without their migration cost the model moved all four tenants of the example to one new
  instance on the neighbouring node, which is a move of the overload, not a scale-out
  (tests/operator/test_sharing_scale_out.py, the "another node" case, checks the split instead).
* **Trial.** The pass plans with the derating first; when that plan drops a running slice (no room for
  another instance anywhere), the scale-out is not applied: the pass plans as if nothing had been
  observed, everything keeps running, and an event says so.
* **Cool-down.** A scale-out (applied or not) starts a cool-down of ``cooldown_s`` for its pool on
  its node: no instance of that pool there scales out again before it ends, however overloaded (the
  new instance may still be starting, the old one still draining its queue). An instance still
  overloaded after the cool-down scales out again, from the derated capacity down.
* **No oscillation.** An applied derating is a measurement of what one instance of that pool carries
  on that node, and it stays after the cool-down although the overload is gone: the overload is gone
  *because* of the derating, and dropping it would let the solver merge the instances again (one
  instance costs less) into the instance that was overloaded. It goes only when nothing of the pool
  runs on that node any more (after the cool-down), or the package changes (new code or declared
  capacity: the measurement no longer applies). It is kept in the controller's memory, so a restart
  of the controller forgets it (the instances stay split until a re-plan merges them, and an overload
  then scales them out again).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.planning import expansion, service_choice
from flyslice.operator.planning.actions import InstanceAction, nf_id_of
from flyslice.solver.model import Placement

#: Five minutes between two scale-outs of one pool on one node (µNF's cool-down timer does the same job).
DEFAULT_COOLDOWN_S = 300.0
#: Overload reported in every pass for this long before tenants move.
DEFAULT_SUSTAIN_S = 15.0
#: Tenants up to which the two-instance split is found exactly (2^(n-1) subsets); above, greedily.
EXACT_SPLIT_TENANTS = 16

#: (slice key, NF id): one tenant of a shared instance.
Tenant = tuple[str, str]
#: (pool, node)
Group = tuple[str, str]


@dataclass(frozen=True)
class ScaleOutSettings:
    #: Seconds after a scale-out during which its pool on its node does not scale out again.
    cooldown_s: float = DEFAULT_COOLDOWN_S
    #: Seconds an instance must be reported overloaded in every pass; ``None`` switches scale-out off.
    sustain_s: float | None = DEFAULT_SUSTAIN_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cooldown_s) and self.cooldown_s >= 0):
            raise ValueError(f"scale-out cool-down must be 0 or more seconds, got {self.cooldown_s!r}")
        if self.sustain_s is not None and not (math.isfinite(self.sustain_s) and self.sustain_s >= 0):
            raise ValueError(f"scale-out sustain time must be 0 or more seconds, got {self.sustain_s!r}")

    @property
    def enabled(self) -> bool:
        return self.sustain_s is not None


@dataclass(frozen=True)
class Derating:
    """A pool's capacity on one node, lowered by a scale-out, and the cool-down that scale-out started."""

    pool: str
    node: str
    capacity_mbps: float
    #: The overloaded instance that caused it.
    instance: str
    since: float
    cooldown_until: float
    #: The pool's flavour as declared when it was set; a changed package drops the derating.
    package: str
    #: False: the scale-out could not be applied; only the cool-down holds (the capacity is not used).
    applied: bool = True

    @property
    def group(self) -> Group:
        return (self.pool, self.node)


@dataclass(frozen=True)
class ScaleOutState:
    """What the controller remembers about overload between passes."""

    #: Shared instance id -> since when it has been reported overloaded in every pass.
    overloaded_since: Mapping[str, float] = field(default_factory=dict)
    deratings: Mapping[Group, Derating] = field(default_factory=dict)
    #: Shared instance id -> the notes already given for its current overload (said once, not every pass).
    noted: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def in_force(self) -> dict[Group, float]:
        """``Problem.derated``: the applied deratings."""
        return {g: d.capacity_mbps for g, d in self.deratings.items() if d.applied}


@dataclass(frozen=True)
class Trial:
    """One scale-out this pass tries: its derating, and the tenants not held fixed for it."""

    derating: Derating
    #: Overloaded instance id -> its tenants now.
    tenants: Mapping[str, tuple[Tenant, ...]]
    #: Predicted load of the overloaded instances (Mbit/s, the sum of their tenants' loads).
    load_mbps: float
    overloaded_for_s: float


@dataclass(frozen=True)
class Assessment:
    """What :func:`assess` decided for one pass, before planning."""

    state: ScaleOutState
    trials: tuple[Trial, ...] = ()
    events: tuple[str, ...] = ()

    def derated(self, *, with_trials: bool = True) -> dict[Group, float]:
        out = self.state.in_force()
        if with_trials:
            out.update({t.derating.group: t.derating.capacity_mbps for t in self.trials})
        return out


def split_id(instance: str) -> Group | None:
    """``(pool, node)`` of a shared instance id ``pool@node#n``; ``None`` when it is not one."""
    head, hash_, n = instance.rpartition("#")
    pool, at, node = head.rpartition("@")
    if not (hash_ and at and pool and node and n.isdigit()):
        return None
    return pool, node


def tenancies(running: Mapping[str, Sequence[InstanceAction]]) -> dict[str, tuple[Tenant, ...]]:
    """Shared instance id -> its tenants, from what runs (each slice's NFInstances)."""
    out: dict[str, list[Tenant]] = {}
    for key, actions in running.items():
        for a in actions:
            shared = a.spec.get("sharedInstance")
            if isinstance(shared, Mapping) and shared.get("name"):
                out.setdefault(str(shared["name"]), []).append((key, nf_id_of(a.spec)))
    return {iid: tuple(sorted(ts)) for iid, ts in out.items()}


def assess(
    prior: ScaleOutState,
    catalog: Catalog,
    running: Mapping[str, Sequence[InstanceAction]],
    overloaded: Mapping[str, bool],
    *,
    now: float,
    settings: ScaleOutSettings,
) -> Assessment:
    """Track overload, drop deratings that no longer apply and pick this pass's scale-outs (module doc).

    ``running``: slice key -> its NFInstances (what runs); ``overloaded``: shared instance id -> what
    the agents report now (an instance not reported counts as not overloaded).
    """
    if not settings.enabled:
        return Assessment(ScaleOutState(deratings=prior.deratings))
    assert settings.sustain_s is not None
    tenants_of = tenancies(running)
    since = {
        iid: prior.overloaded_since.get(iid, now)
        for iid, hot in overloaded.items()
        if hot and iid in tenants_of
    }
    noted = {iid: n for iid, n in prior.noted.items() if iid in since}
    events: list[str] = []
    deratings = dict(prior.deratings)
    occupied = {g for iid in tenants_of if (g := split_id(iid)) is not None}
    for g, old in sorted(prior.deratings.items()):
        cooling = now < old.cooldown_until
        if _declared(catalog, old.pool) != old.package:
            del deratings[g]
            if old.applied:
                events.append(f"{_head('ScaleOutReleased', g)}: the package changed, derating dropped")
        elif not cooling and not old.applied:
            del deratings[g]  # a scale-out that could not be applied: only its cool-down was kept
        elif not cooling and g not in occupied:
            del deratings[g]
            events.append(
                f"{_head('ScaleOutReleased', g)}: no tenant runs there any more, derating to "
                f"{old.capacity_mbps:g} Mbit/s dropped"
            )
    trials: dict[Group, Trial] = {}
    loads: dict[Tenant, float] | None = None
    for iid in sorted(since):
        held_for = now - since[iid]
        g = split_id(iid)
        if g is None or held_for < settings.sustain_s:
            continue
        said = noted.get(iid, frozenset())
        d = deratings.get(g)
        if d is not None and now < d.cooldown_until:
            if "held" not in said:
                events.append(
                    f"{_head('ScaleOutHeld', g)}: {iid} is overloaded, but the cool-down of the last scale-out "
                    f"runs until {_iso(d.cooldown_until)}"
                )
                noted[iid] = said | {"held"}
            continue
        tenants = tenants_of[iid]
        if len(tenants) < 2:
            if "single" not in said:
                events.append(
                    f"{_head('ScaleOutSkipped', g)}: {iid} is overloaded with a single tenant "
                    f"({tenants[0][0]} {tenants[0][1]}); another instance cannot take part of it"
                )
                noted[iid] = said | {"single"}
            continue
        if loads is None:
            loads = tenant_loads(catalog, (t for ts in tenants_of.values() for t in ts))
        mine = [loads.get(t, 0.0) for t in tenants]
        total = math.fsum(mine)
        capacity = split_capacity(mine)
        if d is not None and d.applied:
            capacity = min(capacity, d.capacity_mbps)
        if not capacity < total * (1 - 1e-9):
            if "unsplittable" not in said:
                events.append(
                    f"{_head('ScaleOutSkipped', g)}: {iid} is overloaded, but its tenants' predicted load "
                    f"({', '.join(f'{x:g}' for x in mine)} Mbit/s) cannot be split over two instances "
                    "(declare bandwidth on the service graph's edges: it is what a tenant's load is)"
                )
                noted[iid] = said | {"unsplittable"}
            continue
        earlier = trials.get(g)
        if earlier is not None:  # two overloaded instances of one pool on one node: one scale-out for both
            capacity = min(capacity, earlier.derating.capacity_mbps)
            total += earlier.load_mbps
            tenants_map = {**earlier.tenants, iid: tenants}
            held_for = max(held_for, earlier.overloaded_for_s)
        else:
            tenants_map = {iid: tenants}
        derating = Derating(
            g[0], g[1], capacity, iid, now, now + settings.cooldown_s, _declared(catalog, g[0])
        )
        trials[g] = Trial(derating, tenants_map, total, held_for)
    state = ScaleOutState(since, deratings, noted)
    return Assessment(state, tuple(trials[g] for g in sorted(trials)), tuple(events))


def applied(
    assessment: Assessment, running: Mapping[str, Sequence[InstanceAction]], placement: Placement
) -> tuple[ScaleOutState, list[str]]:
    """The state and events once the trials' plan is accepted: deratings in force, tenants moved."""
    deratings = dict(assessment.state.deratings)
    events: list[str] = []
    before = tenancies(running)
    for t in assessment.trials:
        d = t.derating
        deratings[d.group] = d
        n_before = sum(1 for iid in before if split_id(iid) == d.group)
        # The pool's instances on the node now, and those elsewhere that took its tenants.
        after = {i.id: i.host for i in placement.instances.values() if (i.pool, i.host) == d.group}
        moves: list[str] = []
        slice_moves: dict[str, list[str]] = {}
        for iid, tenants in sorted(t.tenants.items()):
            for key, nf in tenants:
                sp = placement.slices.get(key)
                new = sp.instance_of.get(nf) if sp is not None else None
                host = sp.assignments[nf].host if sp is not None and nf in sp.assignments else None
                if new is not None and host is not None:
                    after[new] = host
                if new == iid:
                    continue
                where = (
                    f"{new}" + (f" on node {host}" if host != d.node else "")
                    if new
                    else f"node {host} (not shared)"
                    if host
                    else "nowhere"
                )
                moves.append(f"{key} {nf} -> {where}")
                slice_moves.setdefault(key, []).append(f"{nf} moved from {iid} to {where}")
        overloaded = ", ".join(sorted(t.tenants))
        away = sorted({h for h in after.values() if h != d.node})
        elsewhere = sum(1 for h in after.values() if h != d.node)
        where_else = f", {elsewhere} of them on node {', '.join(away)}" if away else ""
        events.append(
            f"{_head('ScaledOut', d.group)}: {n_before} -> {len(after)} instance(s){where_else} ({overloaded} "
            "overloaded for "
            f"{t.overloaded_for_s:.0f}s carrying {t.load_mbps:g} Mbit/s; capacity there derated to "
            f"{d.capacity_mbps:g} Mbit/s, cool-down until {_iso(d.cooldown_until)}); tenants moved: "
            + ("; ".join(moves) or "none")
        )
        for key, said in sorted(slice_moves.items()):
            events.append(f"slice {key}: scale-out of pool {d.pool} on node {d.node}: {'; '.join(said)}")
    return replace(assessment.state, deratings=deratings), events


def refused(
    assessment: Assessment, lost: Mapping[str, Sequence[str]], *, now: float, settings: ScaleOutSettings
) -> tuple[ScaleOutState, list[str]]:
    """The state and events when the trials' plan would drop running slices (``lost``: key -> reasons):
    nothing changes but a cool-down, so the next attempt waits for it."""
    deratings = dict(assessment.state.deratings)
    events: list[str] = []
    why = "; ".join(f"{k}: {', '.join(r) or 'not admitted'}" for k, r in sorted(lost.items()))
    for t in assessment.trials:
        d = t.derating
        old = deratings.get(d.group)
        until = now + settings.cooldown_s
        # An earlier derating stays in force (it ran fine); a first one is kept only as the cool-down.
        deratings[d.group] = (
            replace(old, cooldown_until=until)
            if old is not None and old.applied
            else replace(d, applied=False, cooldown_until=until)
        )
        events.append(
            f"{_head('ScaleOutNotApplied', d.group)}: {', '.join(sorted(t.tenants))} overloaded for "
            f"{t.overloaded_for_s:.0f}s, but no placement with another instance (capacity "
            f"{d.capacity_mbps:g} Mbit/s each) keeps every running slice ({why}); everything keeps running "
            f"as it is; next attempt after the cool-down ({_iso(until)})"
        )
    return replace(assessment.state, deratings=deratings), events


def split_capacity(loads: Sequence[float]) -> float:
    """The smallest capacity with which ``loads`` fit in two instances: the most even two-way split.

    Exact up to ``EXACT_SPLIT_TENANTS`` loads; beyond, the greedy split (largest first, each to the
    lighter instance), which is within 4/3 of it and still below the total for two loaded tenants.
    """
    xs = sorted((max(0.0, float(x)) for x in loads), reverse=True)
    total = math.fsum(xs)
    if len(xs) < 2:
        return total
    if len(xs) <= EXACT_SPLIT_TENANTS:
        best = total
        first, rest = xs[0], xs[1:]
        for mask in itertools.product((0, 1), repeat=len(rest)):
            one = first + math.fsum(x for x, m in zip(rest, mask, strict=True) if m)
            best = min(best, max(one, total - one))
        return best
    bins = [0.0, 0.0]
    for x in xs:
        bins[bins.index(min(bins))] += x
    return max(bins)


def tenant_loads(catalog: Catalog, tenants: Iterable[Tenant]) -> dict[Tenant, float]:
    """Each tenant's predicted load (``NFDemand.load_mbps``), from its slice's expanded service."""
    wanted: dict[str, set[str]] = {}
    for key, nf_id in tenants:
        wanted.setdefault(key, set()).add(nf_id)
    by_key = {s.key: s for s in catalog.slices.values()}
    out: dict[Tenant, float] = {}
    for key, ids in wanted.items():
        spec = by_key.get(key)
        service = service_choice.choose(catalog, spec).service if spec is not None else None
        if spec is None or service is None:
            continue
        try:
            demand = expansion.slice_demand(catalog, spec, service)
        except expansion.ExpansionError:
            continue  # the slice cannot be planned now; its tenants count as carrying nothing
        for nf in demand.nfs:
            if nf.id in ids:
                out[(key, nf.id)] = nf.load_mbps
    return out


def status(state: ScaleOutState, settings: ScaleOutSettings, now: float) -> dict[str, Any]:
    """The ``scaleOut`` block of the controller status (embedded /status, operator /status)."""
    return {
        "enabled": settings.enabled,
        "sustainS": settings.sustain_s,
        "cooldownS": settings.cooldown_s,
        "overloaded": [
            {"instance": iid, "forS": round(now - t, 3)} for iid, t in sorted(state.overloaded_since.items())
        ],
        "deratings": [
            {
                "pool": d.pool,
                "node": d.node,
                "capacityMbps": d.capacity_mbps if d.applied else None,
                "applied": d.applied,
                "instance": d.instance,
                "since": _iso(d.since),
                "coolDownUntil": _iso(d.cooldown_until),
                "coolingDown": now < d.cooldown_until,
            }
            for _, d in sorted(state.deratings.items())
        ],
    }


def _declared(catalog: Catalog, pool: str) -> str:
    """The pool's flavour as declared (``namespace/package/flavour/config``), for change detection."""
    parts = pool.split("/")
    if len(parts) != 4:
        return ""
    package = catalog.packages.get((parts[0], parts[1]))
    flavor = package.flavors.get(parts[2]) if package is not None else None
    return repr(flavor) if flavor is not None else ""


def _head(reason: str, group: Group) -> str:
    return f"{reason}: pool {group[0]} on node {group[1]}"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
