"""Cluster-mode agents find each other's data-plane address through the EdgeNode status, so a slice's
messages cross nodes with no --peer flags: real API server, real TCP on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubeenv
import pytest

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for

from .operator_harness import agent_kubeconfig, wait_for
from .test_agent_cluster import _apply, _edgenode, _instance

pytestmark = [pytest.mark.kube, pytest.mark.timeout(90)]


def test_agents_learn_peer_addresses_from_edgenode_status_and_forward(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    a, b = f"{namespace}-a", f"{namespace}-b"
    first: dict[str, Any] = _instance("first", a, "fnf")
    first["spec"]["nextHops"] = [{"instance": "second", "node": b}]
    _apply(kube_env, namespace, _edgenode(a), _edgenode(b))
    _apply(kube_env, namespace, first, _instance("second", b, "fnf"))

    def agent(node: str) -> ClusterAgent:
        return ClusterAgent(
            AgentConfig(node=node, state_dir=tmp_path / node),
            api_client_for(str(agent_kubeconfig(kube_env, node, namespace))),
            pod_namespace=None, instance_namespace=namespace, heartbeat_s=0.0,
        )  # fmt: skip

    agent_a, agent_b = agent(a), agent(b)
    try:
        arrived: list[dict[str, Any]] = []
        agent_b.agent.on_sink(lambda _inst, msgs: arrived.extend(msgs))
        for ag in (agent_b, agent_a, agent_b, agent_a):  # each heartbeat publishes, then learns the other
            ag.sync_once()
        status_b = kube_env.kubectl_json("get", "edgenode", b)["status"]
        assert status_b["agentAddress"] == agent_b.agent.address
        assert agent_a.agent.plane.peers[b] == agent_b.agent.address
        from flyslice.nodeagent.message import new_message

        assert agent_a.agent.plane.deliver(new_message("s1", "sensors/t", {"temperature": 42}))
        wait_for(lambda: arrived, 15, "the message to reach node b")
        assert arrived[0]["payload"] == {"temperature": 42}
    finally:
        agent_a.stop()
        agent_b.stop()
