"""Consolidation of shared instances (solver/consolidate.py) on place()'s product path.

The greedy baseline opens an instance of a shareable NF at each user's own gateway; one instance on
any gateway serves them all within budget, for less. ``place()`` must return fewer instances and a
lower true objective than the baseline even when the MIP solver gives no answer (here it fails on
purpose, as bundled CBC can when its time limit hits), and problems without sharing never run it.
Every result passes the independent checker.
"""

from __future__ import annotations

import pulp
import pytest

from flyslice.solver import (
    BudgetedPath,
    Flavor,
    FlavorDemand,
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
    place,
    placement,
)
from flyslice.solver.evaluation import instance_violations, true_objective

from .checker import check

Mi = 2**20
GATEWAYS = 4


def spread_problem(shared: bool = True) -> Problem:
    """One slice per gateway, each a single shareable NF (1000m/512Mi per instance, 10m/8Mi per tenant)
    with a 20 ms budget; the gateways hang off a hub 1 ms away, so any gateway is within 2 ms."""
    hosts = [Host("hub", Tier.FOG, frozenset({Flavor.VNF}), Resources(500, 256 * Mi), 0.999, 1.0)]
    hosts += [
        Host(f"gw-{i}", Tier.GATEWAY, frozenset({Flavor.VNF}), Resources(4000, 4096 * Mi), 0.999, 1.0)
        for i in range(GATEWAYS)
    ]
    links = tuple(Link(f"gw-{i}", "hub", 1.0) for i in range(GATEWAYS))
    terms = Sharing("analytics/vnf/any", 100.0, None, Resources(10, 8 * Mi)) if shared else None
    flavors = {Flavor.VNF: FlavorDemand(Flavor.VNF, Resources(1000, 512 * Mi), 0.5, terms)}
    slices = tuple(
        SliceDemand(
            f"ns/s{i}",
            (NFDemand("an", "an", "analytics", flavors, None, frozenset({Tier.GATEWAY}), load_mbps=10.0),),
            paths=(BudgetedPath("p", f"gw-{i}", ("an",), 20.0),),
        )
        for i in range(GATEWAYS)
    )
    return Problem(Topology(tuple(hosts), links), slices)


def no_answer(*args: object, **kwargs: object) -> None:
    raise pulp.PulpSolverError("no answer (test)")


def verified(problem: Problem, result: Placement) -> Placement:
    assert check(problem, result) == []
    assert instance_violations(problem, result) == []
    return result


def value(problem: Problem, result: Placement) -> float:
    admitted = {k: dict(sp.assignments) for k, sp in result.slices.items() if sp.admitted}
    instance_of = {k: dict(sp.instance_of) for k, sp in result.slices.items() if sp.admitted}
    return true_objective(problem, admitted, instance_of)


def test_place_closes_the_instances_the_baseline_opened_without_a_solver_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problem = spread_problem()
    base = verified(problem, baseline(problem))
    assert len(base.instances) == GATEWAYS  # the greedy's one instance per user gateway
    monkeypatch.setattr(placement, "solve", no_answer)
    result = verified(problem, place(problem, SolveOptions(time_limit_s=5.0)))
    assert all(sp.admitted for sp in result.slices.values())
    assert len(result.instances) == 1
    assert value(problem, result) < value(problem, base) - 0.1


def test_place_with_the_solver_reaches_one_instance() -> None:
    problem = spread_problem()
    result = verified(problem, place(problem, SolveOptions(time_limit_s=10.0)))
    assert len(result.instances) == 1


def test_problems_without_sharing_never_consolidate(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("consolidation ran on a problem without sharing")

    monkeypatch.setattr(placement, "consolidate", forbidden)
    problem = spread_problem(shared=False)
    result = verified(problem, place(problem, SolveOptions(time_limit_s=10.0)))
    assert all(sp.admitted for sp in result.slices.values())
