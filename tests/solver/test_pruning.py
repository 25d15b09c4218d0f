"""Safe model reductions, each checked against the unreduced exact model on >= 30-host instances:
dominated flavours dropped before the model, destination-side latency pivots, memory rows in MiB."""

from __future__ import annotations

import itertools
import random

import pytest

from flyslice.solver import (
    Assignment,
    BudgetedPath,
    Edge,
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
    ilp,
    place,
)
from flyslice.solver.backends import highs_available, solve
from flyslice.solver.candidates import Option, drop_dominated, prune
from flyslice.solver.distances import distances_for
from flyslice.solver.evaluation import max_budget

from .checker import check

Mi = 2**20
Gi = 2**30

needs_highs = pytest.mark.skipif(not highs_available(), reason="highspy is not installed")


def _flavors(
    vnf: tuple[int, int, float] | None, fnf: tuple[int, int, float] | None
) -> dict[Flavor, FlavorDemand]:
    out = {}
    if vnf:
        out[Flavor.VNF] = FlavorDemand(Flavor.VNF, Resources(vnf[0], vnf[1] * Mi), vnf[2])
    if fnf:
        out[Flavor.FNF] = FlavorDemand(Flavor.FNF, Resources(fnf[0], fnf[1] * Mi), fnf[2])
    return out


#: Ingest: fNF dominates vNF. Middle: fNF needs more CPU than vNF (neither dominates). Store: vNF only.
INGEST = _flavors((300, 128, 1.0), (80, 16, 0.3))
MIDDLE = _flavors((100, 256, 0.6), (150, 16, 0.2))
FILTER = _flavors((400, 256, 1.2), (60, 8, 0.4))
STORE = _flavors((500, 512, 1.0), None)


def tree(n_gw: int, rng: random.Random) -> Topology:
    """2 clouds in a ring, 4 fogs, ``n_gw`` gateways (30% also run vNFs); tight gateways."""
    hosts = [
        Host(f"cloud-{i}", Tier.CLOUD, frozenset({Flavor.VNF}), Resources(8000, 16 * Gi), 0.999, 1.0)
        for i in range(2)
    ]
    hosts += [
        Host(f"fog-{i}", Tier.FOG, frozenset(Flavor), Resources(1500, 2 * Gi), 0.995, 2.0) for i in range(4)
    ]
    for i in range(n_gw):
        runtimes = frozenset(Flavor) if rng.random() < 0.3 else frozenset({Flavor.FNF})
        hosts.append(Host(f"gw-{i}", Tier.GATEWAY, runtimes, Resources(400, 512 * Mi), 0.98, 4.0))
    links = [Link("cloud-0", "cloud-1", 2.0)]
    links += [Link(f"fog-{i}", f"cloud-{i % 2}", round(rng.uniform(3, 5), 2)) for i in range(4)]
    links += [Link(f"gw-{i}", f"fog-{i % 4}", round(rng.uniform(0.5, 2), 2)) for i in range(n_gw)]
    return Topology(tuple(hosts), tuple(links))


def chain_slice(key: str, rng: random.Random, gateways: list[str]) -> SliceDemand:
    att = rng.choice(gateways)
    nfs = (
        NFDemand("ingest", "ingest", "ingest", INGEST, att, frozenset({Tier.GATEWAY})),
        NFDemand("mid", "mid", "mid", MIDDLE),
        NFDemand("filter", "filter", "filter", FILTER),
        NFDemand("store", "store", "store", STORE, None, frozenset({Tier.CLOUD})),
    )
    chain = tuple(nf.id for nf in nfs)
    return SliceDemand(
        key,
        nfs,
        tuple(Edge(a, b) for a, b in itertools.pairwise(chain)),
        (BudgetedPath(f"{att}:chain", att, chain, float(rng.choice([11, 13, 16]))),),
        availability_target=rng.choice([0.0, 0.93]),
        isolation_required=rng.random() < 0.15,
        priority=rng.choice([0, 0, 1]),
    )


def instance(seed: int, n_gw: int = 30, n_slices: int = 14) -> Problem:
    rng = random.Random(seed)
    topo = tree(n_gw, rng)
    gateways = [h.name for h in topo.hosts if h.tier is Tier.GATEWAY]
    return Problem(topo, tuple(chain_slice(f"t/s{i}", rng, gateways) for i in range(n_slices)))


def exact_optimum(
    problem: Problem, *, dominated: bool, exact_latency: bool = True
) -> tuple[float, ilp.Built]:
    """The proven optimum (gap 0) of the model with every latency pivot (or the default cuts)."""
    dist = distances_for(problem.topology, max_budget(problem))
    free = {h.name: h.capacity for h in problem.topology.hosts}
    cands = {s.key: prune(s, problem.topology, free, dist, dominated=dominated) for s in problem.slices}
    modelled = [s for s in problem.slices if all(cands[s.key].values())]
    built = ilp.build(problem, modelled, cands, free, {}, dist, exact_latency=exact_latency)
    out = solve(built.prob, SolveOptions(solver="highs", gap_rel=0.0, time_limit_s=120), warm_start=False)
    assert out.kind == "optimal" and out.objective is not None
    # Dropping a dominated flavour never empties an NF's options, so both models hold the same slices.
    return out.objective, built


def _x_count(built: ilp.Built) -> int:
    return sum(len(opts) for xs in built.x.values() for opts in xs.values())


@needs_highs
@pytest.mark.parametrize("seed", [1, 2])
def test_dropping_dominated_flavours_keeps_the_exact_optimum(seed: int) -> None:
    problem = instance(seed)
    assert len(problem.topology.hosts) >= 30
    full, full_model = exact_optimum(problem, dominated=True)
    reduced, reduced_model = exact_optimum(problem, dominated=False)
    # The rule removed something (else the comparison proves nothing) and kept the optimum's value.
    assert _x_count(reduced_model) < _x_count(full_model)
    assert reduced == pytest.approx(full, rel=1e-9, abs=1e-6)


def _option(host: str, flavor: Flavor, cpu: int, mem_mi: int, proc: float) -> Option:
    return Option(host, flavor, Resources(cpu, mem_mi * Mi), proc)


def test_a_flavour_is_dropped_only_when_another_on_the_same_host_needs_no_more_of_anything() -> None:
    s = SliceDemand("t/s", (NFDemand("n", "n", "p", MIDDLE),))
    vnf_fog, fnf_fog = _option("fog", Flavor.VNF, 300, 128, 1.0), _option("fog", Flavor.FNF, 80, 16, 0.3)
    fnf_gw = _option("gw", Flavor.FNF, 80, 16, 0.3)
    vnf_gw = _option("gw", Flavor.VNF, 60, 128, 1.0)  # less CPU than the fNF: not dominated
    vnf_cloud = _option("cloud", Flavor.VNF, 300, 128, 1.0)  # alone on its host
    kept = drop_dominated(s, "n", [vnf_fog, fnf_fog, fnf_gw, vnf_gw, vnf_cloud])
    assert kept == [fnf_fog, fnf_gw, vnf_gw, vnf_cloud]


def test_where_an_nf_runs_now_is_never_dropped() -> None:
    running = SliceDemand(
        "t/s", (NFDemand("n", "n", "p", MIDDLE),), current={"n": Assignment("fog", Flavor.VNF)}
    )
    vnf_fog, fnf_fog = _option("fog", Flavor.VNF, 300, 128, 1.0), _option("fog", Flavor.FNF, 80, 16, 0.3)
    assert drop_dominated(running, "n", [vnf_fog, fnf_fog]) == [vnf_fog, fnf_fog]
    # Exactly equal flavours: the running one stays, the other goes.
    twin = _option("fog", Flavor.FNF, 300, 128, 1.0)
    assert drop_dominated(running, "n", [vnf_fog, twin]) == [vnf_fog]


@needs_highs
@pytest.mark.parametrize("seed", [4, 5])
def test_destination_side_pivots_are_valid_and_exact(seed: int) -> None:
    """Pairs into the cloud store (2 hosts) get every destination pivot; their latency variable is
    then never below the true distance, and the model stays a relaxation of the exact one."""
    problem = instance(seed, n_gw=40)
    exact, _ = exact_optimum(problem, dominated=False)
    lazy, built = exact_optimum(problem, dominated=False, exact_latency=False)
    reverse = [p for p in built.pairs.values() if p.dst_pivots]
    assert reverse, "no pair was made exact from the destination side"
    assert lazy <= exact + 1e-6
    dist = distances_for(problem.topology, max_budget(problem))
    found = built.assignments()
    for pair in reverse:
        chosen = found.get(pair.key)
        if chosen is not None:
            true = dist.get(chosen[pair.src].host, chosen[pair.dst].host)
            assert (pair.var.varValue or 0.0) >= true - 1e-6, (pair.key, pair.src, pair.dst)


@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("spare_bytes", [0, -1])
def test_memory_rows_in_mib_stay_exact_to_the_byte(solver: str, spare_bytes: int) -> None:
    """Two 256Mi NFs on a host with exactly 512Mi fit; with one byte less only one does."""
    if solver == "highs" and not highs_available():
        pytest.skip("highspy is not installed")
    host = Host("h", Tier.FOG, frozenset({Flavor.VNF}), Resources(4000, 512 * Mi + spare_bytes), 1.0, 1.0)
    demand = _flavors((100, 256, 0.1), None)
    slices = tuple(SliceDemand(f"t/s{i}", (NFDemand("n", "n", "p", demand),)) for i in range(2))
    problem = Problem(Topology((host,), ()), slices)
    placement = place(problem, SolveOptions(solver=solver, time_limit_s=20))
    assert check(problem, placement) == []
    admitted = sum(1 for sp in placement.slices.values() if sp.admitted)
    assert admitted == (2 if spare_bytes == 0 else 1)


@needs_highs
def test_a_flavour_needing_less_cpu_survives_where_cpu_is_what_binds() -> None:
    """30 gateways and a fog with 250m CPU that two slices' MIDDLE NF must share (a 3 ms budget
    keeps them on it): two fNFs (150m each) do not fit together, an fNF and a vNF (100m, more
    memory) do. Had the vNF been dropped as "dominated" (less memory and processing are not
    enough), one slice would be rejected."""
    rng = random.Random(7)
    topo = tree(30, rng)
    hosts = tuple(
        Host(h.name, h.tier, h.runtimes, Resources(250, 4 * Gi), h.availability, h.cost)
        if h.name == "fog-0"
        else h
        for h in topo.hosts
    )
    topo = Topology(hosts, topo.links)
    att = next(lk.a for lk in topo.links if lk.b == "fog-0" and lk.a.startswith("gw-"))
    mid = NFDemand("mid", "mid", "mid", MIDDLE, None, frozenset({Tier.FOG}))
    slices = tuple(
        SliceDemand(f"t/s{i}", (mid,), (), (BudgetedPath(f"{att}:mid", att, ("mid",), 3.0),))
        for i in range(2)
    )
    problem = Problem(topo, slices)
    reduced, built = exact_optimum(problem, dominated=False)
    full, _ = exact_optimum(problem, dominated=True)
    assert reduced == pytest.approx(full, rel=1e-9, abs=1e-6)
    chosen = built.assignments()
    assert sorted(a["mid"].flavor for a in chosen.values()) == [Flavor.FNF, Flavor.VNF]
