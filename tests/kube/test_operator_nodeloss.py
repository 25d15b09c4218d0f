"""Node loss in cluster mode: an agent stops heartbeating, the operator moves its NFs to another
node (in place: same NFInstances, new spec.node), the other node's agent runs them, the slice is
Ready again, and Events say why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubeenv
import pytest

from .operator_harness import (
    OperatorProcess,
    apply_docs,
    cluster_agents,
    kubectl_items,
    operator_kubeconfig,
    operators,
    wait_for,
    wildfire_docs,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]


def _with_second_fog(prefix: str) -> list[dict[str, Any]]:
    docs = wildfire_docs(prefix)
    fog2 = f"{prefix}-fog-2"
    cloud = next(d for d in docs if d["metadata"]["name"] == f"{prefix}-cloud")
    cloud["spec"]["links"].append({"node": fog2, "latencyMs": 4, "bandwidthMbps": 1000})
    fog1 = next(d for d in docs if d["metadata"]["name"] == f"{prefix}-fog-1")
    second = {**fog1, "metadata": {"name": fog2}, "spec": dict(fog1["spec"])}
    return [*docs, second]


def _phase(env: kubeenv.KubeEnv, ns: str) -> str:
    return str(env.kubectl_json("-n", ns, "get", "slice", "wildfire").get("status", {}).get("phase", ""))


def test_lost_node_nfs_move_and_the_slice_recovers(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    docs = _with_second_fog(namespace)
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "EdgeNode"]
    apply_docs(kube_env, namespace, docs)
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="op", lease_name=f"lease-{namespace}",
        extra=("--heartbeat-timeout", "4"),
    )  # fmt: skip
    with operators(op), cluster_agents(kube_env, namespace, nodes, tmp_path / "agents") as agents:
        # Only fNF placements here would need no kubelet; the cloud VNFs' pods just stay Pending,
        # so wait for the fog NFs to run rather than for the whole slice.
        def fog_instances() -> dict[str, dict[str, Any]]:
            return {
                i["metadata"]["name"]: i
                for i in kubectl_items(kube_env, namespace, "nfinstances")
                if "fog" in i["spec"]["role"]
            }

        before = wait_for(
            lambda: (f := fog_instances()) and len(f) == 2
            and all((i.get("status") or {}).get("state") == "Running" for i in f.values()) and f,
            40, "the fog NFs running",
        )  # fmt: skip
        (lost,) = {i["spec"]["node"] for i in before.values()}
        survivor = next(n for n in nodes if n.endswith("fog-1") or n.endswith("fog-2") if n != lost)
        agents[lost].stop()  # the node goes dark: no more heartbeats

        after = wait_for(
            lambda: (f := fog_instances()) and all(i["spec"]["node"] == survivor for i in f.values())
            and all((i.get("status") or {}).get("state") == "Running" for i in f.values())
            and all(i["status"].get("observedGeneration") == i["metadata"]["generation"] for i in f.values()) and f,
            40, f"the fog NFs re-placed on {survivor} and running there",
        )  # fmt: skip
        for name, inst in after.items():
            assert inst["metadata"]["uid"] == before[name]["metadata"]["uid"]  # moved in place, not replaced
            assert inst["metadata"]["labels"]["flyslice.io/node"] == survivor
        assert sorted(agents[survivor].agent.platform.instances) == sorted(after)
        node_events = kubectl_items(
            kube_env, "default", "events", "--field-selector", f"involvedObject.name={lost}"
        )
        assert any(e["reason"] == "HeartbeatLost" and e["type"] == "Warning" for e in node_events)
        slice_events = kubectl_items(
            kube_env, namespace, "events", "--field-selector", "involvedObject.name=wildfire"
        )
        assert any(e["reason"] == "Replaced" and "2 NF(s) moved" in e["message"] for e in slice_events)
        status = kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")["status"]
        assert {p["node"] for p in status["placement"] if "fog" in p["role"]} == {survivor}
