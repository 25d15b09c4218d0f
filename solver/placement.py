"""The public entry points: ``place`` (ILP with baseline fallback), ``baseline`` and ``diagnose``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from . import ilp
from .backends import SolveOutcome, solve
from .baseline import greedy, priority_order
from .candidates import Option, prune
from .diagnosis import cheap_reasons, relaxation_reasons
from .distances import Distances, distances_for
from .evaluation import (
    add_usage,
    link_load,
    max_budget,
    objective_terms,
    path_latency,
    rejection_scale,
    slice_usage,
    violations,
)
from .model import Assignment, Placement, Problem, Resources, SliceDemand, SlicePlacement, SolverStatus
from .options import SolveOptions
from .validation import check_problem, current_is_usable, slice_errors

log = logging.getLogger(__name__)

#: Rejected slices that may get a relaxation solve each; the rest get the cheap checks' reasons.
MAX_RELAXATION_DIAGNOSES = 10
#: Time limit of each relaxation solve (single-slice models: small).
DIAGNOSIS_SOLVE_SECONDS = 2.0
#: Wall-clock budget of the per-slice diagnosis (at least; or 20% of the solve time limit).
DIAGNOSIS_SECONDS = 2.0


@dataclass
class _Context:
    problem: Problem
    dist: Distances
    #: Capacity minus background, per host.
    base_free: dict[str, Resources]
    #: Declared link bandwidth, per link.
    link_cap: dict[frozenset[str], float]
    errors: dict[str, list[str]]

    @classmethod
    def of(cls, problem: Problem) -> _Context:
        check_problem(problem)
        topo = problem.topology
        dist = distances_for(topo, max_budget(problem))
        base_free = {h.name: h.capacity - problem.background.get(h.name, Resources()) for h in topo.hosts}
        link_cap = {
            frozenset((lk.a, lk.b)): float(lk.bandwidth_mbps)
            for lk in topo.links
            if lk.bandwidth_mbps is not None
        }
        errors = {s.key: slice_errors(problem, s) for s in problem.slices}
        return cls(problem, dist, base_free, link_cap, {k: v for k, v in errors.items() if v})

    def valid(self) -> list[SliceDemand]:
        return [s for s in self.problem.slices if s.key not in self.errors]

    def remaining(
        self, admitted: Mapping[str, Mapping[str, Assignment]]
    ) -> tuple[dict[str, Resources], dict[frozenset[str], float]]:
        """Free host capacity and link bandwidth once ``admitted`` slices are placed."""
        used: dict[str, Resources] = {}
        links: dict[frozenset[str], float] = dict(self.link_cap)
        by_key = {s.key: s for s in self.problem.slices}
        for key, assignments in admitted.items():
            add_usage(used, slice_usage(by_key[key], assignments))
            if self.link_cap:
                for link, mbps in link_load(self.problem, by_key[key], assignments, self.dist).items():
                    if link in links:
                        links[link] -= mbps
        free = {h: r - used.get(h, Resources()) for h, r in self.base_free.items()}
        return free, links


def place(problem: Problem, options: SolveOptions | None = None) -> Placement:
    """Place every slice of ``problem`` with the ILP; see docs/solver.md.

    Slices that cannot all fit are rejected by priority, each with reasons. When the solver
    finds no solution within the time limit the baseline's placement is returned with status
    ``NOT_SOLVED`` and method ``"baseline"``.
    """
    opts = options or SolveOptions()
    start = time.perf_counter()
    ctx = _Context.of(problem)
    fixed = _fixed_slices(ctx) if opts.mode == "incremental" else {}
    free, link_free = ctx.remaining(fixed)
    to_place = [s for s in ctx.valid() if s.key not in fixed]

    candidates: dict[str, dict[str, list[Option]]] = {}
    for s in to_place:
        c = prune(s, problem.topology, free, ctx.dist, opts.max_candidates)
        # A slice with an NF that has nowhere to go is rejected without modelling; its reasons
        # come from the diagnosis like any other rejected slice's.
        if all(c.values()):
            candidates[s.key] = c
    modelled = [s for s in to_place if s.key in candidates]

    start_point, start_rejects = greedy(problem, modelled, free, link_free, ctx.dist)
    built = ilp.build(
        problem,
        modelled,
        candidates,
        free,
        link_free,
        ctx.dist,
        migration_budget=opts.migration_budget if opts.mode == "full" else None,
    )
    build_seconds = time.perf_counter() - start
    outcome, found = _solve_with_cuts(ctx, built, modelled, fixed, start_point, opts)

    admitted: dict[str, dict[str, Assignment]] = dict(fixed)
    if found is None:
        admitted.update(start_point)
        method, status, gap = "baseline", SolverStatus.NOT_SOLVED, None
    else:
        admitted.update(found)
        method, gap = "ilp", outcome.gap
        everyone = len(admitted) == len(problem.slices)
        if outcome.kind == "optimal":
            status = SolverStatus.OPTIMAL if everyone else SolverStatus.INFEASIBLE
        else:
            status = SolverStatus.FEASIBLE

    proven = outcome.kind == "optimal"
    reasons = _reasons(ctx, admitted, opts, proven, start_rejects if method == "baseline" else {})
    return _assemble(
        ctx,
        admitted,
        reasons,
        status=status,
        method=method,
        solver=outcome.solver,
        gap=gap,
        seconds=time.perf_counter() - start,
        build_seconds=build_seconds,
    )


#: Latency cut rounds stop after this many re-solves even when time is left.
MAX_CUT_ROUNDS = 30


def _solve_with_cuts(
    ctx: _Context,
    built: ilp.Built,
    modelled: list[SliceDemand],
    fixed: Mapping[str, dict[str, Assignment]],
    start_point: dict[str, dict[str, Assignment]],
    opts: SolveOptions,
) -> tuple[SolveOutcome, dict[str, dict[str, Assignment]] | None]:
    """Solve, add the latency pivot cuts the answer violates, re-solve until none is violated.

    Each round's model is a relaxation of the true problem, so its bound stays valid; when time
    runs out first, the best truly feasible answer seen so far is returned with that bound.
    """
    if not modelled:
        # Nothing to decide (an empty model is not a solver question; HiGHS calls it an error).
        return SolveOutcome("optimal", 0.0, 0.0, "CBC" if opts.solver == "cbc" else "HiGHS", 0.0, 0.0), {}
    deadline = time.perf_counter() + opts.time_limit_s
    # Only the model's answers count as results (the warm start ignores e.g. the migration budget).
    best: dict[str, dict[str, Assignment]] = {}
    best_value = math.inf
    outcome = SolveOutcome("none", None, 0.0, "CBC" if opts.solver == "cbc" else "HiGHS")
    seen_incumbent = False
    # Cuts only add rows, so every round's bound is valid for the true problem: keep the best.
    bound: float | None = None
    for _ in range(MAX_CUT_ROUNDS):
        remaining = deadline - time.perf_counter()
        if remaining <= 0.01:
            break
        start = best or start_point
        if opts.warm_start and start:
            built.set_start(start, modelled, ctx.dist)
        outcome = solve(
            built.prob, replace(opts, time_limit_s=remaining), warm_start=opts.warm_start and bool(start)
        )
        if outcome.bound is not None:
            bound = outcome.bound if bound is None else max(bound, outcome.bound)
        if outcome.kind == "none":
            break
        seen_incumbent = True
        found = built.assignments()
        cuts = ilp.violated_pairs(built, found, ctx.dist)
        log.debug(
            "cut round: %s in %.3fs, objective %s, bound %s, %d new latency cuts",
            outcome.kind,
            outcome.seconds,
            outcome.objective,
            outcome.bound,
            cuts,
        )
        usable = _checked(ctx, found, fixed)
        value = _true_objective(ctx, {**fixed, **usable})
        if cuts == 0 and value <= best_value + 1e-9:
            return _in_true_units(ctx, modelled, fixed, replace(outcome, bound=bound), value), usable
        if value < best_value:
            best, best_value = usable, value
        if cuts == 0:
            break  # converged, but an earlier answer (or the warm start) is better: time ran out
    if not seen_incumbent:
        return outcome, None
    final = replace(outcome, kind="feasible", bound=bound)
    return _in_true_units(ctx, modelled, fixed, final, best_value), best


def _in_true_units(
    ctx: _Context,
    modelled: list[SliceDemand],
    fixed: Mapping[str, Mapping[str, Assignment]],
    outcome: SolveOutcome,
    value: float,
) -> SolveOutcome:
    """The gap of a placement worth ``value`` (whole objective) against the model's bound.

    The model leaves out fixed slices (incremental mode) and slices rejected before modelling;
    both are constants, taken out of ``value`` here.
    """
    if outcome.bound is None:
        return replace(outcome, gap=None)
    scale = rejection_scale(ctx.problem)
    offset = _true_objective(ctx, fixed) - sum(ctx.problem.weights.rejection * scale[s.key] for s in modelled)
    # Relative to the part of the objective the decisions can change, like the solver's own gap.
    decided = value - offset
    gap = max(0.0, (decided - outcome.bound) / max(abs(decided), 1e-9))
    return replace(outcome, gap=gap)


def _true_objective(ctx: _Context, admitted: Mapping[str, Mapping[str, Assignment]]) -> float:
    by_key = {s.key: s for s in ctx.problem.slices}
    latencies = {
        k: {p.name: path_latency(p, by_key[k], a, ctx.dist) for p in by_key[k].paths}
        for k, a in admitted.items()
    }
    return sum(objective_terms(ctx.problem, admitted, latencies).values())


def baseline(problem: Problem) -> Placement:
    """GNF's rule: each NF as close to the user as it fits, falling back toward the cloud."""
    start = time.perf_counter()
    ctx = _Context.of(problem)
    admitted, rejects = greedy(problem, ctx.valid(), ctx.base_free, ctx.link_cap, ctx.dist)
    reasons = _reasons(ctx, admitted, SolveOptions(), proven=False, fallback=rejects, use_ilp=False)
    return _assemble(
        ctx,
        admitted,
        reasons,
        status=SolverStatus.FEASIBLE,
        method="baseline",
        solver="greedy",
        gap=None,
        seconds=time.perf_counter() - start,
        build_seconds=0.0,
    )


def diagnose(
    problem: Problem,
    placement: Placement | None = None,
    keys: Iterable[str] | None = None,
    options: SolveOptions | None = None,
) -> dict[str, tuple[str, ...]]:
    """Why each slice (or each of ``keys``) cannot be placed, in words a user can act on.

    Without ``placement`` every slice is judged alone against the background load; with it,
    against the capacity its admitted slices leave. A slice that can be placed gets ``()``.
    """
    ctx = _Context.of(problem)
    admitted = (
        {k: dict(sp.assignments) for k, sp in placement.slices.items() if sp.admitted} if placement else {}
    )
    wanted = set(keys) if keys is not None else {s.key for s in problem.slices}
    out: dict[str, tuple[str, ...]] = {}
    for s in problem.slices:
        if s.key not in wanted:
            continue
        others = {k: v for k, v in admitted.items() if k != s.key}
        out[s.key] = tuple(_explain(ctx, s, others, options or SolveOptions(), use_ilp=True) or ())
    return out


def _fixed_slices(ctx: _Context) -> dict[str, dict[str, Assignment]]:
    """Incremental mode: slices whose current placement is complete and still valid, by priority."""
    running = [
        (s, {nf.id: s.current[nf.id] for nf in s.nfs})
        for s in priority_order(ctx.valid())
        if current_is_usable(ctx.problem, s)
    ]
    return _admit_in_order(ctx, running, {})


def _checked(
    ctx: _Context, found: Mapping[str, dict[str, Assignment]], fixed: Mapping[str, dict[str, Assignment]]
) -> dict[str, dict[str, Assignment]]:
    """Re-check the solver's answer independently of the model; drop a slice that breaks a rule."""
    by_key = {s.key: s for s in ctx.problem.slices}
    ordered = [(by_key[k], found[k]) for k in sorted(found, key=lambda k: (-by_key[k].priority, k))]
    return _admit_in_order(ctx, ordered, fixed)


def _admit_in_order(
    ctx: _Context,
    candidates: list[tuple[SliceDemand, dict[str, Assignment]]],
    already: Mapping[str, Mapping[str, Assignment]],
) -> dict[str, dict[str, Assignment]]:
    """Keep each candidate placement that still fits (capacity, bandwidth, budgets, availability)."""
    free, links = ctx.remaining(already)
    kept: dict[str, dict[str, Assignment]] = {}
    for s, assignments in candidates:
        if violations(ctx.problem, s, assignments, free, ctx.dist):
            continue
        load = link_load(ctx.problem, s, assignments, ctx.dist) if ctx.link_cap else {}
        if any(mbps > links.get(link, float("inf")) + 1e-6 for link, mbps in load.items()):
            continue
        kept[s.key] = assignments
        for host, used in slice_usage(s, assignments).items():
            free[host] = free[host] - used
        for link, mbps in load.items():
            if link in links:
                links[link] -= mbps
    return kept


def _explain(
    ctx: _Context,
    s: SliceDemand,
    admitted: Mapping[str, Mapping[str, Assignment]],
    options: SolveOptions,
    use_ilp: bool,
    budget: list[int] | None = None,
) -> list[str] | None:
    if s.key in ctx.errors:
        return ctx.errors[s.key]
    alone = cheap_reasons(ctx.problem, s, ctx.base_free, ctx.dist)
    if alone:
        return alone
    free, links = ctx.remaining(admitted)
    prefix = "with the capacity already taken by admitted slices: " if admitted else ""
    shared = cheap_reasons(ctx.problem, s, free, ctx.dist) if admitted else []
    if shared:
        return [prefix + r for r in shared]
    if not use_ilp:
        return None
    if budget is not None:
        budget[0] -= 1
    relaxed = relaxation_reasons(ctx.problem, s, free, links, ctx.dist, options)
    # None: it fits in what is left, so it lost to the objective or to the time limit.
    return None if relaxed is None else [prefix + r for r in relaxed]


def _reasons(
    ctx: _Context,
    admitted: Mapping[str, Mapping[str, Assignment]],
    options: SolveOptions,
    proven: bool,
    fallback: Mapping[str, str],
    use_ilp: bool = True,
) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    budget = [MAX_RELAXATION_DIAGNOSES if use_ilp else 0]
    diag_opts = SolveOptions(solver=options.solver, time_limit_s=DIAGNOSIS_SOLVE_SECONDS, warm_start=False)
    stop_at = time.perf_counter() + max(DIAGNOSIS_SECONDS, 0.2 * options.time_limit_s)
    for s in priority_order(list(ctx.problem.slices)):
        if s.key in admitted:
            continue
        if time.perf_counter() > stop_at:
            out[s.key] = (
                fallback.get(s.key)
                or "not admitted: the capacity within its latency reach went to admitted slices of equal or "
                "higher priority, or the solver ran out of time (per-slice diagnosis skipped for time; "
                "call flyslice.solver.diagnose() for details)",
            )
            continue
        found = _explain(ctx, s, admitted, diag_opts, use_ilp=budget[0] > 0, budget=budget)
        if not found:
            found = _fallback_reason(s, proven, fallback)
        out[s.key] = tuple(found)
    return out


def _fallback_reason(s: SliceDemand, proven: bool, fallback: Mapping[str, str]) -> list[str]:
    if s.key in fallback:
        return [fallback[s.key]]
    if proven:
        return [
            "it fits on its own, but not together with the admitted slices of equal or higher priority; "
            "add capacity, raise spec.priority or relax its budgets"
        ]
    return [
        "it fits on its own, but the solver found no placement admitting it within the time limit; "
        "raise the time limit or add capacity"
    ]


def _assemble(
    ctx: _Context,
    admitted: Mapping[str, Mapping[str, Assignment]],
    reasons: Mapping[str, tuple[str, ...]],
    *,
    status: SolverStatus,
    method: str,
    solver: str,
    gap: float | None,
    seconds: float,
    build_seconds: float,
) -> Placement:
    problem = ctx.problem
    slices: dict[str, SlicePlacement] = {}
    latencies: dict[str, dict[str, float]] = {}
    usage: dict[str, Resources] = {}
    for s in problem.slices:
        assignments = admitted.get(s.key)
        if assignments is None:
            slices[s.key] = SlicePlacement(s.key, admitted=False, reasons=reasons.get(s.key, ()))
            continue
        lat = {p.name: path_latency(p, s, assignments, ctx.dist) for p in s.paths}
        latencies[s.key] = lat
        add_usage(usage, slice_usage(s, assignments))
        slices[s.key] = SlicePlacement(s.key, True, dict(assignments), lat)
    terms = objective_terms(problem, admitted, latencies)
    return Placement(
        slices=slices,
        host_usage=usage,
        status=status,
        method=method,
        solver=solver,
        objective=sum(terms.values()),
        objective_terms=terms,
        gap=gap,
        seconds=seconds,
        build_seconds=build_seconds,
    )
