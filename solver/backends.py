"""Running a PuLP model on CBC or HiGHS and reading back an honest status and gap.

Two PuLP 3.3 pitfalls are handled here:

* HiGHS (in-process via highspy) reports a time-limited incumbent as ``Optimal``; only
  ``LpProblem.sol_status`` says ``IntegerFeasible``. We read ``sol_status`` and HiGHS's
  own dual bound.
* CBC reports a time-out without any incumbent as ``Infeasible``. Our models always have
  a feasible point (reject everything), so a model without an incumbent is *not solved*,
  never infeasible. CBC's proven bound is only printed in its log, which we read from the
  log file PuLP's CBC interface writes into PuLP's own scratch directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import pulp

from .console import solver_output_to_stderr
from .matrix import MatrixModel
from .options import SolveOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolveOutcome:
    #: ``"optimal"`` (proven within the gap setting), ``"feasible"`` (incumbent, not proven)
    #: or ``"none"`` (no incumbent).
    kind: str
    gap: float | None
    seconds: float
    solver: str
    #: The incumbent's objective and the proven lower bound, as the model states them.
    objective: float | None = None
    bound: float | None = None
    #: The solver proved there is no solution (not a time-out).
    proven_infeasible: bool = False
    #: The solver did not stop by its deadline and its answer was not waited for (see
    #: ``_run_bounded``): the round gave nothing, and said so.
    abandoned: bool = False


def highs_available() -> bool:
    with solver_output_to_stderr():
        return bool(pulp.HiGHS().available())


_banner_swallowed = False
_banner_lock = threading.Lock()


def _swallow_highs_banner() -> None:
    """Create this process's first ``Highs`` object with descriptor 1 on /dev/null.

    HiGHS 1.16 prints a two-line copyright banner when the first ``Highs`` object of a process is
    created, before any option can switch its output off; during a solve descriptor 1 points at
    stderr (console.py), so the banner would reach stderr of every command that solves, e.g.
    ``flyslice plan`` (which must say nothing there when all is well).
    """
    global _banner_swallowed
    with _banner_lock:
        if _banner_swallowed:
            return
        import highspy

        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 1)
            highspy.Highs()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(devnull)
        _banner_swallowed = True


def solve(
    prob: pulp.LpProblem | MatrixModel,
    options: SolveOptions,
    warm_start: bool,
    wait_until: float | None = None,
) -> SolveOutcome:
    """Solve ``prob`` within ``options.time_limit_s``.

    ``wait_until`` (``time.perf_counter()``): how long the caller can wait for a HiGHS run of a
    directly built model that is late (the time it set aside for the round's overrun); without it,
    the limit and a grace (see ``_run_bounded``).
    """
    with solver_output_to_stderr():
        if isinstance(prob, MatrixModel):
            if options.solver != "highs":
                raise ValueError(
                    "a model built for HiGHS (ilp.build(direct=True)) needs SolveOptions.solver='highs'"
                )
            return _solve_direct(prob, options, warm_start, wait_until)
        return _solve(prob, options, warm_start)


def _solve(prob: pulp.LpProblem, options: SolveOptions, warm_start: bool) -> SolveOutcome:
    start = time.perf_counter()
    if options.solver == "highs":
        if not highs_available():
            raise RuntimeError(
                "SolveOptions.solver='highs' but highspy is not installed (pip install highspy)"
            )
        kind, gap, bound = _solve_highs(prob, options, warm_start)
        name = "HiGHS"
    else:
        kind, gap, bound = _solve_cbc(prob, options, warm_start)
        name = "CBC"
    objective = pulp.value(prob.objective) if kind != "none" else None
    infeasible = kind == "none" and prob.sol_status == pulp.LpSolutionInfeasible and not _stopped_early(prob)
    return SolveOutcome(
        kind,
        gap,
        time.perf_counter() - start,
        name,
        None if objective is None else float(objective),
        bound,
        infeasible,
    )


def _stopped_early(prob: pulp.LpProblem) -> bool:
    return bool(getattr(prob, "_flyslice_stopped_early", False))


def _incumbent_kind(prob: pulp.LpProblem) -> str:
    if prob.sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if prob.sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    return "none"


def _relative_gap(objective: float, bound: float) -> float:
    return max(0.0, (objective - bound) / max(abs(objective), 1e-9))


class _WarmHiGHS(pulp.HiGHS):  # type: ignore[misc]
    """PuLP's in-process HiGHS, plus a MIP start from the variables' initial values."""

    def callSolver(self, lp: pulp.LpProblem) -> None:
        if self.optionsDict.get("warm_start"):
            import numpy as np

            start = [(v.index, v.varValue) for v in lp.variables() if v.varValue is not None]
            if start:
                idx = np.array([i for i, _ in start], dtype=np.int32)
                val = np.array([x for _, x in start], dtype=np.float64)
                lp.solverModel.setSolution(len(start), idx, val)
        if self.timeLimit is not None and self.optionsDict.get("presolve") == "off":
            _interrupt_at(lp.solverModel, time.perf_counter() + float(self.timeLimit))
        lp.solverModel.run()


def _interrupt_at(model: Any, deadline: float) -> None:
    """Also stop HiGHS from its MIP interrupt callback once ``deadline`` (perf_counter) passes.

    Without presolve, HiGHS's root cut separation on our large models runs for seconds between
    its own time-limit checks (an 8 s limit ended after 8.9 s at load average 10; the callback,
    consulted more often, ended the same solve after 8.4 s). The answer is the same as on its
    time limit: the incumbent and the bound so far.
    """
    import highspy

    def stop(_kind: Any, _message: Any, _out: Any, data_in: Any, _user: Any) -> None:
        if time.perf_counter() >= deadline:
            data_in.user_interrupt = True

    model.setCallback(stop, None)
    model.startCallback(highspy.cb.HighsCallbackType.kCallbackMipInterrupt)


#: How long past its time limit a HiGHS run is waited for: this share of the limit ...
HIGHS_GRACE_SHARE = 0.02
#: ... and at least this many seconds.
HIGHS_GRACE_MIN_SECONDS = 0.05


def _run_bounded(model: Any, limit_s: float, wait_until: float | None = None) -> bool:
    """``model.run()`` in a thread of its own, waited for until ``limit_s`` plus a grace, or until
    ``wait_until`` (``time.perf_counter()``) if that is later; whether it finished.

    HiGHS checks its time limit and the interrupt callback between steps, and some steps are long:
    without presolve, one round of root cut separation on a 82 000-column model took 6 s, so a 2.9 s
    limit ended after 7.3 s on an idle machine. ``place()`` must answer by its own deadline, so a run
    that is late is not waited for: it goes on in its (daemon) thread until HiGHS next asks the
    callback, which stops it, and its model is dropped then. highspy releases the GIL while HiGHS
    runs, and HiGHS gives each calling thread a scheduler of its own, so runs in several threads
    do not share state.
    """
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            model.run()
        except BaseException as exc:  # re-raised in the caller when it waits for the run
            failure.append(exc)
        finally:
            done.set()

    started = time.perf_counter()
    threading.Thread(target=run, name="flyslice-highs", daemon=True).start()
    wait = limit_s + max(HIGHS_GRACE_MIN_SECONDS, HIGHS_GRACE_SHARE * limit_s)
    if wait_until is not None:
        wait = max(wait, wait_until - started)
    finished = done.wait(wait)
    if finished and failure:
        raise failure[0]
    return finished


#: Models with more columns than this are solved without HiGHS's presolve (see ``_solve_highs``).
HIGHS_PRESOLVE_MAX_COLUMNS = 15000


def _solve_highs(
    prob: pulp.LpProblem, options: SolveOptions, warm_start: bool
) -> tuple[str, float | None, float | None]:
    _swallow_highs_banner()
    solver = _WarmHiGHS(
        msg=False, timeLimit=options.time_limit_s, gapRel=options.gap_rel, threads=options.threads
    )
    # Not a HiGHS option: read by callSolver above, so keep it out of setOptionValue.
    solver.optionsDict = {}
    if len(prob.variables()) > HIGHS_PRESOLVE_MAX_COLUMNS:
        # HiGHS's MIP presolve takes seconds on our large models (5 s of a 200-host, 30 000-column
        # model on an idle core, before the root LP) and removes little; without it the first
        # dual bound (the gap the placement reports) comes several times sooner.
        solver.optionsDict["presolve"] = "off"
        if warm_start:
            # With a start there is an incumbent already: HiGHS's feasibility jump, which runs
            # before the root LP, only delays the bound.
            solver.optionsDict["mip_heuristic_run_feasibility_jump"] = False
    solver.optionsDict["warm_start"] = warm_start
    _run_highs(solver, prob)
    prob._flyslice_stopped_early = prob.solverModel.getModelStatus() != highspy_status("kInfeasible")
    kind = _incumbent_kind(prob)
    if kind == "none":
        return kind, None, None
    info: Any = prob.solverModel.getInfo()
    objective = float(info.objective_function_value)
    bound: float | None = float(info.mip_dual_bound)
    if bound is not None and abs(bound) >= 1e300:
        bound = objective if kind == "optimal" else None
    gap = _relative_gap(objective, bound) if bound is not None else None
    if kind == "optimal" and gap is not None and gap > options.gap_rel + 1e-9:
        kind = "feasible"
    return kind, gap, bound


def _configure(model: Any, options: SolveOptions, columns: int, warm_start: bool) -> None:
    """The options ``_solve_highs`` sets through PuLP, for a ``Highs`` object of our own."""
    model.setOptionValue("output_flag", False)
    model.setOptionValue("mip_rel_gap", options.gap_rel)
    if options.threads is not None:
        model.setOptionValue("threads", options.threads)
    model.setOptionValue("time_limit", float(options.time_limit_s))
    if columns > HIGHS_PRESOLVE_MAX_COLUMNS:
        model.setOptionValue("presolve", "off")
        if warm_start:
            model.setOptionValue("mip_heuristic_run_feasibility_jump", False)


def _solve_direct(
    model: MatrixModel, options: SolveOptions, warm_start: bool, wait_until: float | None = None
) -> SolveOutcome:
    """Solve a :class:`MatrixModel` with HiGHS: the whole model in one ``passModel`` call, the MIP
    start from the columns' values, and the same status, gap and deadline handling as ``_solve_highs``."""
    import highspy

    start = time.perf_counter()
    _swallow_highs_banner()
    h = highspy.Highs()  # type: ignore[no-untyped-call]
    columns = len(model.columns)
    _configure(h, options, columns, warm_start)
    h.passModel(model.highs_lp())
    if warm_start:
        idx, val = model.start_values()
        if len(idx):
            h.setSolution(len(idx), idx, val)
    # The deadline callback on every model (PuLP's path sets it without presolve only): HiGHS ran a
    # 3 s limit on the 3 370-column restricted first pass for 7.8 s at load average 11.
    _interrupt_at(h, time.perf_counter() + float(options.time_limit_s))
    passed = time.perf_counter()
    if not _run_bounded(h, float(options.time_limit_s), wait_until):
        log.warning(
            "HiGHS did not stop in the time set aside for it (a %.3fs limit, %d columns); its answer "
            "is not waited for",
            options.time_limit_s,
            columns,
        )
        return SolveOutcome("none", None, time.perf_counter() - start, "HiGHS", abandoned=True)
    log.debug(
        "HiGHS (direct): %d columns, %d rows; passed in %.3fs, ran %.3fs of a %.3fs limit",
        columns,
        model.num_rows,
        passed - start,
        time.perf_counter() - passed,
        options.time_limit_s,
    )
    status = h.getModelStatus()
    s = highspy.HighsModelStatus
    solved = h.getObjectiveValue() != float("inf")
    if status == s.kOptimal:
        kind = "optimal"
    elif status in (s.kObjectiveBound, s.kObjectiveTarget, s.kInterrupt, s.kTimeLimit, s.kIterationLimit):
        # PuLP's reading of HiGHS's statuses (see _run_highs): an incumbent unless none was found.
        kind = "feasible" if solved else "none"
    else:
        kind = "none"
    gap: float | None = None
    bound: float | None = None
    objective: float | None = None
    if kind != "none":
        model.read(h.getSolution().col_value)
        objective = model.value()
        info: Any = h.getInfo()
        reported = float(info.objective_function_value)
        bound = float(info.mip_dual_bound) if any(c.integer for c in model.columns) else reported
        if abs(bound) >= 1e300:
            bound = reported if kind == "optimal" else None
        gap = _relative_gap(reported, bound) if bound is not None else None
        if kind == "optimal" and gap is not None and gap > options.gap_rel + 1e-9:
            kind = "feasible"
    return SolveOutcome(
        kind,
        gap,
        time.perf_counter() - start,
        "HiGHS",
        objective,
        bound,
        kind == "none" and status == s.kInfeasible,
    )


def highspy_status(name: str) -> Any:
    import highspy

    return getattr(highspy.HighsModelStatus, name)


def _run_highs(solver: _WarmHiGHS, prob: pulp.LpProblem) -> None:
    # createAndConfigureSolver would pass every optionsDict entry to HiGHS; hide ours.
    warm = solver.optionsDict.pop("warm_start", False)
    solver.createAndConfigureSolver(prob)
    solver.buildSolverModel(prob)
    solver.optionsDict["warm_start"] = warm
    solver.callSolver(prob)
    status, sol_status = solver.findSolutionValues(prob)
    model = prob.solverModel
    if model.getModelStatus() == highspy_status("kInterrupt") and model.getObjectiveValue() == float("inf"):
        # PuLP 3.3 reads "no solution" only from a time or iteration limit; our deadline callback
        # stops with an interrupt, which PuLP would call an integer-feasible answer.
        status, sol_status = pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound
    prob.assignStatus(status, sol_status)


_LOG_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def _solve_cbc(
    prob: pulp.LpProblem, options: SolveOptions, warm_start: bool
) -> tuple[str, float | None, float | None]:
    with warnings.catch_warnings():
        # PuLP 3.3 flags the bundled CBC as deprecated for 4.0; it is still the bundled solver.
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(
            msg=False,
            timeLimit=options.time_limit_s,
            gapRel=options.gap_rel,
            warmStart=warm_start,
            threads=options.threads,
        )
    (log_path,) = solver.create_tmp_files(prob.name, "log")
    solver.optionsDict["logPath"] = log_path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            prob.solve(solver)
        log = _read_text(log_path)
    finally:
        solver.delete_tmp_files(log_path)
    # CBC reports a time-out without incumbent as infeasible; its log tells them apart.
    prob._flyslice_stopped_early = re.search(r"^Result - Stopped|Stopped on time", log, re.M) is not None
    kind = _incumbent_kind(prob)
    if kind == "none":
        return kind, None, None
    obj = re.search(r"^Objective value:\s+" + _LOG_NUMBER, log, re.M)
    bound = re.search(r"^Lower bound:\s+" + _LOG_NUMBER, log, re.M)
    stopped_early = re.search(r"^Result - Stopped", log, re.M) is not None
    value = pulp.value(prob.objective)
    lower: float | None = None
    if obj and bound:
        lower = float(bound.group(1))
    elif kind == "optimal" and not stopped_early and value is not None:
        lower = float(value)
    gap = (
        _relative_gap(float(obj.group(1)) if obj else float(value or 0.0), lower)
        if lower is not None
        else None
    )
    if stopped_early and (gap is None or gap > options.gap_rel + 1e-9):
        kind = "feasible"
    return kind, gap, lower


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
