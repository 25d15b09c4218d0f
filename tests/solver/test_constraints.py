"""One instance per constraint: each breaks only that constraint and must be refused with a
reason a user can act on (and its near twin that respects the constraint is admitted)."""

from __future__ import annotations

import dataclasses

import pytest

from flyslice.solver import (
    BudgetedPath,
    Edge,
    Flavor,
    FlavorDemand,
    Host,
    NFDemand,
    Problem,
    Resources,
    SliceDemand,
    SolveOptions,
    SolverStatus,
    Tier,
    Topology,
    baseline,
    diagnose,
    place,
)

from .checker import check
from .instances import Mi, wildfire_problem, wildfire_slice, wildfire_topology

KEY = "default/wildfire"


def refused(problem: Problem, solver: str = "cbc") -> tuple[str, ...]:
    result = place(problem, SolveOptions(solver=solver))
    assert check(problem, result) == []
    sp = result.slices[KEY]
    assert not sp.admitted
    assert result.status is SolverStatus.INFEASIBLE
    assert sp.reasons and all(r and r != "Infeasible" for r in sp.reasons)
    return tuple(str(r) for r in sp.reasons)


def admitted(problem: Problem) -> None:
    result = place(problem)
    assert result.slices[KEY].admitted, result.slices[KEY].reasons
    assert check(problem, result) == []


def with_hosts(problem: Problem, **changes: dict[str, object]) -> Problem:
    hosts = tuple(
        dataclasses.replace(h, **changes.get(h.name.replace("-", "_"), {})) for h in problem.topology.hosts
    )
    return dataclasses.replace(problem, topology=Topology(hosts, problem.topology.links))


def test_runtime_gateways_without_the_fnf_runtime_refuse_gateway_nfs() -> None:
    problem = with_hosts(wildfire_problem(), gw_1={"runtimes": frozenset()}, gw_2={"runtimes": frozenset()})
    reasons = refused(problem)
    assert reasons[0] == (
        "NF broker-gw@gw-1 (broker) needs runtime fnf/vnf on a gateway host, "
        "and none of those hosts offers it (they offer: no runtime)"
    )


def test_isolation_required_forbids_fnf_and_gateways_only_run_fnf() -> None:
    reasons = refused(wildfire_problem(isolation=True))
    assert all("isolation: required" in r for r in reasons)
    # The same slice without the isolation demand fits.
    admitted(wildfire_problem(isolation=False))


def test_isolation_required_moves_fog_nfs_to_vnf() -> None:
    topo = wildfire_topology()
    # Only fog and cloud NFs: isolation then means VNF everywhere, which still fits.
    s = wildfire_slice(isolation=True)
    keep = {"broker-fog", "sp-fog", "broker-cloud", "sp-cloud", "db"}
    s = dataclasses.replace(
        s,
        nfs=tuple(nf for nf in s.nfs if nf.id in keep),
        edges=(),
        paths=(BudgetedPath("p", "gw-1", ("broker-fog", "sp-fog", "broker-cloud", "sp-cloud", "db"), 10.0),),
    )
    result = place(Problem(topo, (s,)))
    sp = result.slices[KEY]
    assert sp.admitted
    assert {a.flavor for a in sp.assignments.values()} == {Flavor.VNF}


def test_tier_nf_restricted_to_a_tier_without_hosts() -> None:
    nf = NFDemand(
        "db",
        "db",
        "storage",
        {Flavor.VNF: FlavorDemand(Flavor.VNF, Resources(100, Mi))},
        None,
        frozenset({Tier.FOG}),
    )
    topo = Topology((Host("cloud", Tier.CLOUD, frozenset({Flavor.VNF}), Resources(1000, 1024 * Mi)),), ())
    reasons = refused(Problem(topo, (SliceDemand(KEY, (nf,)),)))
    assert reasons == ("NF db (storage) may only run on a fog host, and there is none",)
    nf_any = dataclasses.replace(nf, allowed_tiers=None)
    admitted(Problem(topo, (SliceDemand(KEY, (nf_any,)),)))


def test_memory_capacity_counts_background_and_names_the_shortfall() -> None:
    problem = dataclasses.replace(wildfire_problem(), background={"gw-2": Resources(0, 500 * Mi)})
    reasons = refused(problem)
    assert reasons == (
        "no host within 10 ms of gw-2 can run stream-processor (sp-gw@gw-2): gw-2 has 12Mi memory free, needs 16Mi",
    )
    admitted(dataclasses.replace(wildfire_problem(), background={"gw-2": Resources(0, 488 * Mi)}))


def test_cpu_capacity_counts_background() -> None:
    problem = dataclasses.replace(wildfire_problem(), background={"gw-1": Resources(960, 0)})
    reasons = refused(problem)
    assert "gw-1 has 40m CPU free, needs 50m" in reasons[0]
    admitted(dataclasses.replace(wildfire_problem(), background={"gw-1": Resources(850, 0)}))


def test_capacity_shared_by_nfs_of_one_slice() -> None:
    # Each gateway NF fits alone on gw-1 (150m free) but not both (150m needed... plus 50m).
    problem = dataclasses.replace(wildfire_problem(), background={"gw-1": Resources(870, 0)})
    reasons = refused(problem)
    assert any("not all together" in r and "gw-1" in r for r in reasons), reasons


def test_latency_budget_below_the_fastest_placement() -> None:
    reasons = refused(wildfire_problem(budget_ms=9.0))
    assert reasons[0] == (
        "path gw-1:broker-gw->db: no placement meets its 9 ms budget from gw-1; "
        "the fastest needs at least 9.4 ms (4.4 ms of it NF processing)"
    )
    admitted(wildfire_problem(budget_ms=9.4))


def test_availability_target_above_the_series_product() -> None:
    reasons = refused(wildfire_problem(availability=0.95))
    assert any("availability target 0.95" in r and "0.9498" in r for r in reasons)


def test_link_bandwidth_where_declared() -> None:
    s = wildfire_slice()
    heavy = tuple(
        dataclasses.replace(e, bandwidth_mbps=60.0) if e.src == "sp-gw@gw-1" else e for e in s.edges
    )
    ok = dataclasses.replace(s, edges=heavy)
    admitted(Problem(wildfire_topology(), (ok,)))
    # Two edges of 60 Mbit/s cross gw-1 -- fog-1 (100 Mbit/s) only if a second one is added.
    extra = (*heavy, Edge("broker-gw@gw-1", "broker-fog", 60.0))
    reasons = refused(Problem(wildfire_topology(), (dataclasses.replace(s, edges=extra),)))
    assert any("bandwidth" in r for r in reasons)


def test_bad_input_refuses_only_that_slice_and_names_the_field() -> None:
    good = wildfire_slice(key="default/good")
    bad = dataclasses.replace(
        wildfire_slice(key=KEY), paths=(BudgetedPath("p", "gw-9", ("broker-fog", "nope"), 10.0),)
    )
    result = place(Problem(wildfire_topology(), (bad, good)))
    assert result.slices["default/good"].admitted
    reasons = result.slices[KEY].reasons
    assert f"slice {KEY}: path 'p': attachment 'gw-9' is not a known host" in reasons
    assert f"slice {KEY}: path 'p': unknown NF 'nope'" in reasons


def test_admission_by_priority_when_not_everything_fits() -> None:
    # Gateways have room for one slice's gateway NFs only.
    bg = {"gw-1": Resources(800, 0), "gw-2": Resources(800, 0)}
    low = wildfire_slice(key="default/low", priority=0)
    high = wildfire_slice(key="default/high", priority=5)
    problem = Problem(wildfire_topology(), (low, high), bg)
    result = place(problem)
    assert check(problem, result) == []
    assert result.slices["default/high"].admitted
    assert not result.slices["default/low"].admitted
    assert result.status is SolverStatus.INFEASIBLE
    assert "gw-" in result.slices["default/low"].reasons[0]
    assert "already taken by admitted slices" in result.slices["default/low"].reasons[0]
    swapped = Problem(wildfire_topology(), (dataclasses.replace(low, priority=9), high), bg)
    assert place(swapped).slices["default/low"].admitted


def test_admission_maximises_the_number_of_slices() -> None:
    # One big slice or two small ones fit on gw-1; equal priority: two beat one.
    topo = Topology((Host("gw-1", Tier.GATEWAY, frozenset({Flavor.FNF}), Resources(200, 512 * Mi)),), ())

    def one_nf(key: str, cpu: int) -> SliceDemand:
        nf = NFDemand("f", "f", "pkg", {Flavor.FNF: FlavorDemand(Flavor.FNF, Resources(cpu, Mi))})
        return SliceDemand(key, (nf,))

    problem = Problem(topo, (one_nf("a/big", 150), one_nf("b/small1", 100), one_nf("c/small2", 100)))
    result = place(problem)
    assert [k for k, sp in result.slices.items() if sp.admitted] == ["b/small1", "c/small2"]
    assert check(problem, result) == []


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_diagnose_explains_each_slice_alone(solver: str) -> None:
    problem = Problem(
        wildfire_topology(),
        (wildfire_slice(key="a/fine"), wildfire_slice(key="b/slow", budget_ms=5.0)),
    )
    found = diagnose(problem, options=SolveOptions(solver=solver))
    assert found["a/fine"] == ()
    assert found["b/slow"] and "5 ms budget" in found["b/slow"][0]


def test_unreachable_attachment() -> None:
    topo = wildfire_topology()
    cut = Topology(
        (*topo.hosts, Host("gw-3", Tier.GATEWAY, frozenset({Flavor.FNF}), Resources(1000, 512 * Mi))),
        topo.links,
    )
    reasons = refused(Problem(cut, (wildfire_slice(attachments=("gw-3",)),)))
    assert reasons == (
        "path gw-3:broker-gw->db: from gw-3, no route of at most 10 ms reaches hosts that can run "
        "its NFs in order; link the attachment closer to them",
    )


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_nothing_to_place_is_optimal(solver: str) -> None:
    result = place(Problem(wildfire_topology(), ()), SolveOptions(solver=solver))
    assert result.status is SolverStatus.OPTIMAL
    assert result.method == "ilp"
    assert result.slices == {}


def test_budget_below_the_processing_alone() -> None:
    reasons = refused(wildfire_problem(budget_ms=3.0))
    assert reasons[0] == (
        "path gw-1:broker-gw->db: its NFs' processing alone takes at least 4.4 ms, over its 3 ms budget; "
        "raise the budget or use faster flavours"
    )


def test_baseline_respects_link_bandwidth() -> None:
    s = wildfire_slice()
    heavy = (*s.edges, Edge("broker-gw@gw-1", "broker-fog", 60.0), Edge("sp-gw@gw-1", "broker-fog", 60.0))
    problem = Problem(wildfire_topology(), (dataclasses.replace(s, edges=heavy),))
    result = baseline(problem)
    assert check(problem, result) == []
    sp = result.slices[KEY]
    assert not sp.admitted
    assert "link fog-1-gw-1 lacks bandwidth (120 Mbit/s needed, 100 free)" in sp.reasons[0]
