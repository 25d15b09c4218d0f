"""A cluster agent lists its VNF pods once per sync, however many fNFs it runs.

The cluster benchmark found every sync making one pod LIST per fNF loaded (the pod driver's
``names()`` was an API request, and the agent asked it once per fNF): 27-29 LISTs per fNF created at
20 fNFs. Here a real cluster agent (its node's credentials, deploy/ RBAC) runs 12 fNFs and a VNF
against the real API server. Its requests are counted where its client hands them to the HTTP
connection pool (every request it sends, and only its own: the API server's
``apiserver_request_total`` also counts other tests' clients of this shared server, so it serves as
a lower bound that the counted requests did reach it). The old code made 16 pod LISTs per sync here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubeenv
import pytest

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for

from .operator_harness import agent_kubeconfig
from .test_agent_cluster import _apply, _edgenode, _instance

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]

FNFS = 12
SYNCS = 4


def test_one_pod_list_per_sync_whatever_the_number_of_fnfs(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    node = f"{namespace}-n"
    _apply(kube_env, namespace, _edgenode(node))
    _apply(
        kube_env,
        namespace,
        *[_instance(f"f{i}", node, "fnf") for i in range(FNFS)],
        _instance("v", node, "vnf"),
    )
    api = api_client_for(str(agent_kubeconfig(kube_env, node, namespace)))
    sent: list[tuple[str, str]] = []
    rest = api.rest_client
    send = rest.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append((method, urlsplit(url).path))
        return send(method, url, *args, **kwargs)

    rest.request = counted
    # resync_s: no background converge between the counted syncs; heartbeat_s: none inside them.
    agent = ClusterAgent(
        AgentConfig(node=node, state_dir=tmp_path, resync_s=3600), api, pod_namespace=namespace,
        instance_namespace=namespace, heartbeat_s=3600, report_load=False,
    )  # fmt: skip
    try:
        assert agent.sync_once()
        status = agent.agent.status()
        assert sum(st.state == "Running" for st in status.values()) == FNFS, status
        assert agent.pods is not None and agent.pods.names() == ["v"]  # its pod exists (no kubelet here)

        before = kube_env.api_requests()
        sent.clear()
        for _ in range(SYNCS):
            assert agent.sync_once()
        after = kube_env.api_requests()
        # One LIST at the start of each converge; everything else (every fNF's check, the VNF's
        # observation, the status report) reads it.
        pod_lists = [path for method, path in sent if method == "GET" and path.endswith("/pods")]
        assert len(pod_lists) == SYNCS, sent
        assert after.get(("LIST", "pods"), 0.0) - before.get(("LIST", "pods"), 0.0) >= SYNCS
    finally:
        agent.stop(stop_vnfs=True)
