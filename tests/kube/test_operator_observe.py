"""The operator's /metrics and console, and the health checks on the conditions it writes, against a real
kube-apiserver: the wildfire slice (placed, no agents yet: Deploying) and one that cannot fit (Infeasible)."""

from __future__ import annotations

import copy
import json
import urllib.request
from pathlib import Path
from typing import Any

import kubeenv
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observe.health import argo_health, flux_health

from .operator_harness import OperatorProcess, apply_docs, operator_kubeconfig, wait_for, wildfire_docs

pytestmark = [pytest.mark.kube, pytest.mark.timeout(150)]


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def total(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == w for k, w in labels.items()))


def test_operator_metrics_console_and_health_checks(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    docs = wildfire_docs(namespace)
    hopeless = copy.deepcopy(next(d for d in docs if d["kind"] == "Slice"))
    hopeless["metadata"]["name"] = "hopeless"
    hopeless["spec"]["qos"]["maxLatencyMs"] = 0.01
    apply_docs(kube_env, namespace, [*docs, hopeless])
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="op-m", lease_name=f"lease-{namespace}"
    )
    try:

        def status_of(name: str, phase: str) -> dict[str, Any] | None:
            obj: dict[str, Any] = kube_env.kubectl_json("-n", namespace, "get", "slice", name)
            return obj if obj.get("status", {}).get("phase") == phase else None

        wildfire = wait_for(lambda: status_of("wildfire", "Deploying"), 60, "wildfire Deploying")
        infeasible = wait_for(lambda: status_of("hopeless", "Infeasible"), 30, "hopeless Infeasible")
        assert argo_health("Slice", wildfire)[0] == "Progressing"
        assert flux_health("Slice", wildfire) == "InProgress"
        status, message = argo_health("Slice", infeasible)
        assert status == "Degraded" and "0.01 ms budget" in message
        assert flux_health("Slice", infeasible) == "Failed"
        conds = {c["type"]: c["status"] for c in infeasible["status"]["conditions"]}
        assert (conds["Ready"], conds["Reconciling"], conds["Stalled"]) == ("False", "False", "True")
        assert infeasible["status"]["observedGeneration"] == infeasible["metadata"]["generation"]

        m = wait_for(
            lambda: (
                (m := scrape(op.port)) and total(m, "flyslice_slice_admission", result="rejected") == 1 and m
            ),
            30,
            "the rejected slice in /metrics",
        )
        ctl = "flyslice-operator"
        assert total(m, "controller_runtime_reconcile_total", controller=ctl, result="success") >= 1
        assert total(m, "controller_runtime_reconcile_time_seconds_count", controller=ctl) >= 1
        assert total(m, "flyslice_slice_admission", result="admitted") == 1
        assert total(m, "flyslice_solver_duration_seconds_count") >= 1
        assert total(m, "flyslice_nf_instances", slice="wildfire") == 9
        assert total(m, "flyslice_path_latency_budget_seconds", slice="wildfire") > 0

        with urllib.request.urlopen(f"http://127.0.0.1:{op.port}/console/state", timeout=5) as resp:
            console = json.loads(resp.read())
        phases = {s["name"]: s["phase"] for s in console["status"]["slices"]}
        assert phases == {"wildfire": "Deploying", "hopeless": "Infeasible"}
        # The topology the page draws nodes and instances on: the EdgeNodes by tier, with what runs there.
        # EdgeNodes are cluster-scoped: other tests' nodes are drawn too; this test's carry its namespace.
        mine = f"{namespace}-"
        nodes = {
            n["name"][len(mine) :]: n for n in console["topology"]["nodes"] if n["name"].startswith(mine)
        }
        assert set(nodes) == {"cloud", "fog-1", "gw-1", "gw-2"}, console["topology"]
        assert nodes["cloud"]["tier"] == "cloud" and nodes["cloud"]["cpu"]["usedMillis"] > 0
    finally:
        op.stop()
