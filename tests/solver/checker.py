"""An independent placement checker for the tests.

Written from the model's docstrings, not from the solver's code: its own all-pairs
distances, its own capacity sums (background included), runtime, isolation, tier,
budgets, availability and link bandwidth. Returns every broken rule.

NF sharing: an NF placed in a flavour with sharing counts its ``per_tenant`` resources, and each
shared instance of the result counts the flavour's resources once; every such NF must be a tenant of
an instance of its pool on its host, and every instance within its capacity (derated as the problem
says) and ``max_tenants``.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx

from flyslice.solver import Flavor, Placement, Problem


def check(problem: Problem, placement: Placement) -> list[str]:
    topo = problem.topology
    hosts = {h.name: h for h in topo.hosts}
    g = nx.Graph()
    g.add_nodes_from(hosts)
    for lk in topo.links:
        g.add_edge(lk.a, lk.b, w=lk.latency_ms)
    dist = dict(nx.all_pairs_dijkstra_path_length(g, weight="w"))
    errors: list[str] = []
    cpu = {h: problem.background.get(h).cpu_millis if h in problem.background else 0 for h in hosts}
    mem = {h: problem.background.get(h).memory_bytes if h in problem.background else 0 for h in hosts}
    link_use: dict[frozenset[str], float] = {}
    tenants_seen: dict[str, list[tuple[str, str]]] = {}
    assert set(placement.slices) == {s.key for s in problem.slices}, "every slice must have a result"
    for s in problem.slices:
        sp = placement.slices[s.key]
        if not sp.admitted:
            if not sp.reasons or not all(r.strip() for r in sp.reasons):
                errors.append(f"{s.key}: rejected without a reason")
            if any(r.strip().lower() == "infeasible" for r in sp.reasons):
                errors.append(f"{s.key}: bare 'Infeasible' reason")
            continue
        nfs = {nf.id: nf for nf in s.nfs}
        if set(sp.assignments) != set(nfs):
            errors.append(f"{s.key}: assignments cover {sorted(sp.assignments)}, NFs are {sorted(nfs)}")
            continue
        used_hosts = set()
        for nf_id, a in sp.assignments.items():
            nf = nfs[nf_id]
            host = hosts.get(a.host)
            if host is None:
                errors.append(f"{s.key}/{nf_id}: unknown host {a.host}")
                continue
            used_hosts.add(a.host)
            if a.flavor not in nf.flavors:
                errors.append(f"{s.key}/{nf_id}: flavour {a.flavor} not offered by the package")
                continue
            if a.flavor not in host.runtimes:
                errors.append(f"{s.key}/{nf_id}: {a.host} has no {a.flavor} runtime")
            if a.flavor == Flavor.FNF and s.isolation_required:
                errors.append(f"{s.key}/{nf_id}: fNF in a slice that requires isolation")
            if nf.allowed_tiers is not None and host.tier not in nf.allowed_tiers:
                errors.append(f"{s.key}/{nf_id}: tier {host.tier} not allowed")
            demand = nf.flavors[a.flavor]
            need = demand.resources
            if demand.sharing is not None:
                need = demand.sharing.per_tenant
                iid = sp.instance_of.get(nf_id)
                inst = placement.instances.get(iid or "")
                if inst is None or (inst.pool, inst.host, inst.flavor) != (
                    demand.sharing.pool,
                    a.host,
                    a.flavor,
                ):
                    errors.append(f"{s.key}/{nf_id}: not a tenant of an instance of its pool on {a.host}")
                else:
                    tenants_seen.setdefault(inst.id, []).append((s.key, nf_id))
            cpu[a.host] += need.cpu_millis
            mem[a.host] += need.memory_bytes
        for p in s.paths:
            here, total = p.attachment, 0.0
            for nf_id in p.nfs:
                a = sp.assignments[nf_id]
                if a.host not in dist.get(here, {}):
                    total = float("inf")
                    break
                total += dist[here][a.host] + nfs[nf_id].flavors[a.flavor].processing_latency_ms
                here = a.host
            if total > p.budget_ms + 1e-6:
                errors.append(f"{s.key}: path {p.name} takes {total} ms > budget {p.budget_ms}")
            reported = sp.path_latency_ms.get(p.name)
            if reported is None or abs(reported - total) > 1e-6:
                errors.append(f"{s.key}: path {p.name} reported {reported} ms, is {total} ms")
        avail = 1.0
        for h in used_hosts:
            avail *= hosts[h].availability
        if avail < s.availability_target - 1e-9:
            errors.append(f"{s.key}: availability {avail} < target {s.availability_target}")
        for e in s.edges:
            if e.bandwidth_mbps <= 0:
                continue
            src, dst = sp.assignments[e.src].host, sp.assignments[e.dst].host
            if src == dst:
                continue
            route = nx.dijkstra_path(g, src, dst, weight="w")
            for a_, b_ in itertools.pairwise(route):
                link = frozenset((a_, b_))
                link_use[link] = link_use.get(link, 0.0) + e.bandwidth_mbps
    demands = {(s.key, nf.id): nf for s in problem.slices for nf in s.nfs}
    for iid, inst in placement.instances.items():
        if sorted(tenants_seen.get(iid, [])) != sorted(inst.tenants) or not inst.tenants:
            errors.append(f"instance {iid}: tenants {inst.tenants}, NFs placed in it {tenants_seen.get(iid)}")
            continue
        flavor = demands[inst.tenants[0]].flavors[inst.flavor]
        sharing = flavor.sharing
        assert sharing is not None
        cpu[inst.host] += flavor.resources.cpu_millis
        mem[inst.host] += flavor.resources.memory_bytes
        load = math.fsum(demands[t].load_mbps for t in inst.tenants)
        cap = problem.derated.get((inst.pool, inst.host), sharing.capacity_mbps)
        if load > cap + 1e-6:
            errors.append(f"instance {iid}: load {load} Mbit/s > capacity {cap}")
        if sharing.max_tenants is not None and len(inst.tenants) > sharing.max_tenants:
            errors.append(f"instance {iid}: {len(inst.tenants)} tenants > max {sharing.max_tenants}")
        if not iid.startswith(f"{inst.pool}@{inst.host}#") or not iid.rsplit("#", 1)[1].isdigit():
            errors.append(f"instance {iid}: id is not pool@host#n")
    for h, host in hosts.items():
        if cpu[h] > host.capacity.cpu_millis and placement.host_usage.get(h) is not None:
            errors.append(f"host {h}: CPU {cpu[h]} > {host.capacity.cpu_millis}")
        if mem[h] > host.capacity.memory_bytes and placement.host_usage.get(h) is not None:
            errors.append(f"host {h}: memory {mem[h]} > {host.capacity.memory_bytes}")
    for lk in topo.links:
        used = link_use.get(frozenset((lk.a, lk.b)), 0.0)
        if lk.bandwidth_mbps is not None and used > lk.bandwidth_mbps + 1e-6:
            errors.append(f"link {lk.a}-{lk.b}: {used} Mbit/s > {lk.bandwidth_mbps}")
    return errors
