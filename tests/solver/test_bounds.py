"""The bound that needs no LP (solver/bounds.py): never above a proven optimum, and what ``place()``
states its gap against when the solver proved nothing."""

from __future__ import annotations

import pytest

from flyslice.solver import Guarantee, Problem, SolveOptions, place
from flyslice.solver.bounds import cheapest_slices_bound
from flyslice.solver.candidates import prune
from flyslice.solver.distances import distances_for
from flyslice.solver.evaluation import max_budget, rejection_scale
from flyslice.solver.sharing import Shares

from .checker import check
from .instances import tiered_problem
from .test_backends import stall_highs
from .test_sharing import gateway_problem

EXACT = SolveOptions(solver="highs", gap_rel=0.0, time_limit_s=60.0)


def _floor(problem: Problem) -> tuple[float | None, float]:
    """The bound over the pruned options as ``place()`` computes it, and the rejection weight of the
    slices with an NF that has nowhere to go (outside the model, a constant of every placement)."""
    dist = distances_for(problem.topology, max_budget(problem))
    free = {h.name: h.capacity for h in problem.topology.hosts}
    options = {
        s.key: prune(s, problem.topology, free, dist, shares=Shares(problem.derated)) for s in problem.slices
    }
    modelled = [s for s in problem.slices if all(options[s.key].values())]
    scale = rejection_scale(problem)
    outside = sum(problem.weights.rejection * scale[s.key] for s in problem.slices if s not in modelled)
    return cheapest_slices_bound(problem, modelled, options, dist), outside


@pytest.mark.parametrize(
    ("hosts", "slices", "nfs", "seed", "gw_scale"),
    [(20, 8, 4, 1, 1.0), (30, 12, 4, 2, 0.3), (40, 10, 5, 3, 1.0), (16, 24, 3, 6, 0.15)],
)
def test_the_bound_is_never_above_the_proven_optimum(
    hosts: int, slices: int, nfs: int, seed: int, gw_scale: float
) -> None:
    problem = tiered_problem(hosts, slices, nfs, seed=seed, gw_scale=gw_scale)
    floor, outside = _floor(problem)
    best = place(problem, EXACT)
    assert best.guarantee is Guarantee.OPTIMAL and best.objective is not None
    assert floor is not None and floor > 0
    assert floor + outside <= best.objective + 1e-6
    if any(not sp.admitted for sp in best.slices.values()):
        # 11 of 24 slices rejected for capacity, which the bound does not see: below, not at, the optimum.
        assert floor + outside < best.objective


def test_with_nf_sharing_there_is_no_such_bound() -> None:
    floor, _ = _floor(gateway_problem(6, max_tenants=3))
    assert floor is None


def test_place_states_a_gap_against_it_when_the_solver_proves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every HiGHS run stalls past the deadline (FAKE stall, see stall_highs): no solver bound at all.
    problem = tiered_problem(30, 12, 4, seed=2, gw_scale=0.3)
    floor, outside = _floor(problem)
    assert floor is not None
    stall_highs(monkeypatch, 5.0)
    result = place(problem, SolveOptions(time_limit_s=1.0))
    assert check(problem, result) == []
    assert result.method == "baseline" and result.objective is not None
    assert result.guarantee is Guarantee.FEASIBLE_WITH_GAP
    decided = result.objective - outside
    assert result.gap == pytest.approx((decided - floor) / decided)
    assert 0 < result.gap < 1
