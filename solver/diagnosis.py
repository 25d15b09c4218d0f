"""Reasons a user can act on when a slice cannot be admitted.

Cheap per-NF pre-checks come first (runtime, isolation, tier, latency reach, free capacity);
only when each NF could go somewhere on its own do we solve the slice alone with one
constraint family dropped at a time (capacity, latency, availability, bandwidth) to name the
family that makes it infeasible. With NF sharing, an NF fits where it could join a running
instance with room or open one (``Shares``); the relaxation solves may join running instances too,
and their capacity family includes the instances' capacity and tenant limits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pulp

from .candidates import Option, fitting, option_fits, path_slack, prune, static_options
from .distances import Distances
from .evaluation import availability, path_latency
from .model import Assignment, Flavor, NFDemand, Problem, Resources, SliceDemand
from .options import SolveOptions
from .sharing import Instance, Shares, capacity_of, fits_load
from .units import shortfall

_UNLIMITED = Resources(2**62, 2**62)


def _nf_label(nf: NFDemand) -> str:
    return f"NF {nf.id} ({nf.package})"


def _no_runtime_reason(problem: Problem, s: SliceDemand, nf: NFDemand) -> str:
    tiers = nf.allowed_tiers
    in_tier = [h for h in problem.topology.hosts if tiers is None or h.tier in tiers]
    where = "any host" if tiers is None else "a " + "/".join(sorted(tiers)) + " host"
    if not in_tier:
        return f"{_nf_label(nf)} may only run on {where}, and there is none"
    flavors = set(nf.flavors)
    if s.isolation_required:
        flavors.discard(Flavor.FNF)
        if not flavors:
            return (
                f"{_nf_label(nf)} only has an fnf flavour, which isolation: required forbids; "
                f"add a vnf flavour to package {nf.package} or relax the slice's isolation"
            )
    offered = sorted({r for h in in_tier for r in h.runtimes})
    extra = (
        " (isolation: required rules out fnf)" if s.isolation_required and Flavor.FNF in nf.flavors else ""
    )
    return (
        f"{_nf_label(nf)} needs runtime {'/'.join(sorted(flavors))} on {where}{extra}, "
        f"and none of those hosts offers it (they offer: {'/'.join(offered) or 'no runtime'})"
    )


def _paths_through(s: SliceDemand, nf_id: str) -> list[str]:
    return [p.name for p in s.paths if nf_id in p.nfs]


def _smallest_need(opts: list[Option]) -> dict[str, Resources]:
    need: dict[str, Resources] = {}
    for o in opts:
        if o.host not in need or o.alone < need[o.host]:
            need[o.host] = o.alone
    return need


def _over_capacity(problem: Problem, nf: NFDemand, opts: list[Option]) -> str | None:
    """Why no option of ``nf`` can take its load (every one is a shared flavour it overloads alone)."""
    if not opts or any(o.sharing is None for o in opts):
        return None
    worst: tuple[float, str, str] | None = None
    for o in opts:
        assert o.sharing is not None
        cap = capacity_of(problem.derated, o.sharing.pool, o.sharing.capacity_mbps, o.host)
        if fits_load(nf.load_mbps, cap):
            return None
        if worst is None or cap > worst[0]:
            worst = (cap, o.sharing.pool, o.host)
    assert worst is not None
    return (
        f"{_nf_label(nf)} carries {nf.load_mbps:g} Mbit/s, more than one instance of its shared flavour "
        f"takes anywhere it may run (at most {worst[0]:g} Mbit/s: pool {worst[1]} on {worst[2]}); "
        "declare a larger sharing.capacityMbps or split its traffic"
    )


def cheap_reasons(
    problem: Problem,
    s: SliceDemand,
    free: Mapping[str, Resources],
    dist: Distances,
    shares: Shares | None = None,
) -> list[str]:
    """Per-NF and per-path reasons found without solving anything (empty: none found).

    ``shares``: derated capacities and running shared instances with room (default: none running).
    """
    topo = problem.topology
    shares = shares if shares is not None else Shares(problem.derated)
    static = {nf.id: static_options(s, nf, topo) for nf in s.nfs}
    reasons = [_no_runtime_reason(problem, s, nf) for nf in s.nfs if not static[nf.id]]
    if reasons:
        return reasons
    reasons = [r for nf in s.nfs if (r := _over_capacity(problem, nf, static[nf.id])) is not None]
    if reasons:
        return reasons
    # Latency reach, as if every host were empty.
    reach = prune(s, topo, dict.fromkeys(topo.host_by_name, _UNLIMITED), dist, shares=Shares(problem.derated))
    if any(not opts for opts in reach.values()):
        slack = path_slack(s, static, dist)
        for p in s.paths:
            best = max((max(slack.get(n, {}).values(), default=-math.inf) for n in p.nfs), default=0.0)
            if best < 0 and p.nfs:
                proc = sum(min(o.processing_ms for o in static[n]) for n in p.nfs)
                need = p.budget_ms - best
                if proc > p.budget_ms:
                    reasons.append(
                        f"path {p.name}: its NFs' processing alone takes at least {proc:.3g} ms, over its "
                        f"{p.budget_ms:g} ms budget; raise the budget or use faster flavours"
                    )
                elif need >= dist.cap:
                    # Distances are capped just above the largest budget: this is "out of reach".
                    reasons.append(
                        f"path {p.name}: from {p.attachment}, no route of at most {p.budget_ms:g} ms "
                        "reaches hosts that can run its NFs in order; link the attachment closer to them"
                    )
                else:
                    reasons.append(
                        f"path {p.name}: no placement meets its {p.budget_ms:g} ms budget from {p.attachment}; "
                        f"the fastest needs at least {need:.3g} ms ({proc:.3g} ms of it NF processing)"
                    )
        if not reasons:
            bad = [n for n, o in reach.items() if not o]
            reasons.append(
                "no combination of hosts keeps every path within budget for "
                + ", ".join(_nf_label(s.nf_by_id[n]) for n in bad)
            )
        return reasons
    for nf in s.nfs:
        opts = reach[nf.id]
        if any(option_fits(o, free[o.host], nf.load_mbps, shares) for o in opts):
            continue
        needs = _smallest_need(opts)
        users = [p.attachment for p in s.paths if nf.id in p.nfs]
        order = sorted(needs, key=lambda h: (sum(dist.get(u, h) for u in users), h))
        detail = "; ".join(shortfall(h, free[h], needs[h]) for h in order[:3])
        more = f" (and {len(order) - 3} more hosts)" if len(order) > 3 else ""
        if users:
            budget = min(p.budget_ms for p in s.paths if nf.id in p.nfs)
            reasons.append(
                f"no host within {budget:g} ms of {'/'.join(dict.fromkeys(users))} can run "
                f"{nf.package} ({nf.id}): {detail}{more}"
            )
        else:
            reasons.append(f"no host can run {nf.package} ({nf.id}): {detail}{more}")
    if reasons:
        return reasons
    pruned = prune(s, topo, free, dist, shares=shares)
    for nf in s.nfs:
        if not pruned[nf.id]:
            reasons.append(
                f"{_nf_label(nf)}: the hosts with room for it are too far to keep "
                f"{', '.join(_paths_through(s, nf.id))} within budget"
            )
    return reasons


#: A relaxation solve is not started with less time than this left for the solver itself.
MIN_SOLVE_SECONDS = 0.05
#: What a solver call costs beyond its own limit (building, a CBC process, reading back), held back
#: from the deadline.
SOLVE_OVERHEAD_SECONDS = 0.1

OUT_OF_TIME = (
    "the diagnosis ran out of time before it could tell which constraint blocks this slice; "
    "call flyslice.solver.diagnose() with a longer time limit"
)


def relaxation_reasons(
    problem: Problem,
    s: SliceDemand,
    free: Mapping[str, Resources],
    link_free: Mapping[frozenset[str], float],
    dist: Distances,
    options: SolveOptions,
    deadline: float | None = None,
    shares: Shares | None = None,
    running: Sequence[Instance] = (),
) -> list[str] | None:
    """Solve the slice alone, forced in; name the constraint family that blocks it.

    ``None`` when the slice fits on its own (so it lost to other slices or to the time limit).
    Each solve gets at most ``options.time_limit_s``, and none starts after ``deadline``
    (``time.perf_counter()`` seconds): the caller's own time limit bounds the diagnosis.
    ``shares`` and ``running``: the shared instances already open that the slice may join.
    """
    from . import ilp
    from .backends import solve

    topo = problem.topology

    inconclusive = False

    def attempt(enforce: ilp.Enforce) -> dict[str, Assignment] | None:
        nonlocal inconclusive
        limit = options.time_limit_s
        if deadline is not None:
            limit = min(limit, deadline - time.perf_counter() - SOLVE_OVERHEAD_SECONDS)
            if limit < MIN_SOLVE_SECONDS:
                inconclusive = True
                return None
        cap_free = free if enforce.capacity else dict.fromkeys(topo.host_by_name, _UNLIMITED)
        room = shares if enforce.capacity else Shares(problem.derated)
        opts = (
            prune(s, topo, cap_free, dist, shares=room)
            if enforce.latency
            else _unpruned(s, problem, cap_free, room)
        )
        if any(not o for o in opts.values()):
            return None
        built = ilp.build(
            problem,
            [s],
            {s.key: opts},
            cap_free,
            link_free,
            dist,
            enforce=enforce,
            force_admit=True,
            exact_latency=True,
            exact_sharing=True,
            existing=running if enforce.capacity else (),
            direct=options.direct,
        )
        try:
            # A late HiGHS run may use the rest of the diagnosis time, not more (backends._run_bounded).
            out = solve(
                built.prob, replace(options, time_limit_s=limit), warm_start=False, wait_until=deadline
            )
        except pulp.PulpSolverError:
            inconclusive = True
            return None
        if out.kind == "none":
            inconclusive |= not out.proven_infeasible
            return None
        return dict(built.assignments().get(s.key, {}))

    if attempt(ilp.Enforce()) is not None:
        return None
    if inconclusive:
        return [OUT_OF_TIME]
    reasons: list[str] = []
    families = {
        "capacity": ilp.Enforce(capacity=False),
        "latency": ilp.Enforce(latency=False),
        "availability": ilp.Enforce(availability=False),
        "bandwidth": ilp.Enforce(bandwidth=False),
    }
    for family, enforce in families.items():
        found = attempt(enforce)
        if found is None:
            continue
        assignments = found
        if family == "capacity":
            hosts = sorted({a.host for a in assignments.values()})
            reasons.append(
                "its NFs each fit somewhere, but not all together: the free capacity on "
                + ", ".join(
                    f"{h} ({free[h].cpu_millis}m CPU, {free[h].memory_bytes // 2**20}Mi)" for h in hosts
                )
                + " is not enough for the combination that meets its budgets"
            )
        elif family == "latency":
            worst = max(
                ((p, path_latency(p, s, assignments, dist)) for p in s.paths),
                key=lambda pl: pl[1] - pl[0].budget_ms,
            )
            reasons.append(
                f"it can only be placed if path {worst[0].name} may exceed its {worst[0].budget_ms:g} ms budget "
                f"(a placement meeting everything else takes {worst[1]:.3g} ms); "
                "raise spec.qos.maxLatencyMs or add hosts closer to its attachments"
            )
        elif family == "availability":
            avail = availability(topo, (a.host for a in assignments.values()))
            reasons.append(
                f"it can only be placed below its availability target {s.availability_target:g} "
                f"(a placement meeting everything else reaches {avail:.4g}: the series product over the "
                "hosts it uses); use more available hosts or lower spec.qos.availability"
            )
        else:
            reasons.append("the links on its routes lack the declared bandwidth for its service edges")
    if not reasons and inconclusive:
        reasons.append(OUT_OF_TIME)
    if not reasons:
        reasons.append(
            "capacity, latency budgets and availability cannot all be met together; "
            "relaxing any one alone is not enough"
        )
    return reasons


def _unpruned(
    s: SliceDemand, problem: Problem, free: Mapping[str, Resources], shares: Shares | None
) -> dict[str, list[Option]]:
    return {
        nf.id: fitting(static_options(s, nf, problem.topology), free, nf.load_mbps, shares) for nf in s.nfs
    }
