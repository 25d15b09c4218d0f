"""NF sharing in the solver (issue 15): instances as decisions, the sharing-aware checker and
objective, the baseline's sharing, stable instance ids, incremental joins, exactness.

Every test solves real models (PuLP with HiGHS or CBC); the independent checker
(tests/solver/checker.py) and ``evaluation.instance_violations`` check every result.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterator, Mapping

import pytest

from flyslice.solver import (
    Assignment,
    BudgetedPath,
    Edge,
    Flavor,
    FlavorDemand,
    Guarantee,
    Host,
    Link,
    NFDemand,
    Placement,
    Problem,
    Resources,
    Sharing,
    SliceDemand,
    SolveOptions,
    Tier,
    Topology,
    baseline,
    diagnose,
    ilp,
    place,
    placement,
    sharing,
    staged,
)
from flyslice.solver.backends import highs_available
from flyslice.solver.evaluation import instance_violations, true_objective

from .checker import check
from .instances import tiered_problem

Mi = 2**20
POOL = "broker/vnf/any"
SOLVERS = ["highs", "cbc"] if highs_available() else ["cbc"]
EXACT = {"gap_rel": 0.0, "time_limit_s": 60.0}


def gateway_problem(
    n: int,
    *,
    capacity: float = 40.0,
    max_tenants: int | None = None,
    load: float = 10.0,
    gw_memory_mi: int = 512,
    shared: bool = True,
    derated: Mapping[tuple[str, str], float] | None = None,
    running: int = 0,
    running_id: str = f"{POOL}@gw-1#0",
) -> Problem:
    """``n`` slices, each a gateway-tier broker (shareable) at gw-1 feeding a database in the cloud.

    The broker's instance takes 200m/128Mi, each tenant 10m/8Mi more; the first ``running`` slices
    run now (broker on gw-1 in ``running_id``, database in the cloud).
    """
    hosts = (
        Host("cloud", Tier.CLOUD, frozenset({Flavor.VNF}), Resources(16000, 32 * 1024 * Mi), 0.999, 1.0),
        Host("gw-1", Tier.GATEWAY, frozenset({Flavor.VNF}), Resources(4000, gw_memory_mi * Mi), 0.98, 4.0),
    )
    topo = Topology(hosts, (Link("gw-1", "cloud", 5.0),))
    terms = Sharing(POOL, capacity, max_tenants, Resources(10, 8 * Mi)) if shared else None
    broker = {Flavor.VNF: FlavorDemand(Flavor.VNF, Resources(200, 128 * Mi), 0.5, terms)}
    db = {Flavor.VNF: FlavorDemand(Flavor.VNF, Resources(100, 64 * Mi), 1.0)}
    slices = []
    for i in range(n):
        nfs = (
            NFDemand("broker", "broker", "broker", broker, "gw-1", frozenset({Tier.GATEWAY}), load_mbps=load),
            NFDemand("db", "db", "storage", db, None, frozenset({Tier.CLOUD})),
        )
        now = i < running
        slices.append(
            SliceDemand(
                f"ns/s{i:02d}",
                nfs,
                (Edge("broker", "db", load),),
                (BudgetedPath("p", "gw-1", ("broker", "db"), 20.0),),
                current={"broker": Assignment("gw-1", Flavor.VNF), "db": Assignment("cloud", Flavor.VNF)}
                if now
                else {},
                current_instance={"broker": running_id} if now and shared else {},
            )
        )
    return Problem(topo, tuple(slices), derated=derated or {})


def verified(problem: Problem, result: Placement) -> Placement:
    assert check(problem, result) == []
    assert instance_violations(problem, result) == []
    return result


def tenants_per_instance(result: Placement) -> list[int]:
    return sorted((len(i.tenants) for i in result.instances.values()), reverse=True)


def admitted(result: Placement) -> int:
    return sum(sp.admitted for sp in result.slices.values())


@pytest.mark.parametrize("solver", SOLVERS)
def test_two_slices_on_one_gateway_share_one_broker_instance(solver: str) -> None:
    problem = gateway_problem(2)
    result = verified(problem, place(problem, SolveOptions(solver=solver, **EXACT)))
    assert result.guarantee is Guarantee.OPTIMAL
    assert tenants_per_instance(result) == [2]
    (inst,) = result.instances.values()
    assert inst.id == f"{POOL}@gw-1#0" and inst.load_mbps == 20.0 and inst.package == "broker"
    assert {sp.instance_of["broker"] for sp in result.slices.values()} == {inst.id}
    # The gateway pays the instance once plus two tenants.
    assert result.host_usage["gw-1"] == Resources(200 + 2 * 10, (128 + 2 * 8) * Mi)


@pytest.mark.parametrize(
    ("capacity", "max_tenants", "expected"),
    [
        (40.0, None, [10]),  # 10 x 4 Mbit/s fit one instance of 40
        (30.0, None, [7, 3]),  # capacity splits them: 28 + 12
        (100.0, 5, [5, 5]),  # the tenant limit splits them
    ],
)
def test_ten_slices_share_or_split_by_capacity_and_tenant_limit(
    capacity: float, max_tenants: int | None, expected: list[int]
) -> None:
    problem = gateway_problem(10, capacity=capacity, max_tenants=max_tenants, load=4.0)
    result = verified(problem, place(problem, SolveOptions(**EXACT)))
    assert result.guarantee is Guarantee.OPTIMAL and admitted(result) == 10
    assert tenants_per_instance(result) == expected
    assert sorted(result.instances) == [f"{POOL}@gw-1#{n}" for n in range(len(expected))]
    assert all(i.load_mbps <= capacity for i in result.instances.values())


def test_sharing_admits_more_slices_on_a_memory_tight_gateway() -> None:
    # 512Mi: four unshared brokers (128Mi each) fit; shared, one instance of 128Mi + 8Mi per tenant.
    with_sharing = gateway_problem(10, load=4.0)
    without = gateway_problem(10, load=4.0, shared=False)
    shared_result = verified(with_sharing, place(with_sharing, SolveOptions(**EXACT)))
    alone_result = verified(without, place(without, SolveOptions(**EXACT)))
    assert admitted(alone_result) == 4 and alone_result.instances == {}
    assert admitted(shared_result) == 10 and tenants_per_instance(shared_result) == [10]
    assert shared_result.guarantee is Guarantee.OPTIMAL and alone_result.guarantee is Guarantee.OPTIMAL


def test_a_derated_pool_opens_a_second_instance_and_moves_tenants_without_migration_cost() -> None:
    # Four tenants of 10 Mbit/s run in one instance; observed overload derates it to 25 Mbit/s.
    running = gateway_problem(4, running=4)
    assert tenants_per_instance(verified(running, place(running, SolveOptions(**EXACT)))) == [4]
    derated = dataclasses.replace(running, derated={(POOL, "gw-1"): 25.0})
    result = verified(derated, place(derated, SolveOptions(**EXACT)))
    assert admitted(result) == 4 and tenants_per_instance(result) == [2, 2]
    assert all(i.capacity_mbps == 25.0 and i.load_mbps == 20.0 for i in result.instances.values())
    # The instance that keeps two of its tenants keeps its id; the other is new.
    assert sorted(result.instances) == [f"{POOL}@gw-1#0", f"{POOL}@gw-1#1"]
    # Same host, same flavour: a tenant that changes instance is not a migration.
    assert result.objective_terms["migration"] == 0.0


def test_problems_without_sharing_build_no_instance_variables() -> None:
    problem = tiered_problem(30, 12, 4, seed=5)
    ctx = placement._Context.of(problem)
    cands = {s.key: placement.prune(s, problem.topology, ctx.base_free, ctx.dist) for s in problem.slices}
    modelled = [s for s in problem.slices if all(cands[s.key].values())]
    built = ilp.build(problem, modelled, cands, ctx.base_free, {}, ctx.dist)
    assert built.shared == {}
    assert not [v.name for v in built.prob.variables() if v.name[0] in "oy"]
    result = verified(problem, place(problem, SolveOptions(**EXACT)))
    assert result.instances == {} and all(not sp.instance_of for sp in result.slices.values())


def _one_tenant_pools(problem: Problem) -> Problem:
    """Every flavour shared, but at most one tenant per instance and nothing per tenant: the same
    problem as without sharing."""

    def nf_of(nf: NFDemand) -> NFDemand:
        flavors = {
            f: dataclasses.replace(d, sharing=Sharing(f"{nf.package}/{f}", 1e9, 1))
            for f, d in nf.flavors.items()
        }
        return dataclasses.replace(nf, flavors=flavors)

    slices = tuple(dataclasses.replace(s, nfs=tuple(nf_of(nf) for nf in s.nfs)) for s in problem.slices)
    return dataclasses.replace(problem, slices=slices)


@pytest.mark.parametrize("solver", SOLVERS)
def test_one_tenant_instances_give_the_objective_of_no_sharing(solver: str) -> None:
    plain = tiered_problem(8, 8, 3, seed=1, gw_scale=0.2)
    single = _one_tenant_pools(plain)
    a = verified(plain, place(plain, SolveOptions(solver=solver, **EXACT)))
    b = verified(single, place(single, SolveOptions(solver=solver, **EXACT)))
    assert a.guarantee is Guarantee.OPTIMAL and b.guarantee is Guarantee.OPTIMAL
    assert b.objective == pytest.approx(a.objective, rel=1e-9, abs=1e-9)
    assert admitted(a) == admitted(b) < len(plain.slices)  # the gateways bind
    assert all(len(i.tenants) == 1 for i in b.instances.values())
    assert len(b.instances) == sum(len(sp.assignments) for sp in b.slices.values() if sp.admitted)


def test_the_checker_refuses_an_instance_over_its_capacity() -> None:
    problem = gateway_problem(3, load=15.0, gw_memory_mi=170)  # room for one instance, 3 tenants
    result = verified(problem, place(problem, SolveOptions(**EXACT)))
    assert admitted(result) == 2 and tenants_per_instance(result) == [2]  # 45 Mbit/s would not fit
    # A result whose instance carries all three is refused by both checkers.
    (inst,) = result.instances.values()
    keys = sorted(result.slices)
    forced = dataclasses.replace(
        result,
        slices={
            k: dataclasses.replace(
                sp,
                admitted=True,
                assignments={"broker": Assignment("gw-1", Flavor.VNF), "db": Assignment("cloud", Flavor.VNF)},
                path_latency_ms={"p": 6.5},
                instance_of={"broker": inst.id},
            )
            for k, sp in result.slices.items()
        },
        instances={
            inst.id: dataclasses.replace(inst, tenants=tuple((k, "broker") for k in keys), load_mbps=45.0)
        },
    )
    assert any("over its capacity" in e for e in instance_violations(problem, forced))
    assert any("load 45.0 Mbit/s > capacity 40.0" in e for e in check(problem, forced))
    # The solver's re-check of an answer that packs all three into one instance: the third tenant
    # gets an instance of its own, which the gateway has no room for, so its slice is dropped.
    ctx = placement._Context.of(problem)
    everywhere = {
        k: {"broker": Assignment("gw-1", Flavor.VNF), "db": Assignment("cloud", Flavor.VNF)} for k in keys
    }
    one = {(k, "broker"): sharing.label(POOL, "gw-1", "new0") for k in keys}
    kept, packed = placement._checked(ctx, everywhere, placement._Held({}, {}), one)
    assert sorted(kept) == keys[:2] and set(packed.values()) == {one[(keys[0], "broker")]}


def test_a_lone_tenant_over_every_instance_capacity_is_refused_with_a_reason() -> None:
    problem = gateway_problem(2, load=50.0)
    result = verified(problem, place(problem, SolveOptions(**EXACT)))
    assert admitted(result) == 0
    for sp in result.slices.values():
        assert any("carries 50 Mbit/s, more than one instance" in r for r in sp.reasons), sp.reasons


def test_the_baseline_joins_open_instances_before_opening_new_ones() -> None:
    problem = gateway_problem(10, load=4.0, capacity=30.0)
    result = verified(problem, baseline(problem))
    assert result.method == "baseline" and admitted(result) == 10
    # First fit in priority order: seven tenants fill the first instance (28 of 30), three the second.
    assert tenants_per_instance(result) == [7, 3]
    unshared = gateway_problem(10, load=4.0, capacity=30.0, shared=False)
    assert admitted(verified(unshared, baseline(unshared))) == 4


def _replanned(problem: Problem, result: Placement, order: slice = slice(None)) -> Problem:
    """``problem`` with every admitted slice running where ``result`` put it."""
    slices = []
    for s in problem.slices[order]:
        sp = result.slices[s.key]
        if sp.admitted:
            s = dataclasses.replace(s, current=dict(sp.assignments), current_instance=dict(sp.instance_of))
        slices.append(s)
    return dataclasses.replace(problem, slices=tuple(slices))


def test_instance_ids_are_stable_across_replans() -> None:
    problem = gateway_problem(9, load=4.0, capacity=20.0)  # two instances: 5 and 4 tenants
    first = verified(problem, place(problem, SolveOptions(**EXACT)))
    assert len(first.instances) == 2 and tenants_per_instance(first) == [5, 4]
    # Re-planned with the slices in reverse order (the model numbers its instances differently).
    again_problem = _replanned(problem, first, slice(None, None, -1))
    again = verified(again_problem, place(again_problem, SolveOptions(**EXACT)))
    assert {k: sp.instance_of for k, sp in again.slices.items()} == {
        k: sp.instance_of for k, sp in first.slices.items()
    }
    # Ids are kept whatever their number; a new instance takes the smallest n not in use.
    renamed = {iid: f"{POOL}@gw-1#{n}" for iid, n in zip(sorted(first.instances), (3, 7), strict=True)}
    running = _replanned(problem, first)
    running = dataclasses.replace(
        running,
        slices=tuple(
            dataclasses.replace(s, current_instance={n: renamed[i] for n, i in s.current_instance.items()})
            for s in running.slices
        )
        + tuple(
            dataclasses.replace(s, key=f"ns/new{i}")
            for i, s in enumerate(gateway_problem(2, load=4.0, capacity=20.0).slices)
        ),
    )
    grown = verified(running, place(running, SolveOptions(**EXACT)))
    assert admitted(grown) == 11 and sorted(grown.instances) == [f"{POOL}@gw-1#{n}" for n in (0, 3, 7)]
    for k, sp in first.slices.items():
        assert grown.slices[k].instance_of["broker"] == renamed[sp.instance_of["broker"]]


@pytest.mark.parametrize("solver", SOLVERS)
def test_incremental_admission_joins_a_running_instance_without_moving_its_tenants(solver: str) -> None:
    # gw-1 holds one instance with three running tenants and room for one tenant more, but no room
    # for a second instance: the new slice is admitted only by joining the running one.
    problem = gateway_problem(4, running=3, gw_memory_mi=128 + 4 * 8 + 60, running_id=f"{POOL}@gw-1#4")
    result = verified(problem, place(problem, SolveOptions(solver=solver, mode="incremental", **EXACT)))
    assert result.guarantee is Guarantee.RESTRICTED and admitted(result) == 4
    assert result.method == "ilp"  # the model itself lets the new tenant join (the baseline does too)
    assert list(result.instances) == [f"{POOL}@gw-1#4"]
    assert result.slices["ns/s03"].instance_of == {"broker": f"{POOL}@gw-1#4"}
    for s in problem.slices[:3]:
        assert result.slices[s.key].assignments == s.current
    # With a tenant limit of three the running instance is full: the new slice cannot be placed.
    full = gateway_problem(
        4, running=3, max_tenants=3, gw_memory_mi=128 + 4 * 8 + 60, running_id=f"{POOL}@gw-1#4"
    )
    refused = verified(full, place(full, SolveOptions(solver=solver, mode="incremental", **EXACT)))
    assert admitted(refused) == 3 and not refused.slices["ns/s03"].admitted
    # The diagnosis against the running slices says why (capacity), not "it fits".
    reasons = diagnose(full, refused, keys=["ns/s03"])["ns/s03"]
    assert reasons and any("gw-1" in r for r in reasons), reasons


# ---------------------------------------------------------------- exactness against brute force


def tiny_problem() -> Problem:
    """Two gateways and a fog; four slices, each a shareable broker (any host within 3 ms of its
    gateway) and an unshared processor on a gateway. Loads differ, so the packing matters."""
    hosts = (
        Host("fog", Tier.FOG, frozenset({Flavor.VNF}), Resources(2000, 1024 * Mi), 0.99, 2.0),
        Host("gw-1", Tier.GATEWAY, frozenset({Flavor.VNF}), Resources(1000, 420 * Mi), 0.98, 4.0),
        Host("gw-2", Tier.GATEWAY, frozenset({Flavor.VNF}), Resources(1000, 300 * Mi), 0.98, 4.0),
    )
    topo = Topology(hosts, (Link("gw-1", "fog", 1.0), Link("gw-2", "fog", 1.0)))
    terms = Sharing("b", 40.0, 3, Resources(10, 16 * Mi))
    broker = {Flavor.VNF: FlavorDemand(Flavor.VNF, Resources(100, 128 * Mi), 0.5, terms)}
    proc = {Flavor.VNF: FlavorDemand(Flavor.VNF, Resources(300, 150 * Mi), 0.3)}
    gw = frozenset({Tier.GATEWAY})
    slices = []
    for i, (att, load, prio) in enumerate(
        [("gw-1", 25.0, 0), ("gw-1", 15.0, 1), ("gw-2", 20.0, 0), ("gw-2", 10.0, 2)]
    ):
        nfs = (
            NFDemand("b", "b", "broker", broker, load_mbps=load),
            NFDemand("p", "p", "proc", proc, None, gw),
        )
        paths = (BudgetedPath("path", att, ("b", "p"), 3.5),)
        slices.append(SliceDemand(f"t/s{i}", nfs, (Edge("b", "p", load),), paths, priority=prio))
    return Problem(topo, tuple(slices))


def _partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        yield [[first], *part]


def brute_force(problem: Problem) -> float:
    """The least objective over every placement and every packing, computed from docs/solver.md."""
    topo = problem.topology
    hosts = topo.host_by_name
    dist = {a: {b: topo.distance_ms(a, b) for b in hosts} for a in hosts}
    ref_cpu = max(h.capacity.cpu_millis for h in topo.hosts)
    ref_mem = max(h.capacity.memory_bytes for h in topo.hosts)
    lowest = min(s.priority for s in problem.slices)
    w = problem.weights

    def cost(host: str, r: Resources) -> float:
        return w.resource * hosts[host].cost * (r.cpu_millis / ref_cpu + r.memory_bytes / ref_mem)

    per_slice: list[list[dict[str, str] | None]] = []
    for s in problem.slices:
        choices: list[dict[str, str] | None] = [None]
        spots = [
            [h.name for h in topo.hosts if nf.allowed_tiers is None or h.tier in nf.allowed_tiers]
            for nf in s.nfs
        ]
        choices += [
            dict(zip([nf.id for nf in s.nfs], combo, strict=True)) for combo in itertools.product(*spots)
        ]
        per_slice.append(choices)
    best = math.inf
    for combo in itertools.product(*per_slice):
        value, usage, groups, ok = 0.0, {h: Resources() for h in hosts}, {}, True
        for s, where in zip(problem.slices, combo, strict=True):
            if where is None:
                value += w.rejection * (1 + s.priority - lowest)
                continue
            for p in s.paths:
                here, lat = p.attachment, 0.0
                for nf_id in p.nfs:
                    d = dist[here][where[nf_id]]
                    lat += (d if d is not None else math.inf) + s.nf_by_id[nf_id].flavors[
                        Flavor.VNF
                    ].processing_latency_ms
                    here = where[nf_id]
                ok &= lat <= p.budget_ms + 1e-9
                value += w.latency * lat / p.budget_ms
            for nf in s.nfs:
                demand = nf.flavors[Flavor.VNF]
                if demand.sharing is None:
                    usage[where[nf.id]] += demand.resources
                    value += cost(where[nf.id], demand.resources)
                else:
                    usage[where[nf.id]] += demand.sharing.per_tenant
                    value += cost(where[nf.id], demand.sharing.per_tenant)
                    groups.setdefault((demand, where[nf.id]), []).append(nf.load_mbps)
        if not ok:
            continue
        for (demand, host), loads in groups.items():
            sh = demand.sharing
            assert sh is not None
            cap = problem.derated.get((sh.pool, host), sh.capacity_mbps)
            fewest = min(
                (
                    len(part)
                    for part in _partitions(list(range(len(loads))))
                    if all(
                        sum(loads[i] for i in b) <= cap + 1e-9
                        and (sh.max_tenants is None or len(b) <= sh.max_tenants)
                        for b in part
                    )
                ),
                default=None,
            )
            if fewest is None:
                ok = False
                break
            for _ in range(fewest):
                usage[host] += demand.resources
                value += cost(host, demand.resources)
        if ok and all(usage[h].fits_in(hosts[h].capacity) for h in hosts):
            best = min(best, value)
    return best


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize(("memory_mi", "expected"), [(3 * 136 + 20, 3), (2 * 136 + 8 + 20, 2)])
def test_counted_instances_that_do_not_pack_are_made_exact(
    solver: str, memory_mi: int, expected: int
) -> None:
    # Three tenants of 12 Mbit/s, instances of 20: by count their 36 Mbit/s fit two instances, but
    # no two of them fit one. The model counts instances first; the answer does not pack, so the
    # group is made exact and solved again.
    problem = gateway_problem(3, load=12.0, capacity=20.0, gw_memory_mi=memory_mi)
    result = verified(problem, place(problem, SolveOptions(solver=solver, **EXACT)))
    assert result.guarantee is Guarantee.OPTIMAL
    assert admitted(result) == expected and tenants_per_instance(result) == [1] * expected
    assert result.objective == pytest.approx(brute_force(problem), rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("solver", SOLVERS)
def test_the_model_is_exact_against_exhaustive_search(solver: str) -> None:
    problem = tiny_problem()
    expected = brute_force(problem)
    result = verified(problem, place(problem, SolveOptions(solver=solver, **EXACT)))
    assert result.guarantee is Guarantee.OPTIMAL
    assert result.objective == pytest.approx(expected, rel=1e-7, abs=1e-7)
    assert any(len(i.tenants) > 1 for i in result.instances.values())  # sharing is part of the optimum
    # The same with the pool derated on the fog: three instances there instead of two, still exact.
    derated = dataclasses.replace(problem, derated={("b", "fog"): 26.0})
    result = verified(derated, place(derated, SolveOptions(solver=solver, **EXACT)))
    assert result.guarantee is Guarantee.OPTIMAL
    assert result.objective == pytest.approx(brute_force(derated), rel=1e-7, abs=1e-7)


# ---------------------------------------------------------------- at scale


def shared_tiered(hosts: int, slices: int, nfs: int, seed: int) -> Problem:
    """``tiered_problem`` with its gateway ingest (fNF) and middle NFs (VNF) shareable, 2-12 Mbit/s each."""
    import random

    plain = tiered_problem(hosts, slices, nfs, seed=seed, gw_scale=0.6)
    rng = random.Random(f"shared/{hosts}/{slices}/{nfs}/{seed}")
    pools = {
        "pkg-0": (Flavor.FNF, 40.0, 8),
        "pkg-1": (Flavor.VNF, 60.0, None),
        "pkg-2": (Flavor.VNF, 30.0, 4),
    }

    def nf_of(nf: NFDemand) -> NFDemand:
        if nf.package not in pools:
            return nf
        flavor, cap, most = pools[nf.package]
        if flavor not in nf.flavors:
            return nf
        d = nf.flavors[flavor]
        terms = Sharing(f"{nf.package}/{flavor}/any", cap, most, Resources(5, 2 * Mi))
        return dataclasses.replace(
            nf,
            flavors={**nf.flavors, flavor: dataclasses.replace(d, sharing=terms)},
            load_mbps=float(rng.randint(2, 12)),
        )

    return dataclasses.replace(
        plain,
        slices=tuple(dataclasses.replace(s, nfs=tuple(nf_of(nf) for nf in s.nfs)) for s in plain.slices),
    )


def test_a_36_host_instance_with_sharing_passes_the_checker_and_beats_the_baseline() -> None:
    problem = shared_tiered(36, 30, 4, seed=11)
    result = verified(problem, place(problem, SolveOptions(time_limit_s=30.0)))
    base = verified(problem, baseline(problem))
    assert result.objective is not None and base.objective is not None
    assert result.objective <= base.objective + 1e-9
    assert admitted(result) >= admitted(base)
    assert any(len(i.tenants) > 1 for i in result.instances.values())
    assert result.guarantee is not Guarantee.HEURISTIC
    # The objective the re-optimisation compares placements with agrees with the result's.
    placed = {k: dict(sp.assignments) for k, sp in result.slices.items() if sp.admitted}
    ids = {k: sp.instance_of for k, sp in result.slices.items()}
    assert true_objective(problem, placed, ids) == pytest.approx(result.objective, rel=1e-9)


def test_the_restricted_first_pass_keeps_sharing_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = shared_tiered(24, 12, 4, seed=5)
    alone = verified(problem, place(problem, SolveOptions(**EXACT)))
    monkeypatch.setattr(staged, "MIN_OPTIONS", 0)
    monkeypatch.setattr(staged, "MIN_SECONDS", 0.0)
    staged_result = verified(problem, place(problem, SolveOptions(**EXACT)))
    assert alone.guarantee is Guarantee.OPTIMAL and staged_result.guarantee is Guarantee.OPTIMAL
    assert staged_result.objective == pytest.approx(alone.objective, rel=1e-9, abs=1e-9)


def test_inconsistent_pools_are_refused_naming_the_nfs() -> None:
    problem = gateway_problem(2)
    s0, s1 = problem.slices
    other = dataclasses.replace(
        s1.nf_by_id["broker"],
        flavors={
            Flavor.VNF: dataclasses.replace(
                s1.nf_by_id["broker"].flavors[Flavor.VNF], resources=Resources(300, 128 * Mi)
            )
        },
    )
    bad = dataclasses.replace(problem, slices=(s0, dataclasses.replace(s1, nfs=(other, s1.nfs[1]))))
    with pytest.raises(
        ValueError, match=r"slice ns/s01: NF 'broker'.*pool 'broker/vnf/any'.*NF 'broker' of slice ns/s00"
    ):
        place(bad)
