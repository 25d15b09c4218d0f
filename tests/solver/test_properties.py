"""Property tests on small random instances.

* every placement ``place`` or ``baseline`` returns passes the independent checker;
* the ILP's optimum equals brute force over every assignment, with the objective of
  docs/solver.md written out again here from its definition.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flyslice.solver import (
    Assignment,
    BudgetedPath,
    Flavor,
    FlavorDemand,
    Host,
    Link,
    NFDemand,
    Problem,
    Resources,
    SliceDemand,
    SolveOptions,
    Tier,
    Topology,
    baseline,
    place,
)

from .checker import check

Mi = 2**20
TIERS = list(Tier)
FLAVORS = list(Flavor)


@st.composite
def problems(draw: st.DrawFn, max_nfs: int = 3) -> Problem:
    n_hosts = draw(st.integers(2, 4))
    hosts = []
    for i in range(n_hosts):
        hosts.append(
            Host(
                f"h{i}",
                draw(st.sampled_from(TIERS)),
                frozenset(draw(st.sets(st.sampled_from(FLAVORS), min_size=0, max_size=2))),
                Resources(draw(st.integers(100, 800)), draw(st.integers(64, 512)) * Mi),
                draw(st.sampled_from([0.9, 0.95, 0.99, 1.0])),
                draw(st.sampled_from([1.0, 2.0, 4.0])),
            )
        )
    links = [
        Link(f"h{i}", f"h{draw(st.integers(0, i - 1))}", draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])))
        for i in range(1, n_hosts)
    ]
    if n_hosts > 2 and draw(st.booleans()):
        links.append(Link("h0", f"h{n_hosts - 1}", draw(st.sampled_from([0.5, 3.0]))))
    topo = Topology(tuple(hosts), tuple(links))
    slices = []
    budget_nfs = max_nfs
    for k in range(draw(st.integers(1, 2))):
        if budget_nfs <= 0:
            break
        n_nfs = draw(st.integers(1, min(2, budget_nfs)))
        budget_nfs -= n_nfs
        nfs = []
        for j in range(n_nfs):
            flavors = {}
            for f in draw(st.sets(st.sampled_from(FLAVORS), min_size=1, max_size=2)):
                flavors[f] = FlavorDemand(
                    f,
                    Resources(draw(st.integers(100, 500)), draw(st.integers(16, 256)) * Mi),
                    draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
                )
            tiers = draw(st.one_of(st.none(), st.sets(st.sampled_from(TIERS), min_size=1).map(frozenset)))
            nfs.append(NFDemand(f"nf{j}", f"role{j}", f"pkg{j}", flavors, None, tiers))
        attachment = draw(st.sampled_from([h.name for h in hosts]))
        path = BudgetedPath(
            "p", attachment, tuple(nf.id for nf in nfs), draw(st.sampled_from([2.0, 5.0, 15.0]))
        )
        current = {}
        for nf in nfs:
            if draw(st.booleans()):
                current[nf.id] = Assignment(
                    draw(st.sampled_from([h.name for h in hosts])), draw(st.sampled_from(sorted(nf.flavors)))
                )
        slices.append(
            SliceDemand(
                f"ns/s{k}",
                tuple(nfs),
                paths=(path,),
                availability_target=draw(st.sampled_from([0.0, 0.9, 0.97])),
                isolation_required=draw(st.booleans()),
                priority=draw(st.integers(0, 2)),
                current=current,
            )
        )
    background = {h.name: Resources(draw(st.integers(0, 300)), 0) for h in hosts if draw(st.booleans())}
    return Problem(topo, tuple(slices), background)


def _distances(problem: Problem) -> dict[str, dict[str, float]]:
    g = nx.Graph()
    g.add_nodes_from(h.name for h in problem.topology.hosts)
    for lk in problem.topology.links:
        g.add_edge(lk.a, lk.b, w=lk.latency_ms)
    return {a: dict(d) for a, d in nx.all_pairs_dijkstra_path_length(g, weight="w")}


def brute_force(problem: Problem) -> float:
    """The least objective over every admission decision and assignment (docs/solver.md)."""
    hosts = {h.name: h for h in problem.topology.hosts}
    dist = _distances(problem)
    w = problem.weights
    ref_cpu = max(h.capacity.cpu_millis for h in hosts.values())
    ref_mem = max(h.capacity.memory_bytes for h in hosts.values())
    low = min(s.priority for s in problem.slices)

    def slice_choices(s: SliceDemand) -> list[tuple[float, dict[str, Assignment] | None]]:
        out: list[tuple[float, dict[str, Assignment] | None]] = [(w.rejection * (1 + s.priority - low), None)]
        per_nf = [[Assignment(h, f) for h in hosts for f in nf.flavors] for nf in s.nfs]
        for combo in itertools.product(*per_nf):
            a = {nf.id: c for nf, c in zip(s.nfs, combo, strict=True)}
            ok = True
            cost = 0.0
            for nf in s.nfs:
                host, flavor = hosts[a[nf.id].host], a[nf.id].flavor
                if flavor not in host.runtimes or (flavor is Flavor.FNF and s.isolation_required):
                    ok = False
                if nf.allowed_tiers is not None and host.tier not in nf.allowed_tiers:
                    ok = False
                need = nf.flavors[flavor].resources
                cost += w.resource * host.cost * (need.cpu_millis / ref_cpu + need.memory_bytes / ref_mem)
            if not ok:
                continue
            avail = math.prod(hosts[h].availability for h in {x.host for x in a.values()})
            if avail < s.availability_target - 1e-12:
                continue
            for p in s.paths:
                here, lat = p.attachment, 0.0
                for nf_id in p.nfs:
                    d = dist[here].get(a[nf_id].host, math.inf)
                    lat += d + s.nf_by_id[nf_id].flavors[a[nf_id].flavor].processing_latency_ms
                    here = a[nf_id].host
                if lat > p.budget_ms + 1e-9:
                    ok = False
                cost += w.latency * lat / p.budget_ms
            if not ok:
                continue
            cost += w.migration * sum(1 for n, cur in s.current.items() if a[n] != cur)
            out.append((cost, a))
        return out

    best = math.inf
    for combo in itertools.product(*(slice_choices(s) for s in problem.slices)):
        cpu = {h: problem.background.get(h, Resources()).cpu_millis for h in hosts}
        mem = {h: problem.background.get(h, Resources()).memory_bytes for h in hosts}
        for s, (_, a) in zip(problem.slices, combo, strict=True):
            for nf_id, x in (a or {}).items():
                need = s.nf_by_id[nf_id].flavors[x.flavor].resources
                cpu[x.host] += need.cpu_millis
                mem[x.host] += need.memory_bytes
        used = {x.host for _, a in combo for x in (a or {}).values()}
        if any(
            cpu[h] > hosts[h].capacity.cpu_millis or mem[h] > hosts[h].capacity.memory_bytes for h in used
        ):
            continue
        best = min(best, sum(c for c, _ in combo))
    return best


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(problems(max_nfs=4))
def test_every_ilp_placement_passes_the_independent_checker(problem: Problem) -> None:
    result = place(problem)
    assert check(problem, result) == []


@SETTINGS
@given(problems(max_nfs=4))
def test_every_baseline_placement_passes_the_independent_checker(problem: Problem) -> None:
    result = baseline(problem)
    assert check(problem, result) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_nfs=3), st.sampled_from(["cbc", "highs"]))
def test_ilp_optimum_equals_brute_force(problem: Problem, solver: str) -> None:
    result = place(problem, SolveOptions(solver=solver, gap_rel=0.0))
    expected = brute_force(problem)
    assert result.objective is not None
    assert math.isclose(result.objective, expected, rel_tol=1e-6, abs_tol=1e-6), (result.objective, expected)
