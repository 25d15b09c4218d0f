"""Observed latency in cluster mode, as `flyslice up` has it: real traffic through the wildfire slice on
bare cluster agents (``--no-pods``: the cloud's VNFs run as runner processes beside its agent) ->
the sink's agent writes ``NFInstance.status.e2eLatencyMs`` -> the operator (its own process) fills the
Slice's ``status.observedLatencyMs`` with the worst of them -> ``kubectl get slices -o wide``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import kubeenv
import pytest

from flyslice.nodeagent.message import new_message
from flyslice.nodeagent.spec import InstanceStatus
from flyslice.operator.kube.cluster import observe

from .operator_harness import (
    OperatorProcess,
    apply_docs,
    cluster_agents,
    kubectl_items,
    operator_kubeconfig,
    wait_for,
    wildfire_docs,
)


def _instance(name: str, generation: int, status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "generation": generation},
        "spec": {"node": "cloud"},
        "status": {"state": "Running", "observedGeneration": 2, **status},
    }


def test_observation_reads_e2e_latency_of_the_current_spec_only() -> None:
    obs = observe(
        [],
        [
            _instance("sink", 2, {"e2eLatencyMs": 3.25}),
            _instance("stale", 3, {"e2eLatencyMs": 99.0}),  # written for generation 2 of a generation-3 spec
            _instance("quiet", 2, {}),
        ],
    )
    assert obs.instances[("ns", "sink")].e2e_latency_ms == 3.25
    assert obs.instances[("ns", "stale")].e2e_latency_ms is None
    assert obs.instances[("ns", "quiet")].e2e_latency_ms is None


def _slice(env: kubeenv.KubeEnv, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = env.kubectl_json("-n", namespace, "get", "slice", "wildfire").get("status") or {}
    return status


@pytest.mark.kube
@pytest.mark.timeout(180)
def test_wildfire_traffic_sets_slice_observed_latency(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    docs = wildfire_docs(namespace)
    for d in docs:
        if d["kind"] == "Slice":
            # The cloud database writes under the test's directory (a runner process, not a pod).
            d["spec"]["config"] = {
                "db": {"path": str(tmp_path / "db.sqlite"), "field": "temperature", "commitMs": 50}
            }
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "EdgeNode"]
    apply_docs(kube_env, namespace, docs)
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="op-a", lease_name=f"lease-{namespace}"
    )
    try:
        # Plaintext data plane: with --no-pods and a CSR-issued certificate the agent holds no CA to
        # issue its runner processes' certificates, and refuses to start them.
        with cluster_agents(kube_env, namespace, nodes, tmp_path / "agents", pods=False, tls=False) as agents:
            ready = wait_for(
                lambda: (s := _slice(kube_env, namespace)).get("phase") == "Ready" and s, 60, "slice Ready"
            )
            # Nothing has flowed yet: no instance reports an end-to-end latency, the Slice none either
            # (so what follows comes from the traffic, not from the placement or a default).
            assert "observedLatencyMs" not in ready
            instances = kubectl_items(kube_env, namespace, "nfinstances")
            assert all("e2eLatencyMs" not in i["status"] for i in instances)
            slice_name = instances[0]["spec"]["slice"]
            sink = f"{instances[0]['spec']['slice']}-db"
            by_name = {i["metadata"]["name"]: i for i in instances}
            assert by_name[sink]["spec"]["flavor"] == "vnf"  # the sink is a VNF (a runner process here)
            cloud = by_name[sink]["spec"]["node"]

            gateways = [n for n in nodes if n.endswith(("gw-1", "gw-2"))]
            sent_at = time.monotonic()
            for i in range(20):
                for gw in gateways:
                    msg = new_message(slice_name, "readings/temperature", {"temperature": 20.0 + i})
                    assert agents[gw].agent.plane.deliver(msg)

            # The sink's agent writes what it measured on its NFInstance...
            e2e = wait_for(
                lambda: kube_env.kubectl_json("-n", namespace, "get", "nfinstance", sink)["status"].get(
                    "e2eLatencyMs"
                ),
                40, "e2eLatencyMs on the sink's NFInstance",
            )  # fmt: skip
            elapsed_ms = (time.monotonic() - sent_at) * 1000
            # ...a real measurement: positive and no longer than the test has been waiting for it.
            assert 0 < e2e < elapsed_ms
            # Only where paths end: no other instance measured an end-to-end latency.
            others = [
                i["metadata"]["name"]
                for i in kubectl_items(kube_env, namespace, "nfinstances")
                if "e2eLatencyMs" in i["status"] and i["metadata"]["name"] != sink
            ]
            assert others == []

            # ...and the operator reports the worst over the slice's instances, as embedded mode does.
            status = wait_for(
                lambda: (s := _slice(kube_env, namespace)).get("observedLatencyMs") == round(e2e, 3) and s,
                20, "the Slice's observedLatencyMs from the NFInstance",
            )  # fmt: skip
            observed = status["observedLatencyMs"]
            print(
                f"sink e2e {e2e:.3f} ms, Slice observedLatencyMs {observed}, first write after {elapsed_ms:.0f} ms"
            )
            budget = status["paths"][0]["budgetMs"]
            if observed <= budget:
                assert status["phase"] == "Ready"
            else:  # over budget on this loaded machine: flagged, not hidden
                assert status["phase"] == "Degraded"
                assert (
                    f"observed latency {observed:.2f} ms exceeds the {budget:g} ms budget"
                    in status["reasons"]
                )

            table = kube_env.kubectl("-n", namespace, "get", "slices", "-o", "wide").stdout.splitlines()
            header = table[0].split()
            assert "OBSERVED-MS" in header, header
            row = table[1].split()
            assert row[0] == "wildfire" and float(row[header.index("OBSERVED-MS")]) == observed

            # A restarted sink (no arrival since) reports none: the agent's patch removes the old figure.
            spec = agents[cloud].agent.desired[sink]
            agents[cloud].source.report(spec, InstanceStatus(name=sink, state="Running"))
            after = kube_env.kubectl_json("-n", namespace, "get", "nfinstance", sink)["status"]
            assert "e2eLatencyMs" not in after and after["state"] == "Running"
    finally:
        op.stop()
        print(op.tail())
