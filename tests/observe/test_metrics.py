"""Prometheus metrics: scraped from a real `flyslice up`, parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flyslice.operator.observe.metrics import Metrics, SourceFacts

from .conftest import UpProcess

WILDFIRE = Path(__file__).resolve().parents[2] / "examples" / "wildfire"


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matches = [v for lab, v in found.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert matches, f"no sample {name}{labels}; have {sorted(found)}"
    return sum(matches)


@pytest.mark.slow
def test_up_serves_metrics_in_controller_runtime_and_flyslice_names(start_up: Any, tmp_path: Path) -> None:
    src = tmp_path / "manifests"
    shutil.copytree(WILDFIRE, src)
    up: UpProcess = start_up(src)
    up.wait_ready()
    up.wait(lambda d: d["passes"] >= 3, what="three passes")
    text = up.get("/metrics").decode()
    m = samples(text)
    ctl = "flyslice-embedded"
    assert value(m, "controller_runtime_reconcile_total", controller=ctl, result="success") >= 3
    assert value(m, "controller_runtime_reconcile_total", controller=ctl, result="error") == 0
    assert value(m, "controller_runtime_reconcile_errors_total", controller=ctl) == 0
    assert value(m, "controller_runtime_reconcile_time_seconds_count", controller=ctl) >= 3
    assert value(m, "flyslice_slices", phase="Ready") == 1
    assert value(m, "flyslice_slices", phase="Infeasible") == 0
    assert value(m, "flyslice_slice_admission", result="admitted") == 1
    assert value(m, "flyslice_slice_admission", result="rejected") == 0
    assert value(m, "flyslice_solver_duration_seconds_count") >= 1
    assert value(m, "flyslice_solver_gap_ratio") == 0  # CBC proves the wildfire placement optimal
    budgets = [(lab, v) for lab, v in m["flyslice_path_latency_budget_seconds"] if lab["slice"] == "wildfire"]
    assert budgets and all(v == pytest.approx(0.010) for _, v in budgets)
    for lab, v in m["flyslice_path_predicted_latency_seconds"]:
        assert 0 < v <= 0.010, lab
    assert value(m, "flyslice_nf_instances", slice="wildfire", state="Running") == 9
    assert value(m, "flyslice_nf_instances", slice="wildfire", node="gw-1", flavor="fnf") == 2
    assert value(m, "flyslice_nf_instances", slice="wildfire", node="cloud", flavor="vnf") == 3
    assert "flyslice_nf_restarts_total" in text and "flyslice_git_fetch_errors_total" in text
    age = value(m, "flyslice_last_applied_revision_age_seconds")
    assert 0 <= age < 120

    # A new slice that cannot be placed shows as rejected, next to the admitted one.
    hopeless = (src / "slice.yaml").read_text().replace("maxLatencyMs: 10", "maxLatencyMs: 0.01")
    (src / "hopeless.yaml").write_text(hopeless.replace("name: wildfire", "name: hopeless"))
    up.wait(
        lambda d: any(s["name"] == "hopeless" and s["phase"] == "Infeasible" for s in d["slices"]),
        what="the new slice to be Infeasible",
    )
    m = samples(up.get("/metrics").decode())
    assert value(m, "flyslice_slice_admission", result="rejected") == 1
    assert value(m, "flyslice_slices", phase="Infeasible") == 1
    assert value(m, "flyslice_solver_duration_seconds_count") >= 2


class FakeState:
    def __init__(self) -> None:
        self.plans = 0
        self.solve_seconds = 0.0
        self.solve_gap: float | None = None


def test_failed_passes_restarts_fetch_errors_and_unknown_gap_are_counted() -> None:
    statuses: dict[str, dict[str, Any]] = {}
    state = FakeState()
    src = SourceFacts("file:///repo.git", "abc")
    now = [1000.0]
    # A GitSource in the cluster counts its own failures (status.fetchFailures, reset by a success).
    gitsource = SourceFacts("ns/lab", fetch_failures=0)
    metrics = Metrics(
        "c",
        lambda: statuses,
        solve_state=lambda: state,
        sources=lambda: [src, gitsource],
        clock=lambda: now[0],
    )

    async def ok() -> None:
        return None

    async def broken() -> None:
        raise RuntimeError("boom")

    asyncio.run(metrics.instrument(ok)())
    with pytest.raises(RuntimeError):
        asyncio.run(metrics.instrument(broken)())
    with pytest.raises(ValueError):
        metrics.instrument_sync(lambda: (_ for _ in ()).throw(ValueError("x")))()

    def inst(restarts: int) -> dict[str, Any]:
        return {
            "phase": "Ready",
            "placement": [
                {"instance": "i1", "node": "gw-1", "flavor": "fnf", "state": "Running", "restarts": restarts}
            ],
        }

    # The agent's count: +1, unchanged, +2, then the agent itself restarted (its count from 0): +1.
    for restarts in (0, 1, 1, 3, 1):
        statuses["default/s"] = inst(restarts)
        metrics.refresh()
    for failures in (2, 3, 0, 1):  # +2, +1, a success resets it, +1
        gitsource.fetch_failures = failures
        metrics.refresh()
    state.plans, state.solve_seconds, state.solve_gap = 1, 0.5, None
    src.last_error, src.last_error_at = "git: connection refused", 1.0
    metrics.refresh()
    metrics.refresh()  # the same failure seen twice is one error
    src.last_error_at = 2.0
    now[0] = 1030.0
    m = samples(metrics.exposition().decode())
    assert value(m, "controller_runtime_reconcile_total", controller="c", result="success") == 1
    assert value(m, "controller_runtime_reconcile_total", controller="c", result="error") == 2
    assert value(m, "controller_runtime_reconcile_errors_total", controller="c") == 2
    assert value(m, "flyslice_nf_restarts_total", namespace="default", slice="s", node="gw-1") == 4
    assert value(m, "flyslice_git_fetch_errors_total", source="ns/lab") == 4
    assert value(m, "flyslice_git_fetch_errors_total", source="file:///repo.git") == 2
    assert math.isnan(value(m, "flyslice_solver_gap_ratio"))
    assert value(m, "flyslice_solver_duration_seconds_sum") == 0.5
    assert value(m, "flyslice_last_applied_revision_age_seconds", revision="abc") == 30.0
