"""Benchmark suite ``solver``: placement speed, quality against the GNF baseline, and churn.

    python benchmarks/run.py solver [--quick] [--json FILE]

``product_path`` (product_path.py) times ``flyslice plan`` and the pipeline it calls on generated
manifests with the product's default configuration; the other cases call the library with explicit
options. Every case builds a seeded instance (see solver_instances.py), runs the baseline and the ILP on
it in the same process, and reports median seconds over repeats, the model-build share, the
proven gap, admitted slices and the objective of both. ``sharing_density`` (sharing_density.py) counts
the wildfire-like slices Pi-class gateways admit with and without NF sharing, through the product path.
Figures are for this machine only.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import incremental_admission
import product_path
import sharing_density
from solver_instances import change_load, instance, wildfire, with_current

from flyslice.solver import Placement, Problem, SolveOptions, baseline, place
from flyslice.solver.backends import highs_available


@dataclass(frozen=True)
class Case:
    hosts: int
    slices: int
    nfs: int
    topology: str = "tree"
    #: Gateway capacity factor; < 1 overloads the instance.
    gw_scale: float = 1.0
    solver: str = "cbc"
    time_limit_s: float = 30.0
    max_candidates: int | None = None
    repeats: int = 1


QUICK = [
    Case(10, 5, 3, repeats=3),
    Case(50, 30, 4, repeats=3),
    Case(50, 60, 4, gw_scale=0.3, max_candidates=6, time_limit_s=10),
    Case(200, 100, 5, solver="highs", max_candidates=6, time_limit_s=10),
]

FULL = [
    Case(10, 5, 3, repeats=5),
    Case(50, 30, 4, repeats=3),
    Case(50, 30, 4, topology="mesh", repeats=3),
    Case(200, 100, 5, max_candidates=6, repeats=3),
    Case(200, 100, 5, solver="highs", max_candidates=6, repeats=3),
    Case(200, 100, 5, topology="mesh", solver="highs", max_candidates=6, repeats=3),
    Case(200, 100, 5, solver="highs", time_limit_s=30),
    Case(200, 100, 5, topology="zoo:TataNld", solver="highs", max_candidates=6),
    Case(200, 100, 5, topology="sndlib:germany50", solver="highs", max_candidates=6),
    Case(100, 150, 4, gw_scale=0.3, solver="highs", max_candidates=6, time_limit_s=20),
    Case(200, 300, 5, gw_scale=0.4, solver="highs", max_candidates=6, time_limit_s=30),
    Case(1000, 500, 5, solver="highs", max_candidates=5, time_limit_s=40),
    Case(1000, 500, 5, max_candidates=5, time_limit_s=40),
]


def _admitted(p: Placement) -> int:
    return sum(1 for sp in p.slices.values() if sp.admitted)


def _weighted_admitted(problem: Problem, p: Placement) -> float:
    """Admitted slices weighted by the objective's rejection scale (1 + priority - lowest)."""
    low = min(s.priority for s in problem.slices)
    return float(sum(1 + s.priority - low for s in problem.slices if p.slices[s.key].admitted))


def _moves(before: Placement, after: Placement, keys: set[str]) -> int:
    moved = 0
    for key in keys:
        old, new = before.slices[key], after.slices.get(key)
        if old.admitted and new is not None and new.admitted:
            moved += sum(1 for nf, a in old.assignments.items() if new.assignments.get(nf) != a)
    return moved


def run_case(case: Case) -> dict[str, Any]:
    try:
        problem = instance(case.hosts, case.slices, case.nfs, case.topology, gw_scale=case.gw_scale)
    except ImportError:
        return {"hosts": case.hosts, "topology": case.topology, "skipped": "pip install topohub"}
    solver = case.solver if case.solver == "cbc" or highs_available() else "cbc"
    opts = SolveOptions(solver=solver, time_limit_s=case.time_limit_s, max_candidates=case.max_candidates)
    seconds, build, base_seconds = [], [], []
    result = base = None
    for _ in range(case.repeats):
        base = baseline(problem)
        base_seconds.append(base.seconds)
        result = place(problem, opts)
        seconds.append(result.seconds)
        build.append(result.build_seconds)
    assert result is not None and base is not None
    admitted, base_admitted = _admitted(result), _admitted(base)
    return {
        "hosts": len(problem.topology.hosts),
        "slices": case.slices,
        "nfs_per_slice": case.nfs,
        "topology": case.topology + (f" gw x{case.gw_scale:g}" if case.gw_scale != 1 else ""),
        "solver": f"{result.solver}" + (f" k={case.max_candidates}" if case.max_candidates else ""),
        "status": str(result.status),
        "seconds": statistics.median(seconds),
        "build_share": statistics.median(b / s for b, s in zip(build, seconds, strict=True) if s > 0),
        "gap": result.gap,
        "admitted": admitted,
        "baseline_admitted": base_admitted,
        "acceptance_gain": (admitted - base_admitted) / case.slices,
        "weighted_gain": (_weighted_admitted(problem, result) - _weighted_admitted(problem, base))
        / sum(1 + s.priority - min(t.priority for t in problem.slices) for s in problem.slices),
        "objective": result.objective,
        "baseline_objective": base.objective,
        "baseline_seconds": statistics.median(base_seconds),
    }


def wildfire_ms(repeats: int) -> float:
    problem = wildfire()
    place(problem)  # first call pays imports and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        place(problem)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def incremental(hosts: int, slices: int, solver: str, repeats: int) -> dict[str, Any]:
    """One new slice into a loaded state: incremental mode against the fixed placement of the rest."""
    problem = instance(hosts, slices + 1, 5, "tree", seed=7)
    loaded = Problem(problem.topology, problem.slices[:-1])
    opts = SolveOptions(solver=solver, max_candidates=6, time_limit_s=30)
    first = place(loaded, opts)
    placed = {k: dict(sp.assignments) for k, sp in first.slices.items() if sp.admitted}
    state = with_current(problem, placed)
    inc = SolveOptions(solver=solver, mode="incremental", time_limit_s=10)
    times = []
    result = None
    for _ in range(repeats):
        result = place(state, inc)
        times.append(result.seconds)
    assert result is not None
    new_key = problem.slices[-1].key
    return {
        "incremental_hosts": len(problem.topology.hosts),
        "incremental_loaded_slices": _admitted(first),
        "incremental_new_slice_ms": statistics.median(times) * 1000,
        "incremental_new_slice_admitted": result.slices[new_key].admitted,
        "incremental_moved_nfs": _moves(first, result, set(placed)),
    }


def churn(hosts: int, slices: int, solver: str) -> dict[str, Any]:
    """10% of the slices replaced: how many NFs of the other 90% move when re-planning."""
    problem = instance(hosts, slices, 5, "tree", seed=3)
    opts = SolveOptions(solver=solver, max_candidates=6, time_limit_s=30)
    first = place(problem, opts)
    placed = {k: dict(sp.assignments) for k, sp in first.slices.items() if sp.admitted}
    changed, gone = change_load(with_current(problem, placed), 0.10)
    kept = {k for k in placed if k not in gone}
    replanned = place(changed, opts)
    scratch = place(with_current(changed, {}), opts)
    running = sum(len(placed[k]) for k in kept)
    return {
        "churn_running_nfs": running,
        "churn_moved_with_migration_cost": _moves(first, replanned, kept),
        "churn_moved_from_scratch": _moves(first, scratch, kept),
        "churn_admitted_after": _admitted(replanned),
    }


def run(quick: bool) -> dict[str, Any]:
    solver = "highs" if highs_available() else "cbc"
    # The product path first (`flyslice plan` on generated manifests, default configuration): the
    # figures users get. The cases below call the library with explicit options (solver, caps).
    out: dict[str, Any] = product_path.run(quick)
    out["wildfire_ms"] = wildfire_ms(5 if quick else 20)
    out["cases"] = [run_case(c) for c in (QUICK if quick else FULL)]
    # incremental_new_slice_ms through the reconcile core (the product path); the library-level figure
    # (solver.place in incremental mode alone) is kept beside it as solver_incremental_*.
    out.update(incremental_admission.run(quick))
    library = incremental(200, 100, solver, 3) if quick else incremental(500, 250, solver, 5)
    out.update({f"solver_{k}": v for k, v in library.items()})
    out.update(churn(100, 50, solver) if quick else churn(200, 100, solver))
    # NF sharing on Pi-class gateways, through the product path (default options, like product_path).
    out.update(sharing_density.run(quick))
    return out
