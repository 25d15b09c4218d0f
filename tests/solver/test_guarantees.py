"""What a placement says it is worth (issue 13): restricted models are never reported as proofs, a
time-out is never reported optimal, the answer is never worse than the baseline it started from, and
``place()`` keeps to its time limit, diagnosis included."""

from __future__ import annotations

import dataclasses
import time

import pytest

from flyslice.solver import (
    BudgetedPath,
    Flavor,
    FlavorDemand,
    Guarantee,
    Host,
    Link,
    NFDemand,
    Placement,
    Problem,
    Resources,
    SliceDemand,
    SolveOptions,
    SolverStatus,
    Tier,
    Topology,
    Weights,
    baseline,
    place,
)

from .checker import check
from .instances import Mi, tiered_problem, wildfire_slice, wildfire_topology
from .test_modes import RUNNING

SOLVERS = ["cbc", "highs"]


def overloaded() -> Problem:
    """80 slices on 40 hosts with gateways at 0.2 of their size: about half cannot fit."""
    return tiered_problem(40, 80, 4, gw_scale=0.2)


#: The only reason text that claims a rejection is proven for the full model.
PROVEN = "not together with the admitted slices"


def _one_nf_slice(
    key: str, attachment: str, cpu: int, priority: int = 0, tiers: frozenset[Tier] | None = None
) -> SliceDemand:
    flavors = {Flavor.VNF: FlavorDemand(Flavor.VNF, Resources(cpu, 100 * Mi), 0.5)}
    return SliceDemand(
        key,
        (NFDemand("n", "r", "p", flavors, None, tiers),),
        paths=(BudgetedPath("p", attachment, ("n",), 10.0),),
        priority=priority,
    )


def two_hosts(small_cpu: int = 1000) -> Topology:
    hosts = (
        Host("a", Tier.GATEWAY, frozenset({Flavor.VNF}), Resources(small_cpu, 1024 * Mi)),
        Host("b", Tier.FOG, frozenset({Flavor.VNF}), Resources(100000, 100000 * Mi)),
    )
    return Topology(hosts, (Link("a", "b", 1.0),))


def admitted(p: Placement) -> int:
    return sum(1 for sp in p.slices.values() if sp.admitted)


def weighted(problem: Problem, p: Placement) -> int:
    low = min(s.priority for s in problem.slices)
    return sum(1 + s.priority - low for s in problem.slices if p.slices[s.key].admitted)


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_candidate_cap_is_a_restriction_not_a_proof(solver: str) -> None:
    # Host a (the attachment, most latency slack) has room for one slice, b for all: with one
    # candidate per NF every NF is capped to a. Before issue 13 this said Infeasible, gap 0, and
    # "add capacity" for two slices.
    problem = Problem(two_hosts(), tuple(_one_nf_slice(f"ns/s{i}", "a", 600) for i in range(3)))
    capped = place(problem, SolveOptions(solver=solver, max_candidates=1))
    assert check(problem, capped) == []
    assert capped.guarantee is Guarantee.RESTRICTED
    assert capped.restrictions == ("candidate cap k=1",)
    assert capped.status not in (SolverStatus.OPTIMAL, SolverStatus.INFEASIBLE)
    # The baseline's own choices widen the capped model, so it admits what the baseline admits.
    assert admitted(capped) == admitted(baseline(problem)) == 3
    exact = place(problem, SolveOptions(solver=solver))
    assert (exact.guarantee, exact.status, exact.restrictions) == (
        Guarantee.OPTIMAL,
        SolverStatus.OPTIMAL,
        (),
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_rejection_under_the_cap_names_the_cap_instead_of_asking_for_capacity(solver: str) -> None:
    # "hi" may run anywhere but is capped to a (its closest host); "lo" may only run on a (gateway
    # tier). a holds one of them: the full model puts hi on b and admits both.
    problem = Problem(
        two_hosts(),
        (
            _one_nf_slice("ns/hi", "a", 600, priority=1),
            _one_nf_slice("ns/lo", "a", 600, tiers=frozenset({Tier.GATEWAY})),
        ),
    )
    capped = place(problem, SolveOptions(solver=solver, max_candidates=1))
    assert check(problem, capped) == []
    assert capped.guarantee is Guarantee.RESTRICTED
    lo = capped.slices["ns/lo"]
    assert not lo.admitted
    assert any("candidate cap k=1" in r and "not proven for the full model" in r for r in lo.reasons), (
        lo.reasons
    )
    assert not any(PROVEN in r for r in lo.reasons)
    assert capped.status is not SolverStatus.INFEASIBLE
    exact = place(problem, SolveOptions(solver=solver))
    assert exact.guarantee is Guarantee.OPTIMAL and admitted(exact) == 2


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_proven_rejection_is_reported_as_proven(solver: str) -> None:
    # Only host a (room for one slice) can run these NFs: rejecting one is optimal and proven.
    problem = Problem(
        two_hosts(),
        tuple(_one_nf_slice(f"ns/s{i}", "a", 600, tiers=frozenset({Tier.GATEWAY})) for i in range(2)),
    )
    result = place(problem, SolveOptions(solver=solver))
    assert (result.guarantee, result.status) == (Guarantee.OPTIMAL, SolverStatus.INFEASIBLE)
    (rejected,) = [sp for sp in result.slices.values() if not sp.admitted]
    assert not any("not proven" in r for r in rejected.reasons), rejected.reasons


def test_incremental_mode_is_a_named_restriction() -> None:
    old = dataclasses.replace(wildfire_slice(key="default/old", budget_ms=11.0), current=RUNNING)
    new = wildfire_slice(key="default/new", attachments=("gw-1",))
    problem = Problem(wildfire_topology(), (old, new), weights=Weights(migration=0.001))
    inc = place(problem, SolveOptions(mode="incremental"))
    assert inc.guarantee is Guarantee.RESTRICTED
    assert inc.restrictions == ("incremental mode: 1 running slice(s) held fixed",)
    assert inc.status is SolverStatus.FEASIBLE
    full = place(problem)
    assert (full.guarantee, full.restrictions) == (Guarantee.OPTIMAL, ())
    # Nothing running yet: incremental mode holds nothing fixed, so nothing is restricted.
    fresh = place(Problem(wildfire_topology(), (new,)), SolveOptions(mode="incremental"))
    assert fresh.guarantee is Guarantee.OPTIMAL


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_time_limited_answer_is_never_worse_than_the_baseline(solver: str) -> None:
    # 50 hosts, 60 slices, gateways shrunk: the solver cannot finish in 3 s. Before issue 13 the
    # last cut round's answer was returned, e.g. 45 slices admitted against the baseline's 60.
    problem = tiered_problem(50, 60, 4, gw_scale=0.3)
    base = baseline(problem)
    result = place(problem, SolveOptions(solver=solver, time_limit_s=3.0))
    assert check(problem, result) == []
    assert result.objective is not None and base.objective is not None
    assert result.objective <= base.objective + 1e-6
    assert weighted(problem, result) >= weighted(problem, base)
    assert admitted(result) >= admitted(base)
    assert result.guarantee is not Guarantee.RESTRICTED


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_time_out_is_never_reported_optimal(solver: str) -> None:
    # 80 slices on 40 hosts with tiny gateways (about half cannot fit): the LP bound of such an
    # instance stays far below its optimum for many seconds, so nothing can be proven within 1 s;
    # whatever the solver says, the placement must not claim it.
    problem = overloaded()
    result = place(problem, SolveOptions(solver=solver, time_limit_s=1.0))
    assert check(problem, result) == []
    assert result.guarantee in (Guarantee.FEASIBLE_WITH_GAP, Guarantee.HEURISTIC)
    assert result.status not in (SolverStatus.OPTIMAL, SolverStatus.INFEASIBLE)
    assert result.gap is None or result.gap > 0.005
    rejected = [sp for sp in result.slices.values() if not sp.admitted]
    assert rejected, "the instance is overloaded"
    for sp in rejected:
        assert not any(PROVEN in r for r in sp.reasons), sp.reasons
        assert any("not proven" in r for r in sp.reasons), sp.reasons


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("limit", [1.0, 2.0])
def test_place_keeps_to_its_time_limit_diagnosis_included(solver: str, limit: float) -> None:
    # Rejected slices need per-slice diagnosis; before issue 13 it (and the model build) ran after
    # the limit: 2.7-4.8 s on these 1-2 s limits. A behaviour bound, not a speed target: 5 % plus
    # 0.5 s of slack for a loaded machine, 1 s for CBC: PuLP waits for its subprocess, whose root LP
    # and MIP start do not check the clock (docs/solver.md, "Limits of the time bound"; 0.61 and
    # 0.77 s over in two CI runs at load ~4, against a 0.5 s slack).
    problem = overloaded()
    start = time.perf_counter()
    result = place(problem, SolveOptions(solver=solver, time_limit_s=limit))
    wall = time.perf_counter() - start
    slack = 1.0 if solver == "cbc" else 0.5
    assert wall <= limit * 1.05 + slack, f"place() took {wall:.2f}s on a {limit:g}s limit"
    assert result.seconds <= wall
    rejected = [sp for sp in result.slices.values() if not sp.admitted]
    assert rejected and all(sp.reasons for sp in rejected)
    assert check(problem, result) == []
