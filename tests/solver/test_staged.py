"""The restricted first pass of large models (solver/staged.py): its answer may become the result,
its bound never does, and the result is the same optimum the full model alone proves."""

from __future__ import annotations

import pytest

from flyslice.solver import Assignment, Guarantee, SolveOptions, baseline, place, staged
from flyslice.solver.backends import highs_available
from flyslice.solver.candidates import prune
from flyslice.solver.distances import distances_for
from flyslice.solver.evaluation import max_budget

from .checker import check
from .test_pruning import instance

needs_highs = pytest.mark.skipif(not highs_available(), reason="highspy is not installed")


def test_small_models_get_no_first_pass() -> None:
    problem = instance(1)
    dist = distances_for(problem.topology, max_budget(problem))
    free = {h.name: h.capacity for h in problem.topology.hosts}
    cands = {s.key: prune(s, problem.topology, free, dist) for s in problem.slices}
    slices = [s for s in problem.slices if all(cands[s.key].values())]
    assert staged.restricted(slices, cands, problem.topology, dist, {}) is None


def test_the_first_pass_keeps_few_options_and_the_starts_own() -> None:
    problem = instance(2, n_gw=40)
    dist = distances_for(problem.topology, max_budget(problem))
    free = {h.name: h.capacity for h in problem.topology.hosts}
    cands = {s.key: prune(s, problem.topology, free, dist) for s in problem.slices}
    slices = [s for s in problem.slices if all(cands[s.key].values())]
    start = {k: dict(sp.assignments) for k, sp in baseline(problem).slices.items() if sp.admitted}
    # A start on options outside the k most promising ones must stay expressible.
    far = {
        s.key: {nf: opts[-1] for nf, opts in cands[s.key].items()}
        for s in slices
        if any(len(o) > staged.KEEP for o in cands[s.key].values())
    }
    assert far, "the instance has no NF with more than KEEP options"
    for key, picks in far.items():
        start[key] = {nf: Assignment(o.host, o.flavor) for nf, o in picks.items()}
    first = staged.restricted(slices, cands, problem.topology, dist, start, min_options=0)
    assert first is not None
    for s in slices:
        for nf_id, opts in first[s.key].items():
            assert len(opts) <= staged.KEEP + 1
            assert set(opts) <= set(cands[s.key][nf_id])
            chosen = start.get(s.key, {}).get(nf_id)
            if chosen is not None:
                assert any((o.host, o.flavor) == (chosen.host, chosen.flavor) for o in opts)


@needs_highs
@pytest.mark.parametrize("seed", [3, 6])
def test_with_the_first_pass_place_proves_the_same_optimum(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = instance(seed, n_gw=40, n_slices=16)
    opts = SolveOptions(solver="highs", time_limit_s=60, gap_rel=0.0)
    alone = place(problem, opts)
    monkeypatch.setattr(staged, "MIN_OPTIONS", 0)
    monkeypatch.setattr(staged, "KEEP", 2)
    staged_result = place(problem, opts)
    for result in (alone, staged_result):
        assert check(problem, result) == []
        # The guarantee is the full model's: a first pass on 2 options per NF is never "the" proof.
        assert result.guarantee is Guarantee.OPTIMAL and not result.restrictions
    assert staged_result.objective == pytest.approx(alone.objective, rel=1e-9, abs=1e-6)


def test_the_first_pass_gets_most_of_the_time_when_the_full_model_is_too_large_to_solve() -> None:
    # 1000 x 500: a full build predicted at 6.9 s of 24 s left (29 %) -> the first pass gets 80 %.
    assert staged.share(6.9, 24.0) == staged.LARGE_SHARE
    # 200 x 100: 0.6 s of 24 s (2.5 %) -> the usual 30 %, the full model gets the rest.
    assert staged.share(0.6, 24.0) == staged.SHARE
    assert staged.share(1.0, 0.0) == staged.SHARE  # no time left: nothing to share
