"""Mutual TLS between cluster agents against the real API server: each agent gets its certificate
through a CSR the operator's signer approves only for the requester's own node, two agents exchange a
chain's messages over mTLS, and a plain-TCP forgery to an agent's data port is dropped and counted.
It is the default: a ``flyslice agent --kube`` process given no TLS option requests a CSR and serves
only mutual TLS, and says so in ``/status``, ``/metrics`` and its EdgeNode."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeenv
import pytest
from cryptography import x509

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.dataplane.transport import REJECTED, probe, send_lines
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


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return None


def _sample(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_agent_process_without_tls_options_requests_a_csr_and_serves_only_mtls(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    signer: DataplaneSigner,
) -> None:
    gw, peer_node = f"{namespace}-gw", f"{namespace}-peer"
    _apply(kube_env, namespace, _edgenode(gw), _edgenode(peer_node))
    addr, http = f"127.0.0.1:{kubeenv.free_port()}", f"127.0.0.1:{kubeenv.free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)  # the agent's kubeconfig is all it has
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyslice.operator.cli", "agent", "--kube", "--node", gw,
         "--state-dir", str(tmp_path / "s"), "--kubeconfig", str(agent_kubeconfig(kube_env, gw, namespace)),
         "--namespace", namespace, "--no-pods", "--listen", addr, "--http", http, "--heartbeat", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        doc = json.loads(wait_for(lambda: _get(f"http://{http}/status"), 60, "the agent's /status"))
        assert doc["dataPlane"] == {"authenticated": True, "transport": "mutual-tls"}
        # It asked the operator's signer for its identity: a CSR for its node, signed.
        (csr,) = kube_env.kubectl_json("get", "csr", "-l", f"flyslice.io/node={gw}")["items"]
        assert csr["spec"]["signerName"] == "flyslice.io/dataplane" and csr["status"].get("certificate")
        cert = x509.load_pem_x509_certificate((tmp_path / "s" / "tls" / "cert.pem").read_bytes())
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [f"flyslice://agent/{gw}"]

        # Another node's agent, certified by the same signer, is answered; plain TCP is not.
        peer = obtain_node_tls(
            api_client_for(str(agent_kubeconfig(kube_env, peer_node, namespace))), peer_node,
            tmp_path / "peer", timeout_s=30,
        )  # fmt: skip
        assert probe(addr, timeout=2.0, tls=peer)
        assert not probe(addr, timeout=2.0)
        forged = new_message("s1", "forged", {"temperature": 999})
        send_lines(addr, [forged])  # what any process that can reach the port would try
        plain = 'flyslice_dataplane_rejected_total{reason="plaintext"}'
        metrics = wait_for(
            lambda: (t := _get(f"http://{http}/metrics")) and _sample(t, plain) >= 2 and t, 10,
            "the plain connections to be counted",
        )  # fmt: skip
        assert _sample(metrics, "flyslice_agent_dataplane_authenticated") == 1.0

        def conditions() -> dict[str, dict[str, Any]] | None:
            st = kube_env.kubectl_json("get", "edgenode", gw).get("status") or {}
            conds = {c["type"]: c for c in st.get("conditions", [])}
            return conds if "DataPlaneAuthenticated" in conds else None

        conds = wait_for(conditions, 20, "the EdgeNode heartbeat")
        assert (conds["DataPlaneAuthenticated"]["status"], conds["DataPlaneAuthenticated"]["reason"]) == (
            "True", "MutualTLS",
        )  # fmt: skip
        assert conds["DataPlaneCertificate"]["status"] == "True"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    assert "insecure" not in log.lower()


def test_agent_process_that_cannot_get_a_certificate_does_not_fall_back_to_plaintext(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    signer: DataplaneSigner,
) -> None:
    mine, other = f"{namespace}-mine", f"{namespace}-other"
    _apply(kube_env, namespace, _edgenode(mine), _edgenode(other))
    addr = f"127.0.0.1:{kubeenv.free_port()}"
    # Node mine's credentials asking to serve node other: the signer denies the CSR.
    r = subprocess.run(
        [sys.executable, "-m", "flyslice.operator.cli", "agent", "--kube", "--node", other,
         "--state-dir", str(tmp_path / "s"), "--kubeconfig", str(agent_kubeconfig(kube_env, mine, namespace)),
         "--namespace", namespace, "--no-pods", "--listen", addr],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"flyslice agent --kube: data-plane certificate for node {other}: ")
    assert "denied" in last and last.endswith("must run, or give --tls-dir DIR")
    assert not probe(addr, timeout=1.0)  # it never listened
