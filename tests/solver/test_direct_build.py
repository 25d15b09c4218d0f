"""The direct (array) build for HiGHS against the PuLP build: the same model, the same optimum.

``ilp.build(direct=True)`` (solver/matrix.py) is the default with HiGHS; the PuLP build is the
portable path (CBC). These tests compare the two on generated instances, with and without NF
sharing: row by row after building (also after lazy latency cuts and exact sharing groups are
added), and by the proven optimum ``place()`` reaches through each.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pulp
import pytest

from flyslice.solver import Guarantee, Problem, SolveOptions, ilp, place
from flyslice.solver.backends import highs_available, solve
from flyslice.solver.candidates import prune
from flyslice.solver.distances import distances_for
from flyslice.solver.evaluation import max_budget
from flyslice.solver.matrix import MatrixModel
from flyslice.solver.sharing import Shares

from .instances import tiered_problem
from .test_backends import stall_highs
from .test_sharing import gateway_problem

pytestmark = pytest.mark.skipif(
    not highs_available(), reason="the direct build is for HiGHS (pip install highspy)"
)

EXACT: dict[str, Any] = {"solver": "highs", "gap_rel": 0.0, "time_limit_s": 60.0}


def _instances() -> dict[str, Problem]:
    return {
        "tiered 20x8x4": tiered_problem(20, 8, 4, seed=1),
        "tiered 30x12x4 overloaded": tiered_problem(30, 12, 4, seed=2, gw_scale=0.3),
        "tiered 40x10x5": tiered_problem(40, 10, 5, seed=3),
        "sharing 10 tenants, 3 per instance": gateway_problem(10, max_tenants=3),
        "sharing 8 tenants over capacity, 2 running": gateway_problem(8, capacity=25.0, running=2),
        "sharing tight memory": gateway_problem(12, gw_memory_mi=400),
    }


INSTANCES = _instances()


def _built(problem: Problem, direct: bool) -> ilp.Built:
    dist = distances_for(problem.topology, max_budget(problem))
    free = {h.name: h.capacity for h in problem.topology.hosts}
    shares = Shares(problem.derated)
    options = {s.key: prune(s, problem.topology, free, dist, shares=shares) for s in problem.slices}
    slices = [s for s in problem.slices if all(options[s.key].values())]
    built = ilp.build(problem, slices, options, free, {}, dist, direct=direct)
    return built


def _refine(built: ilp.Built, problem: Problem) -> None:
    """What later cut rounds add: every source pivot of every pair, and exact sharing groups."""
    dist = distances_for(problem.topology, max_budget(problem))
    for pair in built.pairs.values():
        for h in pair.src_hosts:
            ilp.add_pivot_cut(built, pair, h, dist)
    for g in built.shared.values():
        g.make_exact()


Row = tuple[dict[str, float], float, float]


def _pulp_rows(prob: pulp.LpProblem) -> tuple[dict[str, tuple[Any, Any, bool, float]], list[Row]]:
    cost = {v.name: c for v, c in prob.objective.items() if c}
    cols = {
        v.name: (v.lowBound, v.upBound, v.cat == pulp.LpInteger, cost.get(v.name, 0.0))
        for v in prob.variables()
    }
    rows = []
    for c in prob._constraints.values():  # PuLP's own HiGHS interface reads them so, in order
        lb, ub = c.getLb(), c.getUb()
        rows.append(
            (
                {v.name: a for v, a in c.items() if a},
                -math.inf if lb is None else lb,
                math.inf if ub is None else ub,
            )
        )
    return cols, rows


def _matrix_rows(m: MatrixModel) -> tuple[dict[str, tuple[Any, Any, bool, float]], list[Row]]:
    used = set(m.row_index) | {v.index for v, c in m.objective.items() if c}
    cols = {
        v.name: (v.lowBound, v.upBound, v.integer, m.objective.get(v, 0.0))
        for v in m.columns
        if v.index in used
    }
    rows = []
    for r in range(m.num_rows):
        a, b = m.row_start[r], m.row_start[r + 1]
        terms = {m.columns[i].name: c for i, c in zip(m.row_index[a:b], m.row_value[a:b], strict=True)}
        rows.append((terms, m.row_lower[r], m.row_upper[r]))
    return cols, rows


def _same_model(pulp_built: ilp.Built, direct_built: ilp.Built) -> None:
    assert isinstance(direct_built.prob, MatrixModel)
    p_cols, p_rows = _pulp_rows(pulp_built.prob)
    m_cols, m_rows = _matrix_rows(direct_built.prob)
    assert m_cols == p_cols
    assert len(m_rows) == len(p_rows)
    for i, (mine, theirs) in enumerate(zip(m_rows, p_rows, strict=True)):
        assert mine[0] == pytest.approx(theirs[0]), f"row {i}"
        assert mine[1:] == theirs[1:], f"row {i} bounds"


@pytest.mark.parametrize("name", list(INSTANCES))
def test_the_direct_build_writes_the_pulp_model_row_for_row(name: str) -> None:
    problem = INSTANCES[name]
    via_pulp, direct = _built(problem, direct=False), _built(problem, direct=True)
    _same_model(via_pulp, direct)
    # Rows added between solve rounds go through the same code into either model.
    _refine(via_pulp, problem)
    _refine(direct, problem)
    _same_model(via_pulp, direct)


@pytest.mark.parametrize("name", list(INSTANCES))
def test_the_direct_build_reaches_the_pulp_builds_proven_optimum(name: str) -> None:
    problem = INSTANCES[name]
    direct = place(problem, SolveOptions(**EXACT))
    via_pulp = place(problem, SolveOptions(**EXACT, model_build="pulp"))
    assert direct.guarantee is Guarantee.OPTIMAL and via_pulp.guarantee is Guarantee.OPTIMAL
    assert direct.objective == pytest.approx(via_pulp.objective, rel=1e-7, abs=1e-7)
    assert sum(sp.admitted for sp in direct.slices.values()) == sum(
        sp.admitted for sp in via_pulp.slices.values()
    )


def test_incremental_mode_with_running_tenants_reaches_the_same_optimum() -> None:
    problem = gateway_problem(9, capacity=25.0, max_tenants=3, running=3)
    opts: dict[str, Any] = {**EXACT, "mode": "incremental"}
    direct = place(problem, SolveOptions(**opts))
    via_pulp = place(problem, SolveOptions(**opts, model_build="pulp"))
    # Holding the running slices is a restriction: both say so, with the model solved to a zero gap.
    assert direct.guarantee is Guarantee.RESTRICTED and via_pulp.guarantee is Guarantee.RESTRICTED
    assert direct.gap is not None and direct.gap <= 1e-9
    assert via_pulp.gap is not None and via_pulp.gap <= 1e-9
    assert direct.objective == pytest.approx(via_pulp.objective, rel=1e-7, abs=1e-7)


def test_a_direct_solve_reports_the_optimum_its_objective_and_bound() -> None:
    built = _built(INSTANCES["tiered 20x8x4"], direct=True)
    out = solve(built.prob, SolveOptions(**EXACT), warm_start=False)
    assert out.kind == "optimal" and out.solver == "HiGHS"
    assert out.objective is not None and out.bound is not None
    assert out.bound <= out.objective + 1e-7
    # The answer is read back into the columns the rest of the solver reads.
    assert built.assignments()


def test_cbc_always_uses_the_pulp_build() -> None:
    assert not SolveOptions(solver="cbc").direct
    assert SolveOptions(solver="highs").direct
    assert not SolveOptions(solver="highs", model_build="pulp").direct
    problem = INSTANCES["tiered 20x8x4"]
    cbc = place(problem, SolveOptions(solver="cbc", gap_rel=0.0, time_limit_s=60.0))
    highs = place(problem, SolveOptions(**EXACT))
    assert cbc.guarantee is Guarantee.OPTIMAL and highs.guarantee is Guarantee.OPTIMAL
    assert cbc.objective == pytest.approx(highs.objective, rel=1e-6, abs=1e-6)


def test_a_direct_model_refuses_cbc_and_bad_options_name_the_field() -> None:
    built = _built(INSTANCES["tiered 20x8x4"], direct=True)
    with pytest.raises(ValueError, match=r"solver='highs'"):
        solve(built.prob, SolveOptions(solver="cbc"), warm_start=False)
    with pytest.raises(ValueError, match=r"SolveOptions\.model_build"):
        SolveOptions(model_build="numpy")  # type: ignore[arg-type]


def test_a_highs_run_past_its_limit_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    built = _built(INSTANCES["tiered 20x8x4"], direct=True)
    ended = stall_highs(monkeypatch, 2.0)
    start = time.perf_counter()
    outcome = solve(built.prob, SolveOptions(solver="highs", time_limit_s=0.3), warm_start=False)
    waited = time.perf_counter() - start
    assert outcome.abandoned and outcome.kind == "none" and outcome.bound is None
    assert 0.3 <= waited < 0.3 + 0.3  # the limit, the grace, a loaded machine's scheduling; not 2 s
    assert ended == []  # it really was still running when solve() returned
