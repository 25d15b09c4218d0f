"""What a given assignment means: path latency, host usage, availability, objective terms.

Shared by the ILP and the baseline so both report the same figures for the same placement.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

from .distances import Distances
from .model import Assignment, BudgetedPath, Problem, Resources, SliceDemand, Topology


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
    usage: dict[str, Resources] = {}
    for nf_id, a in assignments.items():
        need = slice_.nf_by_id[nf_id].flavors[a.flavor].resources
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
) -> dict[str, float]:
    """The weighted objective terms (see docs/solver.md) of a placement."""
    w = problem.weights
    ref = reference_capacity(problem.topology)
    scale = rejection_scale(problem)
    resource = latency = migration = rejection = 0.0
    for s in problem.slices:
        assignments = admitted.get(s.key)
        if assignments is None:
            rejection += w.rejection * scale[s.key]
            continue
        for nf_id, a in assignments.items():
            need = s.nf_by_id[nf_id].flavors[a.flavor].resources
            resource += w.resource * resource_cost(problem.topology, a.host, need, ref)
        for p in s.paths:
            if p.budget_ms > 0 and math.isfinite(p.budget_ms):
                latency += w.latency * latencies[s.key][p.name] / p.budget_ms
        migration += w.migration * moved_count(s, assignments)
    return {"resource": resource, "latency": latency, "migration": migration, "rejection": rejection}


def violations(
    problem: Problem,
    s: SliceDemand,
    assignments: Mapping[str, Assignment],
    free: Mapping[str, Resources],
    dist: Distances,
) -> list[str]:
    """Why this slice's assignment breaks a rule on its own against ``free`` capacity (empty: it is valid)."""
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
    for host_name, used in slice_usage(s, assignments).items():
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
