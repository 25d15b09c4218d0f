"""The wildfire reference instance (seed 000, section IV) and the paper's Fig. 10 deployment."""

from __future__ import annotations

import dataclasses

import pytest

from flyslice.solver import Assignment, Flavor, SolveOptions, SolverStatus, baseline, place

from .checker import check
from .instances import wildfire_problem, wildfire_slice, wildfire_topology

#: The paper's deployment (Fig. 10).
PAPER = {
    "broker-gw@gw-1": Assignment("gw-1", Flavor.FNF),
    "sp-gw@gw-1": Assignment("gw-1", Flavor.FNF),
    "broker-gw@gw-2": Assignment("gw-2", Flavor.FNF),
    "sp-gw@gw-2": Assignment("gw-2", Flavor.FNF),
    "broker-fog": Assignment("fog-1", Flavor.FNF),
    "sp-fog": Assignment("fog-1", Flavor.VNF),
    "broker-cloud": Assignment("cloud", Flavor.VNF),
    "sp-cloud": Assignment("cloud", Flavor.VNF),
    "db": Assignment("cloud", Flavor.VNF),
}


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_wildfire_placement_matches_the_paper_except_the_fog_stream_processor(solver: str) -> None:
    problem = wildfire_problem()
    result = place(problem, SolveOptions(solver=solver))
    assert result.status is SolverStatus.OPTIMAL
    assert result.method == "ilp"
    assert result.gap == pytest.approx(0.0, abs=1e-6)
    assert check(problem, result) == []
    sp = result.slices["default/wildfire"]
    assert sp.admitted
    differing = {k for k in PAPER if sp.assignments[k] != PAPER[k]}
    # Same hosts everywhere; the only difference is the fog stream processor's flavour:
    # fNF is lighter (100m/16Mi vs 500m/256Mi) and faster (0.5 vs 1.0 ms) and nothing here
    # asks for isolation, so the objective prefers it (see docs/solver.md).
    assert differing == {"sp-fog"}
    assert sp.assignments["sp-fog"] == Assignment("fog-1", Flavor.FNF)
    assert sp.path_latency_ms == {
        "gw-1:broker-gw->db": pytest.approx(9.4),
        "gw-2:broker-gw->db": pytest.approx(9.4),
    }
    assert result.host_usage["fog-1"].cpu_millis == 150


def test_the_papers_deployment_is_feasible_and_kept_when_it_already_runs() -> None:
    """With Fig. 10's placement running, re-planning keeps it: moving costs more than it saves."""
    running = dataclasses.replace(wildfire_slice(), current=PAPER)
    problem = dataclasses.replace(wildfire_problem(), slices=(running,))
    result = place(problem)
    sp = result.slices["default/wildfire"]
    assert dict(sp.assignments) == PAPER
    assert sp.path_latency_ms["gw-1:broker-gw->db"] == pytest.approx(9.9)
    assert result.objective_terms["migration"] == 0.0
    assert check(problem, result) == []


def test_wildfire_slice_availability_is_the_product_of_its_four_hosts() -> None:
    # 0.98 * 0.98 * 0.99 * 0.999 = 0.9498...: a 0.95 target is just out of reach.
    assert place(wildfire_problem(availability=0.949)).slices["default/wildfire"].admitted
    refused = place(wildfire_problem(availability=0.95)).slices["default/wildfire"]
    assert not refused.admitted
    assert any("availability target 0.95" in r for r in refused.reasons)


def test_wildfire_baseline_puts_everything_closest_to_the_user() -> None:
    problem = wildfire_problem()
    result = baseline(problem)
    assert result.method == "baseline"
    assert check(problem, result) == []
    sp = result.slices["default/wildfire"]
    assert sp.assignments["broker-gw@gw-1"].host == "gw-1"
    assert sp.assignments["sp-fog"] == Assignment("fog-1", Flavor.FNF)
    assert sp.assignments["db"].host == "cloud"


def test_wildfire_topology_distances() -> None:
    topo = wildfire_topology()
    assert topo.distance_ms("gw-1", "cloud") == 5.0
    assert topo.distance_ms("gw-1", "gw-2") == 2.0
