"""Mutual TLS between cluster agents against the real API server: each agent gets its certificate
through a CSR the operator's signer approves only for the requester's own node, two agents exchange a
chain's messages over mTLS, and a plain-TCP forgery to an agent's data port is dropped and counted."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeenv
import pytest
from cryptography import x509

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.dataplane.transport import REJECTED, send_lines
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for
from flyslice.nodeagent.kube.dataplane_certs import CertificateUnavailable, obtain_node_tls
from flyslice.nodeagent.message import new_message
from flyslice.operator.kube.dataplane_ca import DataplaneSigner

from .operator_harness import agent_kubeconfig, operator_kubeconfig, wait_for
from .test_agent_cluster import _apply, _edgenode, _instance

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]


@pytest.fixture
def signer(kube_env: kubeenv.KubeEnv) -> Iterator[DataplaneSigner]:
    """The operator's signer, with the operator's service-account credentials (deploy/ RBAC)."""
    s = DataplaneSigner(api_client_for(str(operator_kubeconfig(kube_env))), "flyslice-system")
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            s.run_once()
            stop.wait(0.3)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield s
    stop.set()
    t.join(10)


def test_agents_exchange_a_chain_over_mtls_and_drop_a_plain_forgery(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    signer: DataplaneSigner,
) -> None:
    a, b = f"{namespace}-a", f"{namespace}-b"
    first: dict[str, Any] = _instance("first", a, "fnf")
    first["spec"]["nextHops"] = [{"instance": "second", "node": b}]
    _apply(kube_env, namespace, _edgenode(a), _edgenode(b))
    _apply(kube_env, namespace, first, _instance("second", b, "fnf"))
    apis = {n: api_client_for(str(agent_kubeconfig(kube_env, n, namespace))) for n in (a, b)}

    # Node a's credentials cannot obtain node b's identity: the signer denies the CSR.
    with pytest.raises(CertificateUnavailable, match="denied"):
        obtain_node_tls(apis[a], b, tmp_path / "stolen", timeout_s=20)

    def agent(node: str) -> ClusterAgent:
        tls = obtain_node_tls(apis[node], node, tmp_path / node / "tls", timeout_s=30)
        cert = x509.load_pem_x509_certificate(tls.cert.read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [f"flyslice://agent/{node}"]
        assert tls.key.stat().st_mode & 0o077 == 0
        return ClusterAgent(
            AgentConfig(node=node, state_dir=tmp_path / node, tls=tls), apis[node],
            pod_namespace=None, instance_namespace=namespace, heartbeat_s=0.0,
        )  # fmt: skip

    agent_a, agent_b = agent(a), agent(b)
    try:
        arrived: list[dict[str, Any]] = []
        agent_b.agent.on_sink(lambda _inst, msgs: arrived.extend(msgs))
        for ag in (agent_b, agent_a, agent_b, agent_a):
            ag.sync_once()
        assert agent_a.agent.plane.peers[b] == agent_b.agent.address
        before = REJECTED.snapshot()
        for i in range(20):
            assert agent_a.agent.plane.deliver(new_message("s1", "sensors/t", {"temperature": i}))
        wait_for(lambda: len(arrived) >= 20, 15, "the chain's messages to reach node b over mTLS")
        assert [m["payload"]["temperature"] for m in arrived[:20]] == list(range(20))
        assert REJECTED.snapshot() == before  # the authenticated hop refused nothing

        # What any process that can reach the port can do: a plain-TCP line naming the slice's last hop.
        forged = new_message("s1", "forged", {"temperature": 999})
        forged["to"] = "second"
        send_lines(agent_b.agent.address, [forged])
        wait_for(lambda: agent_b.agent.ingress.rejected["plaintext"] >= 1, 10, "the forgery to be counted")
        assert REJECTED.snapshot()["plaintext"] - before["plaintext"] >= 1
        assert all(m["topic"] != "forged" for m in arrived)
    finally:
        agent_a.stop()
        agent_b.stop()
    # The CA lives in the operator's Secret; agents see only its certificate in the ConfigMap.
    cm = kube_env.kubectl_json("-n", "flyslice-system", "get", "configmap", "flyslice-dataplane-ca")
    assert "BEGIN CERTIFICATE" in cm["data"]["ca.pem"] and "ca.key" not in cm["data"]
