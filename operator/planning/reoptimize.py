"""Background re-optimisation: the global model, off the reconcile path, applied only when it pays.

Reconcile passes admit new and changed slices against the running ones held fixed (incremental
admission), so what runs never moves for a newcomer. Over time that leaves placements the global
model would improve on: a slice rejected because running NFs sit where it needs capacity, or NFs
still on the fallback node after their node came back. :func:`propose` solves the whole model
(``mode="full"``) with a migration budget and judges the answer by the solver's own objective, the
migration cost of every move included. :class:`Reoptimizer` runs it in a worker thread (a pass never
waits for it), periodically and after passes that admitted slices, and hands a proposal that improves
the objective by at least ``margin`` to the next pass, which applies it only if nothing changed since
the proposal started and the placement passes the pass's own checks (see ``operator/reconcile.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from flyslice import solver
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.planning import expansion
from flyslice.operator.planning.pipeline import plan
from flyslice.solver.evaluation import true_objective
from flyslice.solver.model import Assignment, Placement, Problem, Resources

log = logging.getLogger("flyslice.reoptimize")

#: A periodic run every five minutes: the global model may take its whole time limit on two cores.
DEFAULT_INTERVAL_S = 300.0
#: Applied only when the objective improves by at least 5 % (moves are disruptive; noise is not worth one).
DEFAULT_MARGIN = 0.05
#: At most this many running NFs move per applied re-optimisation.
DEFAULT_MIGRATION_BUDGET = 10

Result = Literal["applied", "no-improvement", "stale", "refused", "failed"]


@dataclass(frozen=True)
class ReoptimizeSettings:
    #: Seconds between periodic runs; ``None`` switches re-optimisation off (periodic and after admissions).
    interval_s: float | None = DEFAULT_INTERVAL_S
    #: Minimum relative improvement of the objective for a proposal to be applied.
    margin: float = DEFAULT_MARGIN
    #: Running NFs one proposal may move (``None``: no limit).
    migration_budget: int | None = DEFAULT_MIGRATION_BUDGET
    #: Also run after every pass that admitted or re-placed slices.
    after_admission: bool = True

    def __post_init__(self) -> None:
        if self.interval_s is not None and not self.interval_s > 0:
            raise ValueError(f"re-optimisation interval must be positive seconds, got {self.interval_s!r}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"re-optimisation margin must be a fraction in [0, 1), got {self.margin!r}")
        if self.migration_budget is not None and self.migration_budget < 0:
            raise ValueError(f"migration budget must be 0 or more NFs, got {self.migration_budget!r}")

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None


OFF = ReoptimizeSettings(interval_s=None)


@dataclass(frozen=True)
class Proposal:
    """A placement of every re-optimised slice, computed from the state ``base`` names."""

    #: The controller state it was computed from (``reconcile.state_key``); stale once that changes.
    base: str
    #: Slice key -> NF -> where it runs, for every slice the proposal admits.
    assignments: Mapping[str, Mapping[str, Assignment]]
    #: The solver's objective (migration cost included) of what runs now, and of the proposal.
    objective_before: float
    objective_after: float
    #: Running NFs that the proposal moves.
    moved: int
    #: Running slices the proposal does not admit (it would tear them down).
    dropped: tuple[str, ...]
    migration_budget: int | None
    #: What the placement's optimality claim is, in the slice status's words.
    guarantee: str
    seconds: float
    #: Slice key -> NF -> the shared instance the proposal puts it in (the solver's own packing). The
    #: independent check must use it: a tenant the proposal moves to another node cannot keep the
    #: instance it runs in now, and checking with that one would open (and pay for) a second instance.
    instances: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def improvement(self) -> float:
        """Relative decrease of the objective (0.25: a quarter lower); negative when worse."""
        return (self.objective_before - self.objective_after) / max(abs(self.objective_before), 1e-9)


@dataclass(frozen=True)
class Decision:
    """What became of one re-optimisation run: the event line and the figures for the status."""

    result: Result
    message: str
    objective_before: float | None = None
    objective_after: float | None = None
    moved: int = 0


def propose(
    catalog: Catalog,
    current: Mapping[str, Mapping[str, Assignment]],
    background: Mapping[str, Resources],
    *,
    base: str,
    options: solver.SolveOptions | None,
    migration_budget: int | None,
    current_instances: Mapping[str, Mapping[str, str]] | None = None,
    derated: Mapping[tuple[str, str], float] | None = None,
) -> Proposal:
    """Solve the global model for ``catalog`` from ``current`` (what runs) with a migration budget.

    ``current_instances``: the shared instance each running shared NF is a tenant of, by slice key;
    ``derated``: the scale-out deratings in force (the proposal must not merge what they split).
    Pure and blocking (up to the solve's time limit): the caller runs it off the reconcile path.
    """
    started = time.perf_counter()
    opts = replace(options or solver.SolveOptions(), mode="full", migration_budget=migration_budget)
    the_plan = plan(
        catalog,
        options=opts,
        current=current,
        background=background,
        current_instances=current_instances,
        derated=derated,
    )
    demands = [sp.demand for sp in the_plan.slices if sp.demand is not None]
    problem = expansion.problem(catalog, demands, background, derated, opts.weights)
    known = {d.key for d in demands}
    # Running slices the model cannot even express (no service any more) are not the model's to judge.
    before_admitted = {k: dict(a) for k, a in current.items() if k in known}
    after = {k: dict(sp.assignments) for k, sp in the_plan.placement.slices.items() if sp.admitted}
    after_instances = {k: dict(sp.instance_of) for k, sp in the_plan.placement.slices.items() if k in after}
    moved = sum(
        1 for k, a in after.items() for nf, where in a.items() if k in current and current[k].get(nf) != where
    )
    return Proposal(
        base=base,
        assignments=after,
        # Each side packed into its own instances: what runs now, and the solver's own instances.
        objective_before=objective_of(problem, before_admitted, current_instances or {}),
        objective_after=objective_of(problem, after, after_instances),
        moved=moved,
        dropped=tuple(sorted(k for k in before_admitted if k not in after)),
        migration_budget=migration_budget,
        guarantee=guarantee_of(the_plan.placement, opts, held_fixed=False),
        seconds=time.perf_counter() - started,
        instances=after_instances,
    )


def objective_of(
    problem: Problem,
    admitted: Mapping[str, Mapping[str, Assignment]],
    instance_of: Mapping[str, Mapping[str, str]] | None = None,
) -> float:
    """The solver's objective (docs/solver.md) of ``admitted``; moves count against each slice's current.

    ``instance_of`` (slice key -> NF id -> shared instance id): how the shared NFs are packed, e.g. a
    result's own instances; without it, as they run now, else first fit (``true_objective``). Each
    open instance's resources count once, so the packing is part of the value.
    """
    return true_objective(problem, admitted, instance_of)


def guarantee_of(placement: Placement, options: solver.SolveOptions, *, held_fixed: bool) -> str:
    """What a placement's optimality claim is, in the slice status's words.

    The solver states it (``Placement.guarantee`` and ``restrictions``); a solver without those fields
    is judged here from the status, the gap and the mode. A migration budget is named too: the answer
    is optimal for the problem with the budget, which is not the unconstrained one.
    """
    stated = str(getattr(getattr(placement, "guarantee", None), "value", "") or "")
    restrictions = [str(r) for r in getattr(placement, "restrictions", ()) or ()]
    if held_fixed and not any("fixed" in r for r in restrictions):
        restrictions.append("running slices held fixed")
    if options.mode == "full" and options.migration_budget is not None:
        restrictions.append(f"at most {options.migration_budget} running NF(s) may move")
    if not stated:  # an older solver: derive the claim
        if placement.method == "baseline":
            stated = "Heuristic"
        elif options.max_candidates is not None:
            restrictions.append(f"candidate cap k={options.max_candidates}")
        if not stated and placement.gap is not None:
            proven = placement.status in (solver.SolverStatus.OPTIMAL, solver.SolverStatus.INFEASIBLE)
            stated = "Optimal" if proven else "FeasibleWithGap"
    if restrictions and stated != "Heuristic":
        return "restricted: " + "; ".join(restrictions)
    gap = placement.gap
    if stated == "Optimal":
        return "optimal" + (f" (proven gap {gap:.2%})" if gap else "")
    if stated == "FeasibleWithGap" and gap is not None:
        return f"feasible, proven within {gap:.2%} of the optimum"
    return "heuristic: no proven bound" + (f" ({'; '.join(restrictions)})" if restrictions else "")


def judged(proposal: Proposal, margin: float) -> Decision | None:
    """The decision on a finished proposal that is not worth applying; ``None`` when it is."""
    figures = {"objective_before": proposal.objective_before, "objective_after": proposal.objective_after}
    if proposal.improvement < margin:
        return Decision(
            "no-improvement",
            f"re-optimisation: no improvement >= {margin:.0%} (objective {proposal.objective_before:.3f} -> "
            f"{proposal.objective_after:.3f}, {proposal.moved} NF(s) would move)",
            moved=proposal.moved,
            **figures,
        )
    return None


def describe_applied(proposal: Proposal) -> str:
    return (
        f"re-optimisation: objective {proposal.objective_before:.3f} -> {proposal.objective_after:.3f} "
        f"({-proposal.improvement:+.1%}), {proposal.moved} NF(s) moved"
    )


#: Builds a run's job on the reconcile path (cheap: what runs, the catalog); ``None``: nothing to do.
JobFactory = Callable[[], Callable[[], Proposal] | None]


@dataclass
class _Status:
    runs: int = 0
    applied: int = 0
    last_started_at: float | None = None
    last_finished_at: float | None = None
    last_seconds: float | None = None
    last: Decision | None = None


class Reoptimizer:
    """Runs :func:`propose` jobs in a worker thread and keeps what the status reports about them.

    The controller calls, once per pass: :meth:`take` before reconciling (a finished proposal worth
    applying, or ``None``), :meth:`settle` with what the pass did with it, and :meth:`after_pass`,
    which starts a run when one is due. Every method returns at once.
    """

    def __init__(self, settings: ReoptimizeSettings = OFF, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._clock = clock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready: Proposal | None = None
        self._events: list[str] = []
        self._wanted = False
        #: The state the last finished run judged; a periodic run on the same state would judge it again.
        self._judged_base = ""
        self._status = _Status()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def take(self) -> Proposal | None:
        """The finished proposal that improves by at least the margin, handed over once."""
        with self._lock:
            ready, self._ready = self._ready, None
            return ready

    def settle(self, decision: Decision | None) -> None:
        """Record what the reconcile pass did with the proposal :meth:`take` handed it (the pass's
        own events already say it: no event here)."""
        if decision is not None:
            self._finish(decision, announce=False)

    def after_pass(self, make_job: JobFactory, *, replanned: bool, base: Callable[[], str]) -> bool:
        """Start a run if one is due and none is running or waiting; True when one started.

        ``replanned``: the pass admitted or re-placed slices (a run is wanted after it). ``base``
        names the state the pass left (``reconcile.state_key``); called only when a run may start.
        """
        s = self.settings
        if not s.enabled or s.interval_s is None:
            return False
        now = self._clock()
        with self._lock:
            self._wanted = self._wanted or (replanned and s.after_admission)
            if self.running or self._ready is not None:
                return False
            last = self._status.last_started_at
            due = last is None or now - last >= s.interval_s
            if not (self._wanted or due):
                return False
            key = base()
            if not self._wanted and key == self._judged_base:
                return False  # periodic, but this very state was judged already
            job = make_job()
            self._wanted = False
            if job is None:
                return False
            self._status.runs += 1
            self._status.last_started_at = now
            self._thread = threading.Thread(
                target=self._run, args=(job, key), name="flyslice-reoptimize", daemon=True
            )
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running job (if any) finished: for tests and shutdown."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def drain_events(self) -> list[str]:
        with self._lock:
            out, self._events = self._events, []
            return out

    def _run(self, job: Callable[[], Proposal], base: str) -> None:
        started = time.perf_counter()
        try:
            proposal = job()
        except Exception as exc:  # a failed run is reported; what runs is untouched
            log.exception("re-optimisation failed")
            self._finish(Decision("failed", f"re-optimisation failed: {type(exc).__name__}: {exc}"))
            return
        finally:
            self._status.last_seconds = time.perf_counter() - started
        with self._lock:
            self._judged_base = base
        verdict = judged(proposal, self.settings.margin)
        if verdict is not None:
            self._finish(verdict)
            return
        with self._lock:
            self._ready = proposal

    def _finish(self, decision: Decision, announce: bool = True) -> None:
        with self._lock:
            st = self._status
            st.last = decision
            st.last_finished_at = self._clock()
            st.applied += decision.result == "applied"
            if announce:
                self._events.append(decision.message)

    def status(self) -> dict[str, Any]:
        """The ``reoptimization`` block of the controller status (embedded /status, operator /status)."""
        s, st = self.settings, self._status
        last = st.last
        return {
            "enabled": s.enabled,
            "intervalS": s.interval_s,
            "margin": s.margin,
            "migrationBudget": s.migration_budget,
            "running": self.running,
            "runs": st.runs,
            "applied": st.applied,
            "lastStartedAt": _iso(st.last_started_at),
            "lastFinishedAt": _iso(st.last_finished_at),
            "lastRunSeconds": None if st.last_seconds is None else round(st.last_seconds, 3),
            "lastResult": last.result if last else None,
            "lastMessage": last.message if last else None,
            "objectiveBefore": _round(last.objective_before) if last else None,
            "objectiveAfter": _round(last.objective_after) if last else None,
            "movedNFs": last.moved if last else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ts is not None else None
