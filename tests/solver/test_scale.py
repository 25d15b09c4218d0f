"""The model's shortcuts at sizes where they are active (issue 13, item 7), each checked against the
exact model on the same instance and objective:

* lazy latency cuts (pairs whose NFs have more than ``ilp.EXACT_PIVOTS`` hosts) vs every pivot up front;
* latency pruning vs the unpruned model;
* the candidate cap with its widened warm start vs the uncapped model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from flyslice.solver import Guarantee, SolveOptions, baseline, ilp, place, placement
from flyslice.solver.candidates import Option, fitting, static_options
from flyslice.solver.distances import Distances
from flyslice.solver.model import Resources, SliceDemand, Topology

from .checker import check
from .instances import detour_problem, tiered_problem

SOLVERS = ["cbc", "highs"]
EXACT = dict(time_limit_s=120.0, gap_rel=0.0)


def _same(a: float | None, b: float | None) -> bool:
    assert a is not None and b is not None
    return abs(a - b) <= 1e-6 * max(1.0, abs(a))


@pytest.mark.parametrize("solver", SOLVERS)
def test_lazy_latency_cuts_reach_the_exact_optimum(solver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # 35 hosts; each NF of the A -> B pairs has more than EXACT_PIVOTS hosts and every first answer
    # breaks a latency cut (see detour_problem). Two slices: CBC needs ~3 s to prove it, more with
    # more (symmetric) slices.
    problem = detour_problem(slices=2)
    assert len(problem.topology.hosts) >= 30
    added: list[int] = []
    real = ilp.violated_pairs

    def counting(*args: Any) -> int:
        n = real(*args)
        added.append(n)
        return n

    monkeypatch.setattr(ilp, "violated_pairs", counting)
    lazy = place(problem, SolveOptions(solver=solver, **EXACT))
    assert added[0] > 0, "the first answer needed no latency cut: the lazy path was not exercised"
    assert len(added) >= 2 and added[-1] == 0  # re-solved until no cut is violated
    monkeypatch.setattr(ilp, "EXACT_PIVOTS", 10**9)  # every pivot of every pair up front
    exact = place(problem, SolveOptions(solver=solver, **EXACT))
    assert lazy.guarantee is Guarantee.OPTIMAL and exact.guarantee is Guarantee.OPTIMAL
    assert _same(lazy.objective, exact.objective), (lazy.objective, exact.objective)
    assert check(problem, lazy) == []
    # The true latency is what is reported: A on a relay, B on fog-0 is 2 + 1 ms of links.
    for sp in lazy.slices.values():
        assert all(lat >= 3.0 for lat in sp.path_latency_ms.values()), sp.path_latency_ms


def _unpruned(
    slice_: SliceDemand,
    topology: Topology,
    free: Mapping[str, Resources],
    dist: Distances,
    max_candidates: int | None = None,
) -> dict[str, list[Option]]:
    """Every option runtime, tier and free capacity allow: no latency pruning at all."""
    return {nf.id: fitting(static_options(slice_, nf, topology), free) for nf in slice_.nfs}


@pytest.mark.parametrize("solver", SOLVERS)
def test_latency_pruning_keeps_the_optimum(solver: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small gateways: the slices compete for the few hosts within their budgets.
    problem = tiered_problem(32, 16, 3, seed=3, gw_scale=0.15)
    ctx = placement._Context.of(problem)
    pruned = sum(
        len(o)
        for s in problem.slices
        for o in placement.prune(s, problem.topology, ctx.base_free, ctx.dist).values()
    )
    unpruned = sum(
        len(o)
        for s in problem.slices
        for o in _unpruned(s, problem.topology, ctx.base_free, ctx.dist).values()
    )
    assert pruned < unpruned  # pruning removes options here
    monkeypatch.setattr(ilp, "EXACT_PIVOTS", 10**9)
    with_pruning = place(problem, SolveOptions(solver=solver, **EXACT))
    monkeypatch.setattr(placement, "prune", _unpruned)
    without = place(problem, SolveOptions(solver=solver, **EXACT))
    assert with_pruning.guarantee is Guarantee.OPTIMAL and without.guarantee is Guarantee.OPTIMAL
    assert _same(with_pruning.objective, without.objective), (with_pruning.objective, without.objective)


@pytest.mark.parametrize("solver", SOLVERS)
def test_capped_model_is_widened_by_the_warm_start_and_labelled(
    solver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = tiered_problem(30, 30, 3, seed=0, gw_scale=0.3)
    base = baseline(problem)
    # The cap alone cuts some of the baseline's choices here, so the widening is what keeps them.
    ctx = placement._Context.of(problem)
    cut = 0
    for s in problem.slices:
        if base.slices[s.key].admitted:
            alone = placement.prune(s, problem.topology, ctx.base_free, ctx.dist)
            placement._cap(s, alone, problem.topology, ctx.dist, 2)
            cut += sum(
                not any((o.host, o.flavor) == (a.host, a.flavor) for o in alone[nf_id])
                for nf_id, a in base.slices[s.key].assignments.items()
            )
    assert cut > 0
    models: list[Mapping[str, Mapping[str, list[Option]]]] = []
    real_build = ilp.build

    def capture(*args: Any, **kwargs: Any) -> ilp.Built:
        models.append(args[2])
        return real_build(*args, **kwargs)

    monkeypatch.setattr(ilp, "build", capture)
    capped = place(problem, SolveOptions(solver=solver, max_candidates=2, time_limit_s=30.0))
    (options,) = models
    # Every slice the baseline admits is a point of the capped model (the warm start is usable).
    for key, sp in base.slices.items():
        if sp.admitted:
            for nf_id, a in sp.assignments.items():
                assert any((o.host, o.flavor) == (a.host, a.flavor) for o in options[key][nf_id]), (
                    key,
                    nf_id,
                )
    assert capped.guarantee is Guarantee.RESTRICTED
    assert capped.restrictions == ("candidate cap k=2",)
    assert check(problem, capped) == []
    assert capped.objective is not None and base.objective is not None
    assert capped.objective <= base.objective + 1e-6
    monkeypatch.setattr(ilp, "build", real_build)
    exact = place(problem, SolveOptions(solver=solver, **EXACT))
    assert exact.guarantee is Guarantee.OPTIMAL and exact.objective is not None
    # A restricted model cannot beat the full one; its gap is relative to itself only.
    assert capped.objective >= exact.objective - 1e-6
