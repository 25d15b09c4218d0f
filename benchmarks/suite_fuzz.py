"""Benchmark suite ``fuzz``: a long campaign of mutated manifests against ``flyslice validate`` and ``plan``.

    python benchmarks/run.py fuzz [--quick] [--json FILE]

The mutations and the contract are those of tests/fuzz/test_manifest_fuzz.py (both import
tests/fuzz/mutations.py); here a seeded ``random.Random`` draws 20,000 sets (``--quick``: 2,000) instead
of the test's 350. Reported: sets/s, crashes (an exception out of ``main``, exit 3, or a hang) with a
deduplicated list of where they were raised, other contract violations, sets whose ``validate`` took
over 1 s and the slowest set. Every distinct failure's first set is written to a reproducer directory
with the commands and what they printed. The command exits 1 when any set broke the contract; sets
over 1 s are counted but do not fail it, as one can be the load of a shared machine.

Baseline, measured in the same run: the unmutated examples through the same checks, so
``time_per_set_vs_unmutated`` says how much slower (or, as most mutants are refused early, faster) a
mutated set is than a valid one.

Sets run in one worker process, forked once flyslice is imported and warm. A hang inside C (a decimal
with a million-digit exponent) ignores signals, so the worker is killed after ``KILL_AFTER_S`` and
forked again; faulthandler has dumped where it was by then.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import multiprocessing.connection
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fuzz.mutations import (
    CRASHES,
    Finding,
    Mutant,
    Mutation,
    Options,
    Report,
    check_in_temp,
    choose_options,
    example_sets,
    innermost,
    mutate,
)

SEED = 9
#: Tighter than the test's: a set that runs this long is a hang either way, and 20,000 sets must finish.
HANG_LIMITS = {"validate": 5.0, "plan": 8.0}
#: The worker is killed when a set takes this long: validate and plan have both had their limit.
KILL_AFTER_S = 15.0
BASELINE_REPEATS = 10


def _worker(conn: multiprocessing.connection.Connection, dump_path: str) -> None:
    with open(dump_path, "w") as dump:
        while (job := conn.recv()) is not None:
            mutant, options = job
            dump.seek(0)
            dump.truncate()
            # Written by a C thread, so it works while the interpreter is stuck inside one C call.
            faulthandler.dump_traceback_later(KILL_AFTER_S - 1, file=dump)
            try:
                conn.send(check_in_temp(mutant, options, HANG_LIMITS))
            finally:
                faulthandler.cancel_dump_traceback_later()


@dataclass
class Outcome:
    seconds: float
    report: Report | None
    #: why there is no report: the worker was killed or died
    lost: Finding | None = None


class Worker:
    def __init__(self, dump: Path) -> None:
        self._dump = dump
        self._start()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_worker, args=(child, str(self._dump)), daemon=True)
        self._proc.start()
        child.close()

    def check(self, mutant: Mutant, options: Options) -> Outcome:
        start = time.perf_counter()
        self._conn.send((mutant, options))
        lost: Finding | None = None
        try:
            if self._conn.poll(KILL_AFTER_S):
                report: Report = self._conn.recv()
                return Outcome(time.perf_counter() - start, report)
            lost = Finding(
                "hang", "validate or plan", f"killed after {KILL_AFTER_S:g} s", _dumped(self._dump)
            )
        except EOFError:
            lost = Finding("exception", "validate or plan", f"the worker died (exit {self._proc.exitcode})")
        self._proc.kill()
        self._proc.join()
        self._start()
        return Outcome(time.perf_counter() - start, None, lost)

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(10)


def _dumped(path: Path) -> str:
    """Where faulthandler found the worker: the innermost frame, and flyslice's innermost."""
    # One block per thread, most recent call first; the checks run in the thread that runs _worker.
    blocks = re.split(r"^(?:Current thread|Thread) ", path.read_text() if path.exists() else "", flags=re.M)
    main = next((b for b in blocks if " in _worker" in b), "")
    frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', main)
    if not frames:
        return "(no traceback dumped)"
    last, ours = innermost([(f, int(line), name) for f, line, name in reversed(frames)])
    return last if ours == last else f"{last} (flyslice: {ours})"


@dataclass
class Site:
    """One distinct failure: how often, and the first set that showed it."""

    finding: Finding
    count: int
    reproducer: Path


def _keep(
    root: Path, n: int, finding: Finding, mutant: Mutant, options: Options, report: Report | None
) -> Path:
    directory = root / f"{n:03d}-{finding.kind.replace(' ', '-')}-{finding.command.split()[0]}"
    mutant.write(directory / "set")
    text = report.explain() if report else f"input: {mutant.describe()}\noptions: {options}"
    (directory / "REPRODUCE.txt").write_text(
        f"{text}\n\n{finding.kind} in {finding.command}: {finding.detail} {finding.where}\n", errors="replace"
    )
    return directory


def baseline(worker: Worker) -> float:
    """Mean seconds per unmutated example set, both plan methods, through the same checks."""
    times = []
    for _ in range(BASELINE_REPEATS):
        for example in example_sets():
            for method in ("ilp", "baseline"):
                outcome = worker.check(Mutation(example).build(), Options(plan_method=method))
                if outcome.report is None or outcome.report.findings:
                    raise AssertionError(f"the unmutated {example.name} example fails the contract")
                times.append(outcome.seconds)
    return statistics.fmean(times)


def run(quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 20_000
    # Imports and schema compilation happen here, once, so that every forked worker starts warm.
    for example in example_sets():
        check_in_temp(Mutation(example).build(), Options())
    root = Path(tempfile.mkdtemp(prefix="flyslice-fuzz-"))
    worker = Worker(root / "faulthandler.txt")
    base_s = baseline(worker)

    rng = random.Random(SEED)
    sites: dict[tuple[str, str, str], Site] = {}
    failing_sets = crash_sets = over_1s = accepted = planned = 0
    kinds: Counter[str] = Counter()
    max_validate = max_set = 0.0
    slowest = ""
    set_times = []
    start = time.perf_counter()
    for i in range(n):
        mutant = mutate(rng)
        options = choose_options(rng)
        outcome = worker.check(mutant, options)
        set_times.append(outcome.seconds)
        report = outcome.report
        findings = [outcome.lost] if outcome.lost else report.findings if report else []
        if report:
            accepted += report.runs[0].code == 0
            planned += len(report.runs) > 1
            max_validate = max(max_validate, report.validate_seconds)
            over_1s += any(f.kind == "slow" for f in findings)
        if outcome.seconds > max_set:
            max_set, slowest = outcome.seconds, mutant.describe()
        failures = [f for f in findings if f.kind != "slow"]
        failing_sets += bool(failures)
        crash_sets += any(f.kind in CRASHES for f in failures)
        for f in failures:
            kinds[f.kind] += 1
            site = sites.get(f.key())
            if site:
                site.count += 1
            else:
                sites[f.key()] = Site(f, 1, _keep(root, len(sites) + 1, f, mutant, options, report))
        if (i + 1) % 500 == 0:
            print(f"  {i + 1}/{n} sets, {len(sites)} distinct failures", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    worker.close()

    rows = sorted(sites.values(), key=lambda s: (s.finding.kind not in CRASHES, -s.count))
    return {
        "sets": n,
        "seed": SEED,
        "seconds": round(seconds, 1),
        "sets_per_s": round(n / seconds, 2),
        "baseline_s_per_set": round(base_s, 4),
        "s_per_set": round(statistics.fmean(set_times), 4),
        "time_per_set_vs_unmutated": round(statistics.fmean(set_times) / base_s, 2),
        "accepted_by_validate": accepted,
        "planned": planned,
        "crashes": crash_sets,
        "failures": failing_sets,
        "distinct_failures": len(sites),
        "sets_over_1s": over_1s,
        "max_validate_s": round(max_validate, 3),
        "max_set_s": round(max_set, 3),
        "slowest_set": slowest,
        "reproducers": str(root),
        "failures_by_kind": dict(kinds),
        "failure_sites": [
            {
                "count": s.count,
                "kind": s.finding.kind,
                "command": s.finding.command,
                "where": s.finding.where or "-",
                "error": s.finding.detail,
                "reproducer": s.reproducer.name,
            }
            for s in rows
        ],
    }
