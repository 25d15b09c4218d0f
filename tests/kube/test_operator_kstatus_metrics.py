"""kstatus conditions on every kind the control plane writes, read by the shipped Argo CD (Lua) and Flux
(CEL) health checks, and the operator's metrics from those statuses — all on a real kube-apiserver:
the operator, one cluster-mode agent per node (NFInstance status, EdgeNode heartbeats), and a GitSource
whose repository does not exist (fetch failures)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import kubeenv
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flyslice.nodeagent.kube.agent import api_client_for
from tests.observe.health import argo_health, flux_health
from tests.observe.test_health import assert_kstatus

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

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def total(m: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == w for k, w in labels.items()))


def test_every_kind_is_kstatus_health_checked_and_operator_metrics_read_the_cluster(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    docs = wildfire_docs(namespace)
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "EdgeNode"]
    apply_docs(kube_env, namespace, docs)
    missing = tmp_path / "no-such-repo.git"  # a fetch that fails on every interval (FetchFailed)
    source = {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": "lab"},
        "spec": {"url": f"file://{missing}", "ref": {"branch": "main"}, "interval": "1s"},
    }
    kube_env.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump(source))
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="op-k", lease_name=f"lease-{namespace}"
    )
    try:
        instances = wait_for(
            lambda: (i := kubectl_items(kube_env, namespace, "nfinstances")) and len(i) >= 9 and i,
            60, "9 NFInstances",
        )  # fmt: skip
        # Before any agent runs, the operator's metrics say the instances exist but are not reported.
        m = wait_for(
            lambda: (m := scrape(op.port)) and total(m, "flyslice_nf_instances", slice="wildfire") == 9 and m,
            30, "9 instances in /metrics",
        )  # fmt: skip
        assert total(m, "flyslice_nf_instances", slice="wildfire", state="Running") == 0
        vnf_nodes = {i["spec"]["node"] for i in instances if i["spec"]["flavor"] == "vnf"}
        core = client.CoreV1Api(api_client_for(str(kube_env.kubeconfig)))
        with (
            cluster_agents(kube_env, namespace, nodes, tmp_path / "agents"),
            FakeKubelet(core, namespace, vnf_nodes),
        ):
            wait_for(
                lambda: kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")
                .get("status", {}).get("phase") == "Ready",
                90, "slice Ready",
            )  # fmt: skip
            running = wait_for(
                lambda: (
                    (items := kubectl_items(kube_env, namespace, "nfinstances"))
                    and all((i.get("status") or {}).get("state") == "Running" for i in items)
                    and items
                ),
                30, "every NFInstance Running",
            )  # fmt: skip
            for inst in running:  # written by the node's agent, read by both tools as Healthy/Current
                assert_kstatus(inst["status"])
                assert inst["status"]["observedGeneration"] == inst["metadata"]["generation"]
                assert argo_health("NFInstance", inst)[0] == "Healthy", inst["status"]
                assert flux_health("NFInstance", inst) == "Current", inst["status"]

            def edge_nodes() -> list[dict[str, Any]]:
                got = [kube_env.kubectl_json("get", "edgenode", n) for n in nodes]
                return got if all("observedGeneration" in (n.get("status") or {}) for n in got) else []

            for node in wait_for(edge_nodes, 20, "heartbeats with observedGeneration"):
                assert_kstatus(node["status"])
                assert node["status"]["observedGeneration"] == node["metadata"]["generation"]
                assert argo_health("EdgeNode", node) == ("Healthy", "ok")
                assert flux_health("EdgeNode", node) == "Current"

            m = wait_for(
                lambda: (
                    (m := scrape(op.port))
                    and total(m, "flyslice_nf_instances", slice="wildfire", state="Running") == 9
                    and m
                ),
                30, "9 Running instances in /metrics",
            )  # fmt: skip
            assert total(m, "flyslice_nf_instances", state="Unknown") == 0
            assert total(m, "flyslice_slices", phase="Ready") == 1

        # The GitSource whose repository is missing: Ready False (a retryable FetchFailed is not
        # Stalled), Degraded for Argo CD, Failed for Flux, and its failures counted in /metrics.
        gs = wait_for(
            lambda: (g := kube_env.kubectl_json("-n", namespace, "get", "gitsource", "lab"))
            and (g.get("status") or {}).get("fetchFailures", 0) >= 2 and g,
            30, "two failed fetches in the GitSource status",
        )  # fmt: skip
        conds = {c["type"]: c for c in gs["status"]["conditions"]}
        assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "FetchFailed")
        assert conds["Stalled"]["status"] == "False"
        status, message = argo_health("GitSource", gs)
        assert status == "Degraded" and str(missing) in message
        assert flux_health("GitSource", gs) == "Failed"
        wait_for(
            lambda: total(scrape(op.port), "flyslice_git_fetch_errors_total", source=f"{namespace}/lab") >= 2,
            30, "git fetch errors in /metrics",
        )  # fmt: skip

        # Restarts come from NFInstance status.restarts (the agents are stopped now, so nothing
        # rewrites it): what an agent that restarted a crashed NF twice would have written.
        name = running[0]["metadata"]["name"]
        kube_env.kubectl(
            "-n", namespace, "patch", "nfinstance", name, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"restarts": 2}}),
        )  # fmt: skip
        node = running[0]["spec"]["node"]
        wait_for(
            lambda: total(scrape(op.port), "flyslice_nf_restarts_total", slice="wildfire", node=node) == 2,
            30, "2 restarts in /metrics",
        )  # fmt: skip
        assert total(scrape(op.port), "flyslice_nf_restarts_total") == 2
    finally:
        op.stop()
