"""What a given assignment means: path latency, host usage, availability, objective terms.

Shared by the ILP and the baseline so both report the same figures for the same placement. With NF
sharing, host usage and the resource term depend on how tenants are packed into instances: they are
computed from a :class:`~.sharing.Ledger` (per open instance the flavour's resources once, per
tenant ``per_tenant``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

from .distances import Distances
from .model import Assignment, BudgetedPath, Placement, Problem, Resources, SliceDemand, Topology
from .sharing import Ledger, alone, capacity_of, fits_load, hints_of_ids, instance_id, pack


def max_budget(problem: Problem) -> float:
    budgets = [p.budget_ms for s in problem.slices for p in s.paths if math.isfinite(p.budget_ms)]
    return max(budgets, default=0.0)


def path_latency(
    path: BudgetedPath, slice_: SliceDemand, assignments: Mapping[str, Assignment], dist: Distances
) -> float:
    """Link latency between consecutive hosts plus each NF's processing latency (inf if unreachable)."""
    total = 0.0
    here = path.attachment
    for nf_id in path.nfs:
        a = assignments[nf_id]
        d = dist.true(here, a.host)
        if d is None:
            return math.inf
        total += d + slice_.nf_by_id[nf_id].flavors[a.flavor].processing_latency_ms
        here = a.host
    return total


def slice_usage(slice_: SliceDemand, assignments: Mapping[str, Assignment]) -> dict[str, Resources]:
    """Host usage of one slice on its own: an NF in a shared flavour counts as the lone tenant of an
    instance of its own (an upper bound; placements are checked with a :class:`~.sharing.Ledger`)."""
    usage: dict[str, Resources] = {}
    for nf_id, a in assignments.items():
        need = alone(slice_.nf_by_id[nf_id].flavors[a.flavor])
        usage[a.host] = usage.get(a.host, Resources()) + need
    return usage


def add_usage(total: dict[str, Resources], more: Mapping[str, Resources]) -> None:
    for host, r in more.items():
        total[host] = total.get(host, Resources()) + r


def availability(topology: Topology, hosts: Iterable[str]) -> float:
    """Series model: the slice is up only while every distinct host it uses is up."""
    value = 1.0
    for h in set(hosts):
        value *= topology.host_by_name[h].availability
    return value


def reference_capacity(topology: Topology) -> Resources:
    """The largest CPU and memory of any host: the unit the resource term is normalised by."""
    cpu = max((h.capacity.cpu_millis for h in topology.hosts), default=1)
    mem = max((h.capacity.memory_bytes for h in topology.hosts), default=1)
    return Resources(max(cpu, 1), max(mem, 1))


def resource_cost(topology: Topology, host: str, need: Resources, ref: Resources) -> float:
    cost = topology.host_by_name[host].cost
    return cost * (need.cpu_millis / ref.cpu_millis + need.memory_bytes / ref.memory_bytes)


def rejection_scale(problem: Problem) -> dict[str, float]:
    """Rejecting a slice costs ``rejection x (1 + priority - lowest priority)``."""
    lowest = min((s.priority for s in problem.slices), default=0)
    return {s.key: 1.0 + s.priority - lowest for s in problem.slices}


def moved_count(slice_: SliceDemand, assignments: Mapping[str, Assignment]) -> int:
    """Already-running NFs of an admitted slice whose host or flavour changes."""
    return sum(
        1 for nf_id, cur in slice_.current.items() if nf_id in assignments and assignments[nf_id] != cur
    )


def objective_terms(
    problem: Problem,
    admitted: Mapping[str, Mapping[str, Assignment]],
    latencies: Mapping[str, Mapping[str, float]],
    ledger: Ledger | None = None,
) -> dict[str, float]:
    """The weighted objective terms (see docs/solver.md) of a placement.

    ``ledger``: how its shared NFs are packed into instances (each instance's resources count once);
    without it they are packed as :func:`~.sharing.pack` does (what runs now, else first fit).
    """
    w = problem.weights
    ref = reference_capacity(problem.topology)
    scale = rejection_scale(problem)
    resource = latency = migration = rejection = 0.0
    shared = False
    for s in problem.slices:
        assignments = admitted.get(s.key)
        if assignments is None:
            rejection += w.rejection * scale[s.key]
            continue
        for nf_id, a in assignments.items():
            demand = s.nf_by_id[nf_id].flavors[a.flavor]
            if demand.sharing is not None:
                shared = True
                need = demand.sharing.per_tenant
            else:
                need = demand.resources
            resource += w.resource * resource_cost(problem.topology, a.host, need, ref)
        for p in s.paths:
            if p.budget_ms > 0 and math.isfinite(p.budget_ms):
                latency += w.latency * latencies[s.key][p.name] / p.budget_ms
        migration += w.migration * moved_count(s, assignments)
    if shared:
        # Each open instance's own resources, once (per-tenant resources are counted above).
        packed = ledger if ledger is not None else pack(problem, admitted)
        for host, base in packed.bases():
            resource += w.resource * resource_cost(problem.topology, host, base, ref)
    return {"resource": resource, "latency": latency, "migration": migration, "rejection": rejection}


def true_objective(
    problem: Problem,
    admitted: Mapping[str, Mapping[str, Assignment]],
    instance_of: Mapping[str, Mapping[str, str]] | None = None,
    dist: Distances | None = None,
) -> float:
    """The objective (docs/solver.md) of ``admitted``, shared NFs packed as ``instance_of`` says
    (NF id -> :attr:`~.model.SharedInstance.id` per slice, as in a result), else as they run now
    (``current_instance``), else first fit. What the re-optimisation compares placements with."""
    from .distances import distances_for

    d = dist if dist is not None else distances_for(problem.topology, max_budget(problem))
    by_key = {s.key: s for s in problem.slices}
    latencies = {
        k: {p.name: path_latency(p, by_key[k], a, d) for p in by_key[k].paths} for k, a in admitted.items()
    }
    hints = None if instance_of is None else hints_of_ids(problem, admitted, instance_of)
    return sum(objective_terms(problem, admitted, latencies, pack(problem, admitted, hints)).values())


def violations(
    problem: Problem,
    s: SliceDemand,
    assignments: Mapping[str, Assignment],
    free: Mapping[str, Resources],
    dist: Distances,
    usage: Mapping[str, Resources] | None = None,
) -> list[str]:
    """Why this slice's assignment breaks a rule on its own against ``free`` capacity (empty: it is valid).

    ``usage``: the slice's host usage when some of its NFs join shared instances already open (from
    a :class:`~.sharing.Draft`); by default every NF counts in full (:func:`slice_usage`).
    """
    from .candidates import flavor_allowed, tier_allowed

    out: list[str] = []
    hosts = problem.topology.host_by_name
    for nf in s.nfs:
        a = assignments.get(nf.id)
        if a is None or a.host not in hosts or a.flavor not in nf.flavors:
            out.append(f"NF {nf.id} has no valid assignment")
            continue
        host = hosts[a.host]
        if not flavor_allowed(s, host, a.flavor):
            out.append(f"NF {nf.id} cannot run as {a.flavor} on {a.host}")
        if not tier_allowed(nf, host):
            out.append(f"NF {nf.id} may not run on tier {host.tier} ({a.host})")
    if out:
        return out
    for host_name, used in (slice_usage(s, assignments) if usage is None else usage).items():
        if not used.fits_in(free[host_name]):
            out.append(f"host {host_name} lacks room: needs {used}, has {free[host_name]}")
    for p in s.paths:
        lat = path_latency(p, s, assignments, dist)
        if lat > p.budget_ms + 1e-6:
            out.append(f"path {p.name} takes {lat:.3g} ms, over its {p.budget_ms:g} ms budget")
    if s.availability_target > 0:
        avail = availability(problem.topology, (a.host for a in assignments.values()))
        if avail < s.availability_target - 1e-9:
            out.append(f"availability {avail:.4g} is below the target {s.availability_target:g}")
    return out


def link_load(
    problem: Problem, s: SliceDemand, assignments: Mapping[str, Assignment], dist: Distances
) -> dict[frozenset[str], float]:
    """Mbit/s each link carries for this slice's service edges, routed along shortest paths."""
    import networkx as nx

    load: dict[frozenset[str], float] = {}
    graph = dist.topology.graph
    for e in s.edges:
        if e.bandwidth_mbps <= 0 or e.src not in assignments or e.dst not in assignments:
            continue
        g, h = assignments[e.src].host, assignments[e.dst].host
        if g == h:
            continue
        try:
            route = nx.dijkstra_path(graph, g, h, weight="latency_ms")
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            continue
        for a, b in itertools.pairwise(route):
            link = frozenset((a, b))
            load[link] = load.get(link, 0.0) + e.bandwidth_mbps
    return load


def instance_violations(problem: Problem, placement: Placement) -> list[str]:
    """Every broken rule of a result's shared instances (empty: none): each NF placed in a flavour
    with sharing is a tenant of exactly one instance of its pool on its host; each instance's load
    (its tenants' ``load_mbps``) stays within its capacity (derated per ``Problem.derated``), its
    tenants within ``max_tenants``; and ``host_usage`` counts each instance's resources once and each
    tenant's ``per_tenant`` (plus unshared NFs), within the host's capacity minus background."""
    out: list[str] = []
    by_key = {s.key: s for s in problem.slices}
    usage: dict[str, Resources] = {}
    served: dict[str, set[tuple[str, str]]] = {iid: set() for iid in placement.instances}
    for key, sp in placement.slices.items():
        if not sp.admitted:
            continue
        s = by_key[key]
        for nf_id, a in sp.assignments.items():
            demand = s.nf_by_id[nf_id].flavors[a.flavor]
            sh = demand.sharing
            if sh is None:
                usage[a.host] = usage.get(a.host, Resources()) + demand.resources
                if nf_id in sp.instance_of:
                    out.append(
                        f"{key}/{nf_id}: not in a shared flavour, yet a tenant of {sp.instance_of[nf_id]}"
                    )
                continue
            usage[a.host] = usage.get(a.host, Resources()) + sh.per_tenant
            iid = sp.instance_of.get(nf_id)
            inst = placement.instances.get(iid) if iid is not None else None
            if inst is None:
                out.append(
                    f"{key}/{nf_id}: placed in a shared flavour but its instance {iid!r} is not in the result"
                )
                continue
            if (inst.pool, inst.host, inst.flavor) != (sh.pool, a.host, a.flavor):
                out.append(f"{key}/{nf_id}: instance {iid} is {inst.pool} {inst.flavor} on {inst.host}")
            served[inst.id].add((key, nf_id))
    for iid, inst in placement.instances.items():
        if set(inst.tenants) != served[iid]:
            out.append(f"instance {iid}: lists tenants {sorted(inst.tenants)}, serves {sorted(served[iid])}")
        if not inst.tenants:
            out.append(f"instance {iid}: has no tenant")
            continue
        if not iid.startswith(instance_id(inst.pool, inst.host, 0)[:-1]) or iid != inst.id:
            out.append(f"instance {iid}: id is not {inst.pool}@{inst.host}#<n>")
        first = by_key[inst.tenants[0][0]].nf_by_id[inst.tenants[0][1]].flavors[inst.flavor]
        sh = first.sharing
        assert sh is not None
        load = math.fsum(by_key[k].nf_by_id[n].load_mbps for k, n in inst.tenants)
        cap = capacity_of(problem.derated, sh.pool, sh.capacity_mbps, inst.host)
        if not fits_load(load, cap):
            out.append(f"instance {iid}: load {load:g} Mbit/s over its capacity {cap:g}")
        if abs(load - inst.load_mbps) > 1e-6 or abs(cap - inst.capacity_mbps) > 1e-9:
            out.append(f"instance {iid}: reports load {inst.load_mbps:g} / capacity {inst.capacity_mbps:g}")
        if sh.max_tenants is not None and len(inst.tenants) > sh.max_tenants:
            out.append(f"instance {iid}: {len(inst.tenants)} tenants, at most {sh.max_tenants} allowed")
        usage[inst.host] = usage.get(inst.host, Resources()) + first.resources
    hosts = problem.topology.host_by_name
    for host, used in usage.items():
        if placement.host_usage.get(host) != used:
            out.append(f"host {host}: usage reported {placement.host_usage.get(host)}, is {used}")
        room = hosts[host].capacity - problem.background.get(host, Resources())
        if not used.fits_in(room):
            out.append(f"host {host}: uses {used}, has {room}")
    return out
