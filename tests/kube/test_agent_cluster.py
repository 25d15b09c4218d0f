"""The node agent in cluster mode against the real API server: only its own node's NFInstances,
VNF pods pinned to its node (re-adopted after a restart, never doubled), status and heartbeat,
and the bare-gateway form: a separate process with nothing but a kubeconfig."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubeenv
import pytest
import yaml

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for

from .fake_kubelet import FakeKubelet
from .operator_harness import WILDFIRE, agent_kubeconfig, kubectl_items, wait_for

pytestmark = [pytest.mark.kube, pytest.mark.timeout(90)]


def _flavors() -> dict[str, dict[str, Any]]:
    pkg = next(
        d
        for d in yaml.safe_load_all((WILDFIRE / "packages.yaml").read_text())
        if d and d["metadata"]["name"] == "broker"
    )
    return dict(pkg["spec"]["flavors"])


def _instance(name: str, node: str, flavor: str) -> dict[str, Any]:
    f = _flavors()[flavor]
    spec: dict[str, Any] = {
        "slice": "s1", "role": name, "package": "broker", "flavor": flavor, "node": node,
        "module": f["module"], "digest": f["digest"], "resources": f["resources"], "config": {}, "nextHops": [],
    }  # fmt: skip
    if flavor == "vnf":
        spec["image"] = f["image"]
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "NFInstance",
        "metadata": {"name": name, "labels": {"flyslice.io/node": node, "flyslice.io/slice": "s1"}},
        "spec": spec,
    }


def _edgenode(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "EdgeNode",
        "metadata": {"name": name},
        "spec": {
            "tier": "fog",
            "runtimes": ["vnf", "fnf"],
            "capacity": {"cpu": "2", "memory": "2Gi"},
            "availability": 0.99,
        },
    }


def _apply(env: kubeenv.KubeEnv, ns: str, *docs: dict[str, Any]) -> None:
    env.kubectl("-n", ns, "apply", "-f", "-", input="---\n".join(yaml.safe_dump(d) for d in docs))


def _state(env: kubeenv.KubeEnv, ns: str, name: str) -> str | None:
    obj = env.kubectl_json("-n", ns, "get", "nfinstance", name)
    state: str | None = (obj.get("status") or {}).get("state")
    return state


def test_agent_runs_only_its_node_pins_pods_and_adopts_them_after_restart(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    mine, other = f"{namespace}-a", f"{namespace}-b"
    _apply(kube_env, namespace, _edgenode(mine), _edgenode(other))
    _apply(
        kube_env, namespace,
        _instance("fast", mine, "fnf"), _instance("heavy", mine, "vnf"), _instance("elsewhere", other, "fnf"),
    )  # fmt: skip
    api = api_client_for(str(agent_kubeconfig(kube_env, mine, namespace)))
    core = client.CoreV1Api(api_client_for(str(kube_env.kubeconfig)))

    def start() -> ClusterAgent:
        return ClusterAgent(
            AgentConfig(node=mine, state_dir=tmp_path / "state"), api, pod_namespace=namespace,
            instance_namespace=namespace, heartbeat_s=0.0, report_load=True,
        )  # fmt: skip

    with FakeKubelet(core, namespace, {mine, other}):
        agent = start()
        try:
            wait_for(
                lambda: agent.sync_once() and _state(kube_env, namespace, "heavy") == "Running",
                30,
                "heavy Running",
            )
            agent.sync_once()
            assert _state(kube_env, namespace, "fast") == "Running"
            assert _state(kube_env, namespace, "elsewhere") is None  # not its node: never touched
            assert agent.instances() == ["fast", "heavy"]
            assert list(agent.agent.platform.instances) == ["fast"]  # the fNF runs in-process
            (pod,) = kubectl_items(kube_env, namespace, "pods")
            assert pod["spec"]["nodeName"] == mine
            assert pod["metadata"]["labels"]["flyslice.io/instance"] == "heavy"
            heavy = kube_env.kubectl_json("-n", namespace, "get", "nfinstance", "heavy")
            assert pod["metadata"]["ownerReferences"][0]["uid"] == heavy["metadata"]["uid"]
            node_status = kube_env.kubectl_json("get", "edgenode", mine)["status"]
            assert (
                node_status["heartbeatTime"]
                and 0 <= node_status["load"] <= 1
                and node_status["instances"] == 2
            )
            assert "status" not in kube_env.kubectl_json("get", "edgenode", other)
        finally:
            agent.stop()  # VNF pods stay: an agent restart must not disturb them
        agent = start()
        try:
            agent.sync_once()
            agent.sync_once()
            pods = kubectl_items(kube_env, namespace, "pods")
            assert [p["metadata"]["uid"] for p in pods] == [pod["metadata"]["uid"]]  # adopted, not doubled
            kube_env.kubectl("-n", namespace, "delete", "nfinstance", "heavy")
            wait_for(
                lambda: agent.sync_once() and not kubectl_items(kube_env, namespace, "pods"),
                20,
                "the VNF pod to go",
            )
            assert agent.instances() == ["fast"]
        finally:
            agent.stop()


def test_bare_gateway_agent_process_with_only_a_kubeconfig(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    gw = f"{namespace}-gw"
    _apply(kube_env, namespace, _edgenode(gw), _instance("edge-broker", gw, "fnf"))
    kubeconfig = agent_kubeconfig(kube_env, gw, namespace)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config to fall back on: the kubeconfig is all it has
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyslice.operator.cli", "agent", "--kube", "--node", gw, "--state-dir", str(tmp_path / "s"),
         "--kubeconfig", str(kubeconfig), "--no-pods", "--listen", "127.0.0.1:0", "--heartbeat", "1",
         # No operator (so no signer) here: the plain data plane must be asked for, and it shows.
         "--insecure-plaintext"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: _state(kube_env, namespace, "edge-broker") == "Running", 30, "the fNF Running")
        status = wait_for(
            lambda: kube_env.kubectl_json("get", "edgenode", gw).get("status", {}),
            10,
            "heartbeat",
        )
        assert status["heartbeatTime"]
        conditions = {c["type"]: c for c in status["conditions"]}
        unauthenticated = conditions["DataPlaneAuthenticated"]
        assert (unauthenticated["status"], unauthenticated["reason"]) == ("False", "InsecurePlaintext")
        assert "unauthenticated" in unauthenticated["message"]
        assert conditions["Ready"]["status"] == "True"  # a warning, not a health verdict
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    assert re.search(
        r"WARNING .*--insecure-plaintext: the data plane on 127\.0\.0\.1:\d+ is plain TCP and UNAUTHENTICATED",
        log,
    )


def test_vnf_pods_reach_the_agent_at_its_advertised_address_not_its_bind_address(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    """A DaemonSet agent binds 0.0.0.0 (deploy/k3s); inside a pod that address is the pod itself, so
    the pods' ``--uplink`` must be what the agent advertises (the node IP)."""
    node = f"{namespace}-n"
    _apply(kube_env, namespace, _edgenode(node), _instance("heavy", node, "vnf"))
    api = api_client_for(str(agent_kubeconfig(kube_env, node, namespace)))
    agent = ClusterAgent(
        AgentConfig(node=node, state_dir=tmp_path / "state", listen="0.0.0.0:0"), api,
        pod_namespace=namespace, instance_namespace=namespace, heartbeat_s=0.0, advertise="192.0.2.7:7000",
    )  # fmt: skip
    try:
        agent.sync_once()
        (pod,) = kubectl_items(kube_env, namespace, "pods")
        args = pod["spec"]["containers"][0]["args"]
        assert args[args.index("--uplink") + 1] == "192.0.2.7:7000"
        assert kube_env.kubectl_json("get", "edgenode", node)["status"]["agentAddress"] == "192.0.2.7:7000"
    finally:
        agent.stop()
