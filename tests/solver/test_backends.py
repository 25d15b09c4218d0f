"""Solver status handling: a time-out is never called infeasible."""

from __future__ import annotations

import random

import pulp
import pytest

from flyslice.solver import Problem, SolveOptions, SolverStatus, place
from flyslice.solver.backends import solve

from .checker import check
from .instances import wildfire_slice, wildfire_topology


def market_split(m: int = 4, n: int = 40, seed: int = 1) -> pulp.LpProblem:
    """Cornuejols-Dawande market split: tiny, and far beyond a 1 s budget for any MIP solver."""
    rng = random.Random(seed)
    prob = pulp.LpProblem("market_split", pulp.LpMinimize)
    x = [prob.add_variable(f"x{i}", 0, 1, pulp.LpBinary) for i in range(n)]
    for j in range(m):
        a = [rng.randint(0, 99) for _ in range(n)]
        prob.addConstraint(
            pulp.LpConstraint(
                pulp.LpAffineExpression(list(zip(x, a, strict=True))),
                pulp.LpConstraintEQ,
                f"c{j}",
                sum(a) // 2,
            )
        )
    prob.setObjective(pulp.LpAffineExpression([(v, 1.0) for v in x]))
    return prob


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_timeout_without_incumbent_is_not_solved_not_infeasible(solver: str) -> None:
    out = solve(market_split(), SolveOptions(solver=solver, time_limit_s=1.0), warm_start=False)
    assert out.kind == "none"
    assert not out.proven_infeasible
    assert out.gap is None


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_proven_infeasible_is_reported_as_such(solver: str) -> None:
    prob = pulp.LpProblem("t", pulp.LpMinimize)
    x = prob.add_variable("x", 0, 1, pulp.LpBinary)
    prob.addConstraint(pulp.LpConstraint(pulp.LpAffineExpression([(x, 1.0)]), pulp.LpConstraintGE, "c", 2.0))
    prob.setObjective(pulp.LpAffineExpression([(x, 1.0)]))
    out = solve(prob, SolveOptions(solver=solver, time_limit_s=5.0), warm_start=False)
    assert out.kind == "none"
    assert out.proven_infeasible


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_timeout_incumbent_is_feasible_with_a_gap(solver: str) -> None:
    # Market split as a penalty objective always has a solution; within 1 s it is not proven.
    prob = pulp.LpProblem("ms_soft", pulp.LpMinimize)
    rng = random.Random(3)
    n = 60
    x = [prob.add_variable(f"x{i}", 0, 1, pulp.LpBinary) for i in range(n)]
    dev = []
    for j in range(5):
        a = [rng.randint(0, 99) for _ in range(n)]
        plus, minus = prob.add_variable(f"p{j}", 0), prob.add_variable(f"m{j}", 0)
        dev += [plus, minus]
        terms = [*zip(x, a, strict=True), (plus, -1.0), (minus, 1.0)]
        prob.addConstraint(
            pulp.LpConstraint(pulp.LpAffineExpression(terms), pulp.LpConstraintEQ, f"c{j}", sum(a) // 2)
        )
    prob.setObjective(pulp.LpAffineExpression([(d, 1.0) for d in dev]))
    for v in x:
        v.setInitialValue(0.0)
    out = solve(prob, SolveOptions(solver=solver, time_limit_s=1.0, gap_rel=0.0), warm_start=False)
    assert out.kind in ("feasible", "optimal")
    if out.kind == "feasible":
        assert out.gap is None or out.gap > 0


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_place_falls_back_to_the_baseline_when_the_solver_has_nothing_in_time(solver: str) -> None:
    slices = tuple(wildfire_slice(key=f"ns/s{i:03d}", priority=i % 3) for i in range(150))
    problem = Problem(wildfire_topology(), slices)
    result = place(problem, SolveOptions(solver=solver, time_limit_s=0.001, warm_start=False))
    assert result.status is SolverStatus.NOT_SOLVED
    assert result.method == "baseline"
    assert result.gap is None
    assert check(problem, result) == []
    assert any(sp.admitted for sp in result.slices.values())
    rejected = [sp for sp in result.slices.values() if not sp.admitted]
    assert rejected and all(sp.reasons for sp in rejected)
    assert not any(r.lower() == "infeasible" for sp in rejected for r in sp.reasons)
