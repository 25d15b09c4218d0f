"""The public entry points: ``place`` (ILP with baseline fallback), ``baseline`` and ``diagnose``."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import pulp

from . import bounds, ilp, sharing, staged
from .backends import solve
from .baseline import greedy, priority_order
from .candidates import Option, path_slack, prune
from .candidates import _most_promising as most_promising
from .consolidate import consolidate
from .diagnosis import cheap_reasons, relaxation_reasons
from .distances import Distances, distances_for
from .evaluation import (
    add_usage,
    link_load,
    max_budget,
    moved_count,
    objective_terms,
    path_latency,
    rejection_scale,
    violations,
)
from .model import (
    Assignment,
    Guarantee,
    Placement,
    Problem,
    Resources,
    SliceDemand,
    SlicePlacement,
    SolverStatus,
    Topology,
)
from .options import SolveOptions
from .sharing import Hints, Ledger, Shares, Tenant, current_hints, hints_of_ids, pack
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
    #: Some NF of the problem has a flavour with sharing.
    shared: bool = False

    @classmethod
    def of(cls, problem: Problem) -> _Context:
        check_problem(problem)
        sharing.check(problem)
        topo = problem.topology
        dist = distances_for(topo, max_budget(problem))
        base_free = {h.name: h.capacity - problem.background.get(h.name, Resources()) for h in topo.hosts}
        link_cap = {
            frozenset((lk.a, lk.b)): float(lk.bandwidth_mbps)
            for lk in topo.links
            if lk.bandwidth_mbps is not None
        }
        errors = {s.key: slice_errors(problem, s) for s in problem.slices}
        shared = any(
            d.sharing is not None for s in problem.slices for nf in s.nfs for d in nf.flavors.values()
        )
        return cls(problem, dist, base_free, link_cap, {k: v for k, v in errors.items() if v}, shared)

    def valid(self) -> list[SliceDemand]:
        return [s for s in self.problem.slices if s.key not in self.errors]

    def remaining(
        self, admitted: Mapping[str, Mapping[str, Assignment]], hints: Hints | None = None
    ) -> tuple[dict[str, Resources], dict[frozenset[str], float], Ledger]:
        """Free host capacity, link bandwidth and the shared instances once ``admitted`` slices are
        placed (their shared NFs packed as ``hints`` say, else as they run now, else first fit)."""
        used: dict[str, Resources] = {}
        links: dict[frozenset[str], float] = dict(self.link_cap)
        by_key = {s.key: s for s in self.problem.slices}
        ledger = Ledger(self.problem.derated)
        for key, assignments in admitted.items():
            draft = ledger.draft(by_key[key], assignments, hints or {})
            ledger.commit(draft)
            add_usage(used, draft.usage)
            if self.link_cap:
                for link, mbps in link_load(self.problem, by_key[key], assignments, self.dist).items():
                    if link in links:
                        links[link] -= mbps
        free = {h: r - used.get(h, Resources()) for h, r in self.base_free.items()}
        return free, links, ledger


def place(problem: Problem, options: SolveOptions | None = None) -> Placement:
    """Place every slice of ``problem`` with the ILP; see docs/solver.md.

    Anytime: the returned placement is the best, by the true objective, of the baseline
    heuristic's placement and every answer the solver found in time, and ``Placement.guarantee``
    says what it is proven to be worth. Slices that cannot all fit are rejected by priority, each
    with reasons. The whole call (model building, solving, re-checks, diagnosis) keeps to
    ``options.time_limit_s``, except that the baseline heuristic always runs to the end.
    """
    opts = options or SolveOptions()
    clock = _Clock(time.perf_counter(), opts.time_limit_s)
    ctx = _Context.of(problem)
    fixed, fixed_hints = _fixed_slices(ctx) if opts.mode == "incremental" else ({}, {})
    # ``held``: the shared instances of the fixed slices; new tenants may join them where they have room.
    free, link_free, held = ctx.remaining(fixed, fixed_hints)
    to_place = [s for s in ctx.valid() if s.key not in fixed]
    restrictions: list[str] = []
    if fixed:
        restrictions.append(f"incremental mode: {len(fixed)} running slice(s) held fixed")

    # The baseline first: it is the floor every answer is measured against, the warm start, and
    # the answer when time runs out. It ignores the migration budget, so with a budget the start
    # keeps running slices where they are instead.
    start_ledger = held.copy()
    start_point, start_rejects = greedy(problem, to_place, free, link_free, ctx.dist, start_ledger)
    start_hints = start_ledger.labels()
    log.debug("baseline heuristic done at %.3fs", clock.now() - clock.start)
    budget = opts.migration_budget if opts.mode == "full" else None
    if budget is not None and _moves(ctx, start_point) > budget:
        start_point, start_rejects, start_hints = _stay_start(ctx, to_place)
    # With sharing, the start with needless instances closed (consolidate.py). It is kept aside, not
    # made the warm start: the restricted first pass is built around the start, and around the
    # consolidated one it was measured to end worse on the 55-node published grid (docs/solver.md).
    polished = (
        _consolidated(
            ctx,
            _Held(fixed, fixed_hints),
            start_point,
            start_hints,
            budget,
            clock.now() + CONSOLIDATE_SHARE * opts.time_limit_s,
        )
        if ctx.shared
        else None
    )
    # Problems without sharing prune exactly as before sharing existed (and tests swap prune for
    # a reference that knows nothing of it).
    shares = Shares(problem.derated, held.room()) if ctx.shared else None
    running = held.open_with_room()

    candidates: dict[str, dict[str, list[Option]]] = {}
    capped = False
    pruned_all = True
    prune_start = clock.now()
    for s in to_place:
        if clock.now() > clock.solve_deadline:
            pruned_all = False
            break
        c = (
            prune(s, problem.topology, free, ctx.dist)
            if shares is None
            else prune(s, problem.topology, free, ctx.dist, shares=shares)
        )
        if opts.max_candidates is not None:
            capped |= _cap(s, c, problem.topology, ctx.dist, opts.max_candidates)
        chosen = start_point.get(s.key)
        if chosen is not None:
            _widen(s, c, chosen)
        # A slice with an NF that has nowhere to go is rejected without modelling; its reasons
        # come from the diagnosis like any other rejected slice's.
        if all(c.values()):
            candidates[s.key] = c
    pruning_complete = pruned_all
    prune_seconds = clock.now() - prune_start
    log.debug("pruning done at %.3fs (%.3fs)", clock.now() - clock.start, prune_seconds)
    if capped:
        restrictions.append(f"candidate cap k={opts.max_candidates}")
    modelled = [s for s in to_place if s.key in candidates]

    search = _Search(
        start_point,
        start_hints,
        _true_objective(ctx, {**fixed, **start_point}, {**fixed_hints, **start_hints}),
    )
    held_fixed = _Held(fixed, fixed_hints)
    build_seconds = 0.0
    build_predicted = 0.0
    # Large models: solve a restricted model first for an early, truly feasible answer; it only
    # becomes the full model's warm start (its bound is not used). See staged.py.
    first = (
        staged.restricted(
            modelled,
            candidates,
            problem.topology,
            ctx.dist,
            start_point,
            seconds_left=clock.solve_deadline - clock.now(),
        )
        if pruned_all
        else None
    )
    if first is not None:
        small_start = clock.now()
        small = ilp.build(
            problem,
            modelled,
            first,
            free,
            link_free,
            ctx.dist,
            migration_budget=budget,
            existing=running,
            direct=opts.direct,
        )
        # This call's own build rate, for predicting the full model's build (see _time_to_build).
        full_options = sum(len(o) for s in modelled for o in candidates[s.key].values())
        small_options = max(1, sum(len(o) for c in first.values() for o in c.values()))
        build_predicted = (clock.now() - small_start) * full_options / small_options
        log.debug(
            "restricted model built at %.3fs (%d of %d options; full build predicted %.3fs)",
            clock.now() - clock.start,
            small_options,
            full_options,
            build_predicted,
        )
        trial = _Search(search.best, search.hints, search.best_value)
        # The share is of the time left once the small model is built (on 1000 hosts building it
        # can take most of a share that counted from before the build).
        left = clock.solve_deadline - clock.now()
        share = _Clock(clock.now(), staged.share(build_predicted, left) * left)
        _solve_with_cuts(ctx, small, modelled, held_fixed, opts, share, trial, clock.now() - small_start)
        if trial.source == "ilp":
            search.offer(trial.best, trial.hints, trial.best_value)
        log.debug("restricted first pass done at %.3fs: %s", clock.now() - clock.start, trial.note)
    if pruned_all and not _time_to_build(clock, opts.solver, prune_seconds, build_predicted):
        pruned_all = False
    if pruned_all:
        build_start = clock.now()
        built = ilp.build(
            problem,
            modelled,
            candidates,
            free,
            link_free,
            ctx.dist,
            migration_budget=opts.migration_budget if opts.mode == "full" else None,
            existing=running,
            direct=opts.direct,
        )
        build_seconds = clock.now() - clock.start
        # Handing the model to the solver (an MPS file for CBC, PuLP's Python loops for HiGHS through
        # PuLP, one array call when built directly) and reading the answer back cost up to about as
        # much as building it, outside the solver's own time limit (see _round_overhead).
        io_seconds = clock.now() - build_start
        log.debug("model built at %.3fs (%.3fs in ilp.build)", build_seconds, io_seconds)
        _solve_with_cuts(ctx, built, modelled, held_fixed, opts, clock, search, io_seconds)
    else:
        build_seconds = clock.now() - clock.start
        search.note = "the time limit left no time to build and solve the model"

    log.debug("search done at %.3fs of %.3fs: %s", clock.now() - clock.start, opts.time_limit_s, search.note)
    if polished is not None:
        if polished[2] < search.best_value - 1e-9:
            search.best, search.hints, search.best_value = polished
            search.source = "baseline"
        # The solver's incumbent may keep half-empty instances when time runs out: close them too,
        # within half of what the diagnosis may take (every move re-checked like a solver answer).
        # The solver's last answer too when it was not kept: counted instances and lazy latency
        # cuts can make its true objective worse than the start's, yet consolidated it may win.
        stop = clock.now() + 0.5 * max(0.0, clock.diagnosis_deadline() - clock.now())
        latest = search.latest
        if latest is not None and latest[0] is not search.best and len(latest[0]) >= len(search.best):
            mid = clock.now() + 0.5 * (stop - clock.now())
            other = _consolidated(ctx, held_fixed, *latest[:2], budget, mid, latest[2])
            if other[2] < search.best_value - 1e-9:
                search.best, search.hints, search.best_value = other
                search.source = "ilp"
        search.best, search.hints, search.best_value = _consolidated(
            ctx, held_fixed, search.best, search.hints, budget, stop, search.best_value
        )
    if pruning_complete and opts.max_candidates is None:
        # Where the solver proved little or nothing (no root LP in time), each slice at its cheapest.
        floor = bounds.cheapest_slices_bound(problem, modelled, candidates, ctx.dist)
        if floor is not None and (search.bound is None or floor > search.bound):
            log.debug("bound: each slice at its cheapest, %.6g (the solver's: %s)", floor, search.bound)
            search.bound = floor
    admitted: dict[str, dict[str, Assignment]] = {**fixed, **search.best}
    hints = {**fixed_hints, **search.hints}
    gap = _gap(ctx, modelled, held_fixed, search.bound, search.best_value)
    guarantee, status = _judge(ctx, admitted, restrictions, search, gap, opts)
    reasons = _reasons(
        ctx,
        admitted,
        hints,
        opts,
        proven=guarantee is Guarantee.OPTIMAL,
        fallback=start_rejects if search.source == "baseline" else {},
        deadline=clock.diagnosis_deadline(),
        unproven=_unproven_reason(restrictions, search.note),
    )
    log.debug("reasons done at %.3fs", clock.now() - clock.start)
    return _assemble(
        ctx,
        admitted,
        hints,
        reasons,
        status=status,
        method="ilp" if search.source == "ilp" else "baseline",
        solver=_solver_name(opts),
        gap=gap,
        seconds=clock.now() - clock.start,
        build_seconds=build_seconds,
        guarantee=guarantee,
        restrictions=tuple(restrictions) if guarantee is Guarantee.RESTRICTED else (),
    )


#: Share of the time limit held back from the MIP solver for re-checks, diagnosis and assembly.
RESERVE_SHARE = 0.1
#: ... but never more than this many seconds.
RESERVE_MAX_SECONDS = 3.0
#: Share of the time limit left for assembling the result after the diagnosis ...
ASSEMBLY_SHARE = 0.01
#: ... and at least this many seconds.
ASSEMBLY_MIN_SECONDS = 0.05
#: A solver round's cost beyond the solver's own time limit, as a multiple of the model's build time
#: (handing the model over, the solver's late stop, reading and re-checking the answer), until measured.
IO_FACTOR = 1.5
#: The same for CBC: it reads an MPS file in a new process, and its root LP and MIP-start
#: processing do not check the clock (measured: 0.6-0.9 s past a 0.2 s limit on a model built in
#: 0.2-0.25 s, on the loaded 2-core machine).
CBC_IO_FACTOR = 3.0
#: A solver round is not started with less time than this left.
MIN_ROUND_SECONDS = 0.05


@dataclass(frozen=True)
class _Clock:
    """Deadlines within one ``place()`` call, all in ``time.perf_counter()`` seconds."""

    start: float
    limit: float

    def now(self) -> float:
        return time.perf_counter()

    @property
    def end(self) -> float:
        return self.start + self.limit

    @property
    def solve_deadline(self) -> float:
        return self.end - min(RESERVE_SHARE * self.limit, RESERVE_MAX_SECONDS)

    def diagnosis_deadline(self) -> float:
        """What is left after the solve, or a bounded share of it, minus room to assemble."""
        share = max(DIAGNOSIS_SECONDS, 0.2 * self.limit)
        return min(self.now() + share, self.end - max(ASSEMBLY_SHARE * self.limit, ASSEMBLY_MIN_SECONDS))


#: Per solver: how far past its own time limit a timed-out round ran (moving average over this
#: process's rounds; it grows with machine load).
_OVERSHOOT: dict[str, float] = {}

#: A build is predicted to take this multiple of the pruning time of the same call (the benchmarks
#: measured 2-3x). Predicted from this call alone, not learnt across calls: a rate learnt from small
#: models over-predicts large ones (a long-running operator skipped a 200-host build at 9 s of 30).
PRUNE_TO_BUILD = 2.0


#: The same for a model built directly for HiGHS (matrix.py): one ``passModel`` call and an array
#: read-back instead of PuLP's per-column loops (measured 0.45x the build: 1.2 s passing plus 0.55 s
#: past the limit after a 4.4 s build of 30 372 columns, at load average 11).
DIRECT_IO_FACTOR = 0.5


def _round_overhead(solver: str, io_seconds: float, direct: bool = False) -> float:
    """What a solver round is expected to cost beyond the solver's own time limit."""
    factor = CBC_IO_FACTOR if solver == "cbc" else DIRECT_IO_FACTOR if direct else IO_FACTOR
    return max(MIN_ROUND_SECONDS, factor * io_seconds, _OVERSHOOT.get(solver, 0.0))


def _time_to_build(clock: _Clock, solver: str, prune_seconds: float, build_predicted: float = 0.0) -> bool:
    """Whether building the model still leaves a solver round before the solve deadline.

    ``build_predicted``: the build time extrapolated from this call's restricted first pass (its
    build seconds per option), when there was one. Since pruning became several times faster
    (tests/solver/test_fast_paths.py), the pruning time alone under-predicts large builds: on
    1000 hosts x 500 slices the build took 15-36 s after 4-7 s of pruning.
    """
    predicted = max(PRUNE_TO_BUILD * prune_seconds, build_predicted)
    # The build, a minimal round, and what a round costs outside the solver: as measured for this
    # solver, else half the build (a skipped build must not be the cautious default).
    outside = _OVERSHOOT.get(solver, 0.5 * predicted)
    needed = predicted + MIN_ROUND_SECONDS + outside
    return clock.now() + needed <= clock.solve_deadline


@dataclass(frozen=True)
class _Held:
    """The running slices held fixed (incremental mode) and the instances of their shared NFs."""

    placed: dict[str, dict[str, Assignment]]
    hints: dict[Tenant, str]


@dataclass
class _Search:
    """The best placement seen so far (of the modelled slices) and what is proven about it."""

    best: dict[str, dict[str, Assignment]]
    #: How the shared NFs of ``best`` are packed into instances (ledger labels; see sharing.py).
    hints: dict[Tenant, str]
    best_value: float
    #: ``"baseline"`` (the heuristic's start) or ``"ilp"`` (a re-checked solver answer).
    source: str = "baseline"
    #: The best lower bound of the model over the rounds (valid for the model that was solved).
    bound: float | None = None
    #: The last round's answer was proven optimal and needed no more latency cuts.
    converged_optimal: bool = False
    solver_answered: bool = False
    #: Why the search stopped early, for the reasons of rejected slices.
    note: str = ""

    #: The last answer offered, kept or not: with sharing, the solver's answer may cost more than
    #: the best until its instances are consolidated (see place()).
    latest: tuple[dict[str, dict[str, Assignment]], dict[Tenant, str], float] | None = None

    def offer(self, found: dict[str, dict[str, Assignment]], hints: dict[Tenant, str], value: float) -> None:
        self.latest = (found, hints, value)
        # Ties go to the solver's answer (it is the one the bound was proven for).
        if value <= self.best_value + 1e-9:
            self.best, self.hints, self.best_value, self.source = found, hints, value, "ilp"


#: Latency cut rounds stop after this many re-solves even when time is left.
MAX_CUT_ROUNDS = 30


def _solve_with_cuts(
    ctx: _Context,
    built: ilp.Built,
    modelled: list[SliceDemand],
    fixed: _Held,
    opts: SolveOptions,
    clock: _Clock,
    search: _Search,
    io_seconds: float,
) -> None:
    """Solve, add the latency pivot cuts the answer violates, re-solve until none is violated.

    Each round's model is a relaxation of the solved model, so its bound stays valid; every answer
    is re-checked against the true rules and offered to ``search`` by its true objective, so the
    best of the baseline and every round is kept however the rounds end.
    """
    if not modelled:
        # Nothing to decide (an empty model is not a solver question; HiGHS calls it an error).
        search.bound, search.converged_optimal = 0.0, True
        search.offer({}, {}, search.best_value)
        return
    # What a round costs beyond the solver's own limit: estimated from the build and from what
    # earlier rounds of this solver measured (CBC's root processing does not check the clock), then
    # from this call's own rounds.
    overhead = _round_overhead(opts.solver, io_seconds, opts.direct)
    for _ in range(MAX_CUT_ROUNDS):
        round_start = clock.now()
        limit = clock.solve_deadline - round_start - overhead
        if limit < MIN_ROUND_SECONDS:
            search.note = search.note or "the time limit ran out before the solver could start"
            # Forget part of a past overshoot: one slow round under load must not keep every later
            # short-limit call from trying the solver.
            if opts.solver in _OVERSHOOT:
                _OVERSHOOT[opts.solver] *= 0.5
            return
        start = search.best
        warm = opts.warm_start and bool(start)
        if warm:
            built.set_start(start, modelled, ctx.dist, search.hints)
        try:
            # A late HiGHS run may use what was set aside for the round's overrun, not more.
            outcome = solve(
                built.prob,
                replace(opts, time_limit_s=limit),
                warm_start=warm,
                wait_until=clock.solve_deadline,
            )
        except pulp.PulpSolverError as exc:
            # Bundled CBC 2.10.3 can exit non-zero when its time limit hits while it is still
            # trying the MIP start: an answer is still owed, and the best so far is one.
            log.warning("the MIP solver failed, keeping the best placement so far: %s", exc)
            search.note = "the MIP solver exited with an error"
            return
        if outcome.bound is not None:
            search.bound = outcome.bound if search.bound is None else max(search.bound, outcome.bound)
        if outcome.abandoned:
            search.note = "the solver did not stop at its time limit and its answer was not waited for"
            return
        if outcome.kind == "none":
            search.note = "the time limit ran out before the solver's first answer"
            return
        search.solver_answered = True
        found = built.assignments()
        tenancy, unpacked = built.tenancy()
        # Cuts only matter for another round, and only a proven round is followed by one. Shared
        # instances the answer cannot pack into the counted ones make their (pool, host) exact.
        cuts = (
            ilp.violated_pairs(built, found, ctx.dist) + ilp.refine_packing(unpacked)
            if outcome.kind == "optimal"
            else -1
        )
        usable, packed = _checked(ctx, found, fixed, tenancy)
        search.offer(
            usable, packed, _true_objective(ctx, {**fixed.placed, **usable}, {**fixed.hints, **packed})
        )
        spent = clock.now() - round_start
        log.debug(
            "cut round: %s in %.3fs (%.3fs with I/O), objective %s, bound %s, %d new latency cuts or exact "
            "instance groups (-1: not cut)",
            outcome.kind,
            outcome.seconds,
            spent,
            outcome.objective,
            outcome.bound,
            cuts,
        )
        if outcome.kind != "optimal":
            # The solver used its whole limit: what the round took beyond it is overhead.
            overhead = max(MIN_ROUND_SECONDS, spent - limit)
            seen = _OVERSHOOT.get(opts.solver)
            _OVERSHOOT[opts.solver] = overhead if seen is None else 0.5 * (seen + overhead)
            search.note = "the solver's time limit ran out"
            return
        if cuts == 0:
            search.converged_optimal = True
            return
    search.note = "the latency cut rounds did not converge in time"


def _gap(
    ctx: _Context,
    modelled: list[SliceDemand],
    fixed: _Held,
    bound: float | None,
    value: float,
) -> float | None:
    """The gap of a placement worth ``value`` (whole objective) against the model's bound.

    The model leaves out fixed slices (incremental mode) and slices rejected before modelling;
    both are constants, taken out of ``value`` here.
    """
    if bound is None:
        return None
    scale = rejection_scale(ctx.problem)
    offset = _true_objective(ctx, fixed.placed, fixed.hints) - sum(
        ctx.problem.weights.rejection * scale[s.key] for s in modelled
    )
    # Relative to the part of the objective the decisions can change, like the solver's own gap.
    decided = value - offset
    return max(0.0, (decided - bound) / max(abs(decided), 1e-9))


def _judge(
    ctx: _Context,
    admitted: Mapping[str, Mapping[str, Assignment]],
    restrictions: list[str],
    search: _Search,
    gap: float | None,
    opts: SolveOptions,
) -> tuple[Guarantee, SolverStatus]:
    """The guarantee of the returned placement, and the compatible ``SolverStatus``."""
    answered = search.solver_answered or search.source == "ilp"
    if restrictions:
        return Guarantee.RESTRICTED, SolverStatus.FEASIBLE if answered else SolverStatus.NOT_SOLVED
    if search.converged_optimal and gap is not None and gap <= opts.gap_rel + 1e-9:
        everyone = len(admitted) == len(ctx.problem.slices)
        return Guarantee.OPTIMAL, SolverStatus.OPTIMAL if everyone else SolverStatus.INFEASIBLE
    if gap is not None:
        return Guarantee.FEASIBLE_WITH_GAP, SolverStatus.FEASIBLE
    return Guarantee.HEURISTIC, SolverStatus.FEASIBLE if answered else SolverStatus.NOT_SOLVED


def _solver_name(opts: SolveOptions) -> str:
    return "CBC" if opts.solver == "cbc" else "HiGHS"


def _unproven_reason(restrictions: list[str], note: str) -> str:
    """Why a rejection is not proven for the full model (appended to, or standing for, its reasons)."""
    if restrictions:
        return (
            "not proven for the full model: the model solved was restricted ("
            + "; ".join(restrictions)
            + ") and its answer does not admit this slice; it may fit without the restriction"
        )
    why = note or "the solver did not prove its answer optimal"
    return f"not proven impossible ({why}); raise the time limit or add capacity"


def _moves(ctx: _Context, placed: Mapping[str, Mapping[str, Assignment]]) -> int:
    by_key = {s.key: s for s in ctx.problem.slices}
    return sum(moved_count(by_key[k], a) for k, a in placed.items())


def _stay_start(
    ctx: _Context, slices: list[SliceDemand]
) -> tuple[dict[str, dict[str, Assignment]], dict[str, str], dict[Tenant, str]]:
    """A start that moves nothing (full mode, no slice held): running slices stay where they are, in
    the instances they run in; the others go greedily."""
    running = [
        (s, {nf.id: s.current[nf.id] for nf in s.nfs})
        for s in priority_order(slices)
        if current_is_usable(ctx.problem, s)
    ]
    kept, _ = _admit_in_order(
        ctx, running, {}, {}, current_hints(ctx.problem, {s.key: a for s, a in running})
    )
    rest = [s for s in slices if s.key not in kept and not s.current]
    left, links, ledger = ctx.remaining(kept, current_hints(ctx.problem, kept))
    more, rejects = greedy(ctx.problem, rest, left, links, ctx.dist, ledger)
    for s in slices:
        if s.key not in kept and s.current:
            rejects[s.key] = "baseline: its running placement no longer fits and moving it exceeds the budget"
    return {**kept, **more}, rejects, ledger.labels()


def _cap(
    s: SliceDemand, options: dict[str, list[Option]], topology: Topology, dist: Distances, k: int
) -> bool:
    """Keep the ``k`` most promising options per NF (a heuristic); True when any option was cut."""
    if all(len(o) <= k for o in options.values()):
        return False
    slack = path_slack(s, options, dist)
    for nf_id, opts in options.items():
        if len(opts) > k:
            options[nf_id] = most_promising(s, nf_id, opts, slack.get(nf_id, {}), topology)[:k]
    return True


def _widen(s: SliceDemand, options: dict[str, list[Option]], chosen: Mapping[str, Assignment]) -> None:
    """Add the start's own options, so the warm start is a point of the model however it is cut."""
    for nf in s.nfs:
        a = chosen[nf.id]
        if not any(o.host == a.host and o.flavor == a.flavor for o in options[nf.id]):
            demand = nf.flavors[a.flavor]
            options[nf.id].append(
                Option(a.host, a.flavor, demand.resources, demand.processing_latency_ms, demand.sharing)
            )


#: Share of the time limit the consolidation of the baseline's start may take (see consolidate.py).
CONSOLIDATE_SHARE = 0.1


def _consolidated(
    ctx: _Context,
    fixed: _Held,
    admitted: dict[str, dict[str, Assignment]],
    hints: dict[Tenant, str],
    budget: int | None,
    deadline: float,
    value: float | None = None,
) -> tuple[dict[str, dict[str, Assignment]], dict[Tenant, str], float]:
    """``admitted`` (the modelled slices) with shared instances closed while the true objective
    decreases; every move re-checked like a solver answer and kept within the migration budget."""

    def evaluate(
        found: dict[str, dict[str, Assignment]], found_hints: dict[Tenant, str]
    ) -> tuple[dict[str, dict[str, Assignment]], dict[Tenant, str], float] | None:
        kept, packed = _checked(ctx, found, fixed, found_hints)
        if budget is not None and _moves(ctx, kept) > budget:
            return None
        return kept, packed, _true_objective(ctx, {**fixed.placed, **kept}, {**fixed.hints, **packed})

    if value is None:
        value = _true_objective(ctx, {**fixed.placed, **admitted}, {**fixed.hints, **hints})
    started = time.perf_counter()
    out = consolidate(ctx.problem, admitted, hints, value, evaluate, ctx.dist, deadline)
    log.debug("consolidation: %.6g -> %.6g in %.3fs", value, out[2], time.perf_counter() - started)
    return out


def _true_objective(ctx: _Context, admitted: Mapping[str, Mapping[str, Assignment]], hints: Hints) -> float:
    """The objective of ``admitted``, its shared NFs packed into instances as ``hints`` say."""
    by_key = {s.key: s for s in ctx.problem.slices}
    latencies = {
        k: {p.name: path_latency(p, by_key[k], a, ctx.dist) for p in by_key[k].paths}
        for k, a in admitted.items()
    }
    return sum(objective_terms(ctx.problem, admitted, latencies, pack(ctx.problem, admitted, hints)).values())


def baseline(problem: Problem) -> Placement:
    """GNF's rule: each NF as close to the user as it fits, falling back toward the cloud."""
    start = time.perf_counter()
    ctx = _Context.of(problem)
    ledger = Ledger(problem.derated)
    admitted, rejects = greedy(problem, ctx.valid(), ctx.base_free, ctx.link_cap, ctx.dist, ledger)
    hints = ledger.labels()
    reasons = _reasons(
        ctx,
        admitted,
        hints,
        SolveOptions(),
        proven=False,
        fallback=rejects,
        use_ilp=False,
        unproven="not admitted by the baseline heuristic (it is not an optimiser: place() may admit it)",
    )
    return _assemble(
        ctx,
        admitted,
        hints,
        reasons,
        status=SolverStatus.FEASIBLE,
        method="baseline",
        solver="greedy",
        gap=None,
        seconds=time.perf_counter() - start,
        build_seconds=0.0,
        guarantee=Guarantee.HEURISTIC,
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
    hints = (
        hints_of_ids(problem, admitted, {k: sp.instance_of for k, sp in placement.slices.items()})
        if placement
        else {}
    )
    wanted = set(keys) if keys is not None else {s.key for s in problem.slices}
    out: dict[str, tuple[str, ...]] = {}
    for s in problem.slices:
        if s.key not in wanted:
            continue
        others = {k: v for k, v in admitted.items() if k != s.key}
        found, _ = _explain(ctx, s, others, hints, options or SolveOptions(), use_ilp=True)
        out[s.key] = tuple(found or ())
    return out


def _fixed_slices(ctx: _Context) -> tuple[dict[str, dict[str, Assignment]], dict[Tenant, str]]:
    """Incremental mode: slices whose current placement is complete and still valid (their shared NFs
    in the instances they run in), by priority; and those instances (ledger labels)."""
    running = [
        (s, {nf.id: s.current[nf.id] for nf in s.nfs})
        for s in priority_order(ctx.valid())
        if current_is_usable(ctx.problem, s)
    ]
    kept, ledger = _admit_in_order(
        ctx, running, {}, {}, current_hints(ctx.problem, {s.key: a for s, a in running})
    )
    return kept, ledger.labels()


def _checked(
    ctx: _Context, found: Mapping[str, dict[str, Assignment]], fixed: _Held, hints: Hints
) -> tuple[dict[str, dict[str, Assignment]], dict[Tenant, str]]:
    """Re-check the solver's answer (its shared NFs packed as ``hints`` say) independently of the
    model; drop a slice that breaks a rule. Returns the kept slices and their packing."""
    by_key = {s.key: s for s in ctx.problem.slices}
    ordered = [(by_key[k], found[k]) for k in sorted(found, key=lambda k: (-by_key[k].priority, k))]
    kept, ledger = _admit_in_order(ctx, ordered, fixed.placed, fixed.hints, hints)
    return kept, {t: lbl for t, lbl in ledger.labels().items() if t[0] in kept}


def _admit_in_order(
    ctx: _Context,
    candidates: list[tuple[SliceDemand, dict[str, Assignment]]],
    already: Mapping[str, Mapping[str, Assignment]],
    already_hints: Hints,
    hints: Hints,
) -> tuple[dict[str, dict[str, Assignment]], Ledger]:
    """Keep each candidate placement that still fits (capacity, shared instances' capacity and
    tenants, bandwidth, budgets, availability); its shared NFs join instances as ``hints`` say when
    those have room, else as :class:`~.sharing.Ledger` packs them. Returns the ledger of everything."""
    free, links, ledger = ctx.remaining(already, already_hints)
    kept: dict[str, dict[str, Assignment]] = {}
    for s, assignments in candidates:
        draft = ledger.draft(s, assignments, hints)
        if draft.errors or violations(ctx.problem, s, assignments, free, ctx.dist, usage=draft.usage):
            continue
        load = link_load(ctx.problem, s, assignments, ctx.dist) if ctx.link_cap else {}
        if any(mbps > links.get(link, float("inf")) + 1e-6 for link, mbps in load.items()):
            continue
        kept[s.key] = assignments
        ledger.commit(draft)
        for host, used in draft.usage.items():
            free[host] = free[host] - used
        for link, mbps in load.items():
            if link in links:
                links[link] -= mbps
    return kept, ledger


def _explain(
    ctx: _Context,
    s: SliceDemand,
    admitted: Mapping[str, Mapping[str, Assignment]],
    hints: Hints,
    options: SolveOptions,
    use_ilp: bool,
    budget: list[int] | None = None,
    deadline: float | None = None,
) -> tuple[list[str] | None, bool]:
    """Reasons found, and whether they hold for the slice alone (whatever else is admitted)."""
    if s.key in ctx.errors:
        return ctx.errors[s.key], True
    alone = cheap_reasons(ctx.problem, s, ctx.base_free, ctx.dist, Shares(ctx.problem.derated))
    if alone:
        return alone, True
    free, links, ledger = ctx.remaining(admitted, hints)
    shares = Shares(ctx.problem.derated, ledger.room())
    prefix = "with the capacity already taken by admitted slices: " if admitted else ""
    shared = cheap_reasons(ctx.problem, s, free, ctx.dist, shares) if admitted else []
    if shared:
        return [prefix + r for r in shared], not admitted
    if not use_ilp:
        return None, False
    if budget is not None:
        budget[0] -= 1
    relaxed = relaxation_reasons(
        ctx.problem, s, free, links, ctx.dist, options, deadline, shares, ledger.open_with_room()
    )
    # None: it fits in what is left, so it lost to the objective or to the time limit.
    return (None if relaxed is None else [prefix + r for r in relaxed]), not admitted


#: Said of a rejected slice whose per-slice diagnosis did not run because the time limit was reached.
SKIPPED_FOR_TIME = (
    "per-slice diagnosis skipped: the time limit was reached; call flyslice.solver.diagnose() for details"
)


def _reasons(
    ctx: _Context,
    admitted: Mapping[str, Mapping[str, Assignment]],
    hints: Hints,
    options: SolveOptions,
    proven: bool,
    fallback: Mapping[str, str],
    use_ilp: bool = True,
    deadline: float | None = None,
    unproven: str = "",
) -> dict[str, tuple[str, ...]]:
    """Reasons for every rejected slice; no relaxation solve starts after ``deadline``."""
    out: dict[str, tuple[str, ...]] = {}
    budget = [MAX_RELAXATION_DIAGNOSES if use_ilp else 0]
    diag_opts = SolveOptions(solver=options.solver, time_limit_s=DIAGNOSIS_SOLVE_SECONDS, warm_start=False)
    stop_at = deadline if deadline is not None else time.perf_counter() + DIAGNOSIS_SECONDS
    for s in priority_order(list(ctx.problem.slices)):
        if s.key in admitted:
            continue
        if s.key in ctx.errors:
            out[s.key] = tuple(ctx.errors[s.key])
            continue
        if time.perf_counter() > stop_at:
            if s.key in fallback:
                out[s.key] = (
                    fallback[s.key],
                    *([unproven] if unproven and not proven else []),
                    SKIPPED_FOR_TIME,
                )
            else:
                out[s.key] = (_not_admitted_reason(proven, unproven), SKIPPED_FOR_TIME)
            continue
        found, alone = _explain(
            ctx, s, admitted, hints, diag_opts, use_ilp=budget[0] > 0, budget=budget, deadline=stop_at
        )
        if not found:
            found = _fallback_reason(s, proven, fallback, unproven)
            if s.key in fallback and not proven and unproven:
                found = [*found, unproven]
        elif not alone and not proven and unproven:
            # The reasons hold against what was admitted, but that set is not proven best.
            found = [*found, unproven]
        out[s.key] = tuple(found)
    return out


def _not_admitted_reason(proven: bool, unproven: str) -> str:
    if proven:
        return (
            "not admitted: the placement is proven optimal, and admitting it would cost more than it "
            "gains (capacity within its reach went to slices of equal or higher priority)"
        )
    return "not admitted; " + (unproven or "not proven impossible (the time limit ran out)")


def _fallback_reason(
    s: SliceDemand, proven: bool, fallback: Mapping[str, str], unproven: str = ""
) -> list[str]:
    if s.key in fallback:
        return [fallback[s.key]]
    if proven:
        return [
            "it fits on its own, but not together with the admitted slices of equal or higher priority; "
            "add capacity, raise spec.priority or relax its budgets"
        ]
    return [
        "it fits on its own; "
        + (unproven or "not proven impossible (the time limit ran out); raise the time limit or add capacity")
    ]


def _assemble(
    ctx: _Context,
    admitted: Mapping[str, Mapping[str, Assignment]],
    hints: Hints,
    reasons: Mapping[str, tuple[str, ...]],
    *,
    status: SolverStatus,
    method: str,
    solver: str,
    gap: float | None,
    seconds: float,
    build_seconds: float,
    guarantee: Guarantee = Guarantee.HEURISTIC,
    restrictions: tuple[str, ...] = (),
) -> Placement:
    problem = ctx.problem
    slices: dict[str, SlicePlacement] = {}
    latencies: dict[str, dict[str, float]] = {}
    usage: dict[str, Resources] = {}
    # The shared instances, repacked for stable ids where that costs nothing (sharing.stabilized).
    ledger = sharing.stabilized(problem, admitted, pack(problem, admitted, hints))
    instances, instance_of = sharing.results(problem, ledger)
    for s in problem.slices:
        assignments = admitted.get(s.key)
        if assignments is None:
            slices[s.key] = SlicePlacement(s.key, admitted=False, reasons=reasons.get(s.key, ()))
            continue
        lat = {p.name: path_latency(p, s, assignments, ctx.dist) for p in s.paths}
        latencies[s.key] = lat
        for nf_id, a in assignments.items():
            demand = s.nf_by_id[nf_id].flavors[a.flavor]
            need = demand.resources if demand.sharing is None else demand.sharing.per_tenant
            usage[a.host] = usage.get(a.host, Resources()) + need
        slices[s.key] = SlicePlacement(
            s.key, True, dict(assignments), lat, instance_of=instance_of.get(s.key, {})
        )
    for host, base in ledger.bases():
        usage[host] = usage.get(host, Resources()) + base
    terms = objective_terms(problem, admitted, latencies, ledger)
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
        guarantee=guarantee,
        restrictions=restrictions,
        instances=instances,
    )
