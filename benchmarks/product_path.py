"""The solver measured through the product path: ``flyslice plan`` on generated manifests.

Each case writes a seeded instance as EdgeNode/NFPackage/NetworkService/Slice YAML into a temporary
directory (manifests_gen.py) and measures, in the same run:

* ``flyslice plan DIR -o json [--time-limit T]`` as a subprocess: ``plan_wall_s`` is its wall time
  (process start, imports, validation, expansion, solve, output), ``seconds`` the solve time the plan
  document reports, ``gap``/``status``/``admitted`` read from the document;
* the pipeline ``plan()`` that command calls, in-process with the same default options: the
  placement's ``guarantee`` and ``place_wall_s`` (wall time of the call, for the time-limit overrun);
* the baseline heuristic through the same pipeline (``plan(method="baseline")``): ``baseline_admitted``;
* for cases marked ``compare_build``, the same pipeline with the model built through PuLP
  (``SolveOptions(model_build="pulp")``, the path before the direct HiGHS build and the portable one):
  ``pulp_build_*``, in the same run, so the ratio to the default holds whatever the machine's load.

No solver option is passed except ``--time-limit`` where a case names one: what is measured is the
configuration users run.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifests_gen import generate

HERE = Path(__file__).resolve().parent
WILDFIRE = HERE.parent / "examples" / "wildfire"
DEFAULT_TIME_LIMIT_S = 30.0


@dataclass(frozen=True)
class Case:
    hosts: int
    slices: int
    nfs: int
    topology: str = "tree"
    gw_scale: float = 1.0
    #: ``--time-limit`` for ``flyslice plan``; ``None`` keeps the product default.
    time_limit_s: float | None = None
    #: Also run the pipeline with the PuLP model build (the previous default) for a same-run ratio.
    compare_build: bool = False

    @property
    def overloaded(self) -> bool:
        return self.gw_scale < 1.0

    @property
    def label(self) -> str:
        gw = f" gw x{self.gw_scale:g}" if self.gw_scale != 1 else ""
        limit = f" limit {self.time_limit_s:g}s" if self.time_limit_s is not None else ""
        return f"{self.topology}{gw}{limit}"


QUICK = [
    Case(200, 100, 5, compare_build=True),
    Case(66, 40, 5, topology="sndlib:germany50"),
    Case(50, 60, 4, gw_scale=0.3, time_limit_s=1),
    Case(50, 60, 4, gw_scale=0.3, time_limit_s=3),
]

FULL = [
    Case(200, 100, 5, compare_build=True),
    Case(200, 100, 5, topology="mesh"),
    Case(66, 40, 5, topology="sndlib:germany50"),
    Case(100, 100, 5, topology="sndlib:germany50"),
    Case(200, 100, 5, topology="zoo:TataNld"),
    Case(1000, 500, 5, compare_build=True),
    *(Case(50, 60, 4, gw_scale=0.3, time_limit_s=t) for t in (1, 3, 10)),
    *(Case(100, 150, 4, gw_scale=0.3, time_limit_s=t) for t in (1, 5, 30)),
    *(Case(200, 300, 5, gw_scale=0.4, time_limit_s=t) for t in (1, 5, 30)),
]


def _flyslice() -> str:
    """The installed ``flyslice`` command of this Python (its console script), as users run it."""
    beside = Path(sys.executable).parent / "flyslice"
    found = str(beside) if beside.exists() else shutil.which("flyslice")
    if found is None:
        raise RuntimeError("the flyslice command is not installed for this Python (pip install -e .)")
    return found


def flyslice_plan(paths: list[str], time_limit_s: float | None = None) -> tuple[dict[str, Any], float]:
    """Run ``flyslice plan PATHS -o json`` in a fresh process; its document and wall seconds."""
    cmd = [_flyslice(), "plan", *paths, "-o", "json"]
    if time_limit_s is not None:
        cmd += ["--time-limit", f"{time_limit_s:g}"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc, wall


def pipeline_plan(
    paths: list[str], method: str = "ilp", time_limit_s: float | None = None, model_build: str | None = None
) -> tuple[Any, float]:
    """The pipeline ``plan()`` that ``flyslice plan`` calls, in-process; the plan and wall seconds.

    ``model_build``: ``SolveOptions.model_build`` when given (else the product default)."""
    from flyslice import solver
    from flyslice.operator.intake.validation import validate_paths
    from flyslice.operator.planning.pipeline import plan

    catalog = validate_paths(paths).catalog
    # Exactly what cmd_plan builds: SolveOptions() with only the time limit when one is given.
    extra: dict[str, Any] = {} if model_build is None else {"model_build": model_build}
    opts = (
        solver.SolveOptions(**extra)
        if time_limit_s is None
        else solver.SolveOptions(time_limit_s=time_limit_s, **extra)
    )
    start = time.perf_counter()
    result = plan(catalog, method=method, options=opts)
    return result, time.perf_counter() - start


def _admitted_in(doc: dict[str, Any]) -> int:
    return sum(1 for s in doc["slices"] if s["admitted"])


def _guarantee(placement: Any) -> str | None:
    # Placement.guarantee arrives with issue 13's honest-status work; read it when present.
    g = getattr(placement, "guarantee", None)
    return None if g is None else str(g)


def run_case(case: Case) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flyslice-bench-") as tmp:
        try:
            generate(Path(tmp), case.hosts, case.slices, case.nfs, case.topology, case.gw_scale)
        except ImportError:
            return {"hosts": case.hosts, "topology": case.label, "skipped": "pip install topohub"}
        paths = [tmp]
        doc, plan_wall = flyslice_plan(paths, case.time_limit_s)
        inproc, place_wall = pipeline_plan(paths, time_limit_s=case.time_limit_s)
        base, base_wall = pipeline_plan(paths, method="baseline")
        old = (
            pipeline_plan(paths, time_limit_s=case.time_limit_s, model_build="pulp")
            if case.compare_build
            else None
        )
    p = inproc.placement
    limit = case.time_limit_s or DEFAULT_TIME_LIMIT_S
    compared: dict[str, Any] = {}
    if old is not None:
        q = old[0].placement
        compared = {
            "pulp_build_seconds": round(q.seconds, 3),
            "pulp_build_gap": q.gap,
            "pulp_build_guarantee": _guarantee(q),
            "pulp_build_admitted": sum(1 for sp in q.slices.values() if sp.admitted),
            "pulp_build_objective": q.objective,
        }
    return {
        "hosts": len(inproc.catalog.nodes),
        "slices": case.slices,
        "nfs_per_slice": case.nfs,
        "topology": case.label,
        "time_limit_s": limit,
        "solver": doc["solver"]["name"],
        "status": doc["solver"]["status"],
        "seconds": doc["solver"]["seconds"],
        "plan_wall_s": round(plan_wall, 3),
        "gap": doc["solver"]["gap"],
        # From the plan document when it carries one (same run as gap and status), else in-process.
        "guarantee": doc["solver"].get("guarantee") or _guarantee(p),
        "inprocess_guarantee": _guarantee(p),
        "admitted": _admitted_in(doc),
        "baseline_admitted": sum(1 for sp in base.placement.slices.values() if sp.admitted),
        "objective": doc["solver"]["objective"],
        "baseline_objective": base.placement.objective,
        "baseline_seconds": round(base_wall, 3),
        # The in-process call of the same pipeline (same options): its own figures, for the overrun.
        "inprocess_seconds": round(p.seconds, 3),
        "inprocess_admitted": sum(1 for sp in p.slices.values() if sp.admitted),
        "place_wall_s": round(place_wall, 3),
        "overrun_pct": round(100 * (place_wall / limit - 1), 1),
        "overloaded": case.overloaded,
        "load_average_1m": round(os.getloadavg()[0], 2),
        **compared,
    }


def wildfire(repeats: int) -> dict[str, Any]:
    """examples/wildfire through `flyslice plan` (once) and the pipeline (median solve time)."""
    doc, wall = flyslice_plan([str(WILDFIRE)])
    pipeline_plan([str(WILDFIRE)])  # the first call pays imports and caches
    solve_ms = []
    for _ in range(repeats):
        result, _ = pipeline_plan([str(WILDFIRE)])
        solve_ms.append(result.placement.seconds * 1000)
    base, _ = pipeline_plan([str(WILDFIRE)], method="baseline")
    return {
        "product_wildfire_solve_ms": round(statistics.median(solve_ms), 2),
        "product_wildfire_plan_wall_s": round(wall, 3),
        "product_wildfire_status": doc["solver"]["status"],
        "product_wildfire_solver": doc["solver"]["name"],
        "product_wildfire_guarantee": _guarantee(result.placement),
        "product_wildfire_baseline_admitted": sum(1 for sp in base.placement.slices.values() if sp.admitted),
        "product_wildfire_admitted": _admitted_in(doc),
    }


def run(quick: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    out: dict[str, Any] = wildfire(5 if quick else 20)
    cases = [run_case(c) for c in (QUICK if quick else FULL)]
    measured = [c for c in cases if "skipped" not in c]
    out["product_path"] = cases
    out["time_limit_overrun_pct"] = max((c["overrun_pct"] for c in measured), default=None)
    out["product_overloaded_admitted_below_baseline"] = [
        c["topology"] for c in measured if c["overloaded"] and c["admitted"] < c["baseline_admitted"]
    ]
    out["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    return out
