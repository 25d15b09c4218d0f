"""Re-planning: migration cost, migration budget, incremental mode, warm start."""

from __future__ import annotations

import dataclasses

import pytest

from flyslice.solver import (
    Assignment,
    Flavor,
    Problem,
    Resources,
    SolveOptions,
    SolverStatus,
    Weights,
    place,
)

from .checker import check
from .instances import wildfire_slice, wildfire_topology

KEY = "default/wildfire"
#: What runs now: both fog NFs as VNFs (10.2 ms end to end, so these tests use an 11 ms budget).
RUNNING = {
    "broker-gw@gw-1": Assignment("gw-1", Flavor.FNF),
    "sp-gw@gw-1": Assignment("gw-1", Flavor.FNF),
    "broker-gw@gw-2": Assignment("gw-2", Flavor.FNF),
    "sp-gw@gw-2": Assignment("gw-2", Flavor.FNF),
    "broker-fog": Assignment("fog-1", Flavor.VNF),
    "sp-fog": Assignment("fog-1", Flavor.VNF),
    "broker-cloud": Assignment("cloud", Flavor.VNF),
    "sp-cloud": Assignment("cloud", Flavor.VNF),
    "db": Assignment("cloud", Flavor.VNF),
}


def running_problem(migration_weight: float) -> Problem:
    s = dataclasses.replace(wildfire_slice(budget_ms=11.0), current=RUNNING)
    return Problem(wildfire_topology(), (s,), weights=Weights(migration=migration_weight))


def fog_flavors(result_problem: Problem, options: SolveOptions | None = None) -> tuple[Flavor, Flavor]:
    result = place(result_problem, options)
    assert check(result_problem, result) == []
    a = result.slices[KEY].assignments
    return a["broker-fog"].flavor, a["sp-fog"].flavor


def test_migration_cost_keeps_running_nfs_in_place() -> None:
    # Moving the fog NFs to fNF would save a little resource cost and latency, but not 10 per move.
    assert fog_flavors(running_problem(10.0)) == (Flavor.VNF, Flavor.VNF)


def test_cheap_migration_lets_the_optimiser_move() -> None:
    assert fog_flavors(running_problem(0.001)) == (Flavor.FNF, Flavor.FNF)


@pytest.mark.parametrize(("budget", "moves"), [(0, 0), (1, 1), (None, 2)])
def test_migration_budget_caps_the_number_of_moves(budget: int | None, moves: int) -> None:
    problem = running_problem(0.001)
    result = place(problem, SolveOptions(migration_budget=budget))
    assigned = result.slices[KEY].assignments
    assert sum(1 for nf, a in RUNNING.items() if assigned[nf] != a) == moves
    assert result.objective_terms["migration"] == pytest.approx(0.001 * moves)
    assert check(problem, result) == []


def test_incremental_mode_keeps_running_slices_fixed_and_places_the_new_one() -> None:
    old = dataclasses.replace(wildfire_slice(key="default/old", budget_ms=11.0), current=RUNNING)
    new = wildfire_slice(key="default/new", attachments=("gw-1",))
    problem = Problem(wildfire_topology(), (old, new), weights=Weights(migration=0.001))
    full = place(problem)
    inc = place(problem, SolveOptions(mode="incremental"))
    assert check(problem, inc) == []
    # Full mode moves the old slice's fog NFs (moves are nearly free here); incremental does not.
    assert dict(full.slices["default/old"].assignments) != RUNNING
    assert dict(inc.slices["default/old"].assignments) == RUNNING
    assert inc.slices["default/new"].admitted
    # The fixed slice's usage counts: fog-1 carries both slices.
    assert inc.host_usage["fog-1"].cpu_millis == 200 + 500 + 50 + 100


def test_incremental_mode_replaces_a_running_slice_that_no_longer_fits() -> None:
    # Background grew on fog-1: the running VNF fog NFs (700m) no longer fit in 600m.
    s = dataclasses.replace(wildfire_slice(budget_ms=11.0), current=RUNNING)
    problem = Problem(wildfire_topology(), (s,), background={"fog-1": Resources(3400, 0)})
    result = place(problem, SolveOptions(mode="incremental"))
    sp = result.slices[KEY]
    assert sp.admitted
    assert sp.assignments["sp-fog"].flavor is Flavor.FNF
    assert check(problem, result) == []


@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("warm", [True, False])
def test_solvers_and_warm_start_agree_on_the_optimum(solver: str, warm: bool) -> None:
    slices = tuple(wildfire_slice(key=f"ns/s{i}", priority=i % 2) for i in range(4))
    problem = Problem(wildfire_topology(), slices, background={"gw-1": Resources(600, 0)})
    result = place(problem, SolveOptions(solver=solver, warm_start=warm, gap_rel=0.0))
    assert result.status is SolverStatus.INFEASIBLE  # gw-1 has room for two slices only
    assert check(problem, result) == []
    assert sum(sp.admitted for sp in result.slices.values()) == 2
    assert {k for k, sp in result.slices.items() if sp.admitted} == {"ns/s1", "ns/s3"}
    reference = place(problem, SolveOptions(gap_rel=0.0))
    assert result.objective == pytest.approx(reference.objective)


def test_solve_options_reject_bad_values() -> None:
    with pytest.raises(ValueError, match=r"SolveOptions\.solver"):
        SolveOptions(solver="gurobi")
    with pytest.raises(ValueError, match=r"SolveOptions\.mode"):
        SolveOptions(mode="partial")
    with pytest.raises(ValueError, match="time_limit_s"):
        SolveOptions(time_limit_s=0)
    with pytest.raises(ValueError, match="migration_budget"):
        SolveOptions(migration_budget=-1)
