"""The wildfire slice through the real API server: operator (its own process, with its least-privilege
service account) -> NFInstances -> one cluster-mode agent per node -> Slice Ready -> delete -> gone."""

from __future__ import annotations

from pathlib import Path

import kubeenv
import pytest

from flyslice.nodeagent.kube.agent import api_client_for
from flyslice.operator.intake.manifests import Manifest
from flyslice.operator.intake.validation import validate
from flyslice.operator.planning.pipeline import plan

from .fake_kubelet import FakeKubelet
from .operator_harness import (
    OperatorProcess,
    apply_docs,
    cluster_agents,
    kubectl_items,
    operator_kubeconfig,
    wait_for,
    wildfire_docs,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(150)]


def expected_plan(docs: list[dict]) -> dict[str, tuple[str, str]]:
    """instance name -> (node, flavour) as the solver places the same objects offline."""
    result = validate(Manifest("test", 0, d) for d in docs)
    assert result.ok, result.errors
    the_plan = plan(result.catalog)
    (sp,) = the_plan.slices
    from flyslice.operator.planning.actions import instance_name

    return {
        instance_name(sp.slice.name, nf): (a.host, str(a.flavor))
        for nf, a in sp.placement.assignments.items()
    }


def test_wildfire_placed_run_ready_and_torn_down(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    docs = wildfire_docs(namespace)
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "EdgeNode"]
    want = expected_plan(
        [
            d if d["kind"] == "EdgeNode" else dict(d, metadata={**d["metadata"], "namespace": namespace})
            for d in wildfire_docs(namespace)
        ]
    )
    apply_docs(kube_env, namespace, docs)
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="op-a", lease_name=f"lease-{namespace}"
    )
    try:
        instances = wait_for(
            lambda: (i := kubectl_items(kube_env, namespace, "nfinstances")) and len(i) >= 9 and i,
            60, "9 NFInstances",
        )  # fmt: skip
        assert len(instances) == 9
        slice_obj = kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")
        got = {i["metadata"]["name"]: (i["spec"]["node"], i["spec"]["flavor"]) for i in instances}
        assert got == want
        # The seed paper's deployment: gateways fNF only, the cloud runs VNFs.
        assert {f for n, f in got.values() if n.endswith("gw-1") or n.endswith("gw-2")} == {"fnf"}
        for inst in instances:
            (owner,) = inst["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
                "Slice", "wildfire", slice_obj["metadata"]["uid"], True,
            )  # fmt: skip
            assert inst["metadata"]["labels"]["flyslice.io/node"] == inst["spec"]["node"]
        assert "flyslice.io/teardown" in slice_obj["metadata"]["finalizers"]
        placed = wait_for(
            lambda: kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire").get("status"),
            20,
            "slice status",
        )
        assert placed["phase"] == "Deploying"
        conditions = {c["type"]: c for c in placed["conditions"]}
        assert conditions["Placed"]["status"] == "True" and conditions["Ready"]["status"] == "False"
        assert placed["observedGeneration"] == slice_obj["metadata"]["generation"]
        events = kubectl_items(kube_env, namespace, "events", "--field-selector", "involvedObject.kind=Slice")
        assert any(e["reason"] == "Placed" and "placed 9 NF(s)" in e["message"] for e in events)

        core = client.CoreV1Api(api_client_for(str(kube_env.kubeconfig)))
        vnf_nodes = {n for n, f in got.values() if f == "vnf"}
        with (
            cluster_agents(kube_env, namespace, nodes, tmp_path / "agents") as agents,
            FakeKubelet(core, namespace, vnf_nodes) as kubelet,
        ):
            ready = wait_for(
                lambda: (s := kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire").get("status", {}))
                and s.get("phase") == "Ready" and s,
                60, "slice Ready",
            )  # fmt: skip
            assert {c["type"]: c["status"] for c in ready["conditions"]} == {
                "Placed": "True",
                "Ready": "True",
                "Degraded": "False",
                "Reconciling": "False",
                "Stalled": "False",
            }
            assert {p["state"] for p in ready["placement"]} == {"Running"}
            wait_for(
                lambda: any(e["reason"] == "Ready" for e in kubectl_items(
                    kube_env, namespace, "events", "--field-selector", "involvedObject.name=wildfire")),
                10, "a Ready Event",
            )  # fmt: skip
            table = kube_env.kubectl("-n", namespace, "get", "slices").stdout.splitlines()
            assert table[0].split() == ["NAME", "PHASE", "LATENCY-MS", "BUDGET-MS", "NODES", "AGE"]
            row = table[1].split()
            assert (
                row[:2] == ["wildfire", "Ready"] and float(row[2]) <= 10 and row[3] == "10" and row[4] == "4"
            )
            # Every NFInstance's status was written by the agent of its node; VNFs run as pods on it.
            for inst in kubectl_items(kube_env, namespace, "nfinstances"):
                assert inst["status"]["state"] == "Running", inst["metadata"]["name"]
            pods = kubectl_items(kube_env, namespace, "pods")
            assert sorted(p["metadata"]["labels"]["flyslice.io/instance"] for p in pods) == sorted(
                n for n, (_, f) in got.items() if f == "vnf"
            )
            for pod in pods:
                assert pod["spec"]["nodeName"] == got[pod["metadata"]["labels"]["flyslice.io/instance"]][0]
                assert pod["metadata"]["ownerReferences"][0]["kind"] == "NFInstance"
            assert len(kubelet.started) == len(pods)
            # fNFs run inside the agents, one module per instance.
            for node, agent in agents.items():
                assert sorted(agent.agent.platform.instances) == sorted(
                    n for n, (h, f) in got.items() if h == node and f == "fnf"
                )
            for node in nodes:
                status = kube_env.kubectl_json("get", "edgenode", node)["status"]
                assert status["heartbeatTime"] and status["conditions"][0]["status"] == "True"

            kube_env.kubectl("-n", namespace, "delete", "slice", "wildfire", "--wait=false")
            wait_for(
                lambda: kube_env.kubectl("-n", namespace, "get", "slice", "wildfire", check=False).returncode != 0,
                30, "the slice to be deleted after its teardown",
            )  # fmt: skip
            assert kubectl_items(kube_env, namespace, "nfinstances") == []
            wait_for(lambda: not kubectl_items(kube_env, namespace, "pods"), 30, "VNF pods to be deleted")
            wait_for(
                lambda: all(not a.agent.platform.instances for a in agents.values()),
                30,
                "fNFs to be unloaded",
            )
    finally:
        op.stop()
        print(op.tail())
