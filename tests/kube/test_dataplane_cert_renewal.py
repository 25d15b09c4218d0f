"""Scheduled renewal of cluster data-plane certificates, against the real API server with deploy/ RBAC
and the operator's signer (issue 12, "keys rotated on a schedule"):

- a cluster agent (``--tls``) renews its certificate at 2/3 of its lifetime while it runs -- a new key,
  a CSR, the signer's answer loaded into the contexts in use; a NEW connection then presents the new
  serial, a renewal the signer does not answer keeps the old certificate, is retried with backoff and
  shows in the EdgeNode heartbeat (condition DataPlaneCertificate) and the agent's gauges; agents keep
  talking past the first certificate's notAfter;
- a VNF pod's slice certificate is renewed by its agent (new key, CSR, Secret replaced) and the pod's
  runner -- a real runner process on the Secret's files -- loads it without a restart.

Kubernetes lets a CSR ask for no less than 600 s (``expirationSeconds``); to watch renewals within a
test the signer is given a cap of :data:`LIFETIME` (``DataplaneSigner(max_lifetime=...)``), which the
operator's command line does not expose. No kubelet runs here: the Secret's files are projected onto
disk the way the kubelet's AtomicWriter does (``tests/nodeagent/test_tls_dir_reload.project``).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeenv
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.dataplane.tls import CertificateAuthority, PeerIdentity, TlsFiles
from flyslice.nodeagent.dataplane.transport import REJECTED, send_lines
from flyslice.nodeagent.kube.agent import CERTIFICATE_CONDITION, ClusterAgent, api_client_for
from flyslice.nodeagent.kube.dataplane_certs import obtain_node_tls
from flyslice.nodeagent.message import new_message
from flyslice.operator.kube.dataplane_ca import DataplaneSigner
from tests.nodeagent.test_tls_dir_reload import project, serial_of, server_serial

from .operator_harness import agent_kubeconfig, operator_kubeconfig, wait_for
from .test_agent_cluster import _apply, _edgenode, _instance
from .test_vnf_pod_certs import _install_policy, _sans

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]

#: The signer's cap on every certificate in these tests: renewal is due 20 s after issue.
LIFETIME = datetime.timedelta(seconds=30)


class PausableSigner:
    """The operator's signer (operator service-account credentials) in a thread, which the test can
    pause -- a signer that does not answer, as when the operator is down."""

    def __init__(self, env: kubeenv.KubeEnv) -> None:
        api = api_client_for(str(operator_kubeconfig(env)))
        self.signer = DataplaneSigner(api, "flyslice-system", max_lifetime=LIFETIME)
        self.running = threading.Event()
        self.running.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.running.is_set():
                self.signer.run_once()
            self._stop.wait(0.3)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def ca(self) -> CertificateAuthority:
        self.signer.run_once()
        assert self.signer.ca is not None
        return self.signer.ca


@pytest.fixture
def signer(kube_env: kubeenv.KubeEnv) -> Iterator[PausableSigner]:
    s = PausableSigner(kube_env)
    yield s
    s.close()


def _not_after(files: TlsFiles) -> float:
    return files.not_after().timestamp()


def _condition(env: kubeenv.KubeEnv, node: str) -> dict[str, Any]:
    obj = env.kubectl_json("get", "edgenodes.flyslice.io", node)
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == CERTIFICATE_CONDITION), {})


def test_cluster_agent_renews_its_certificate_while_running(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    signer: PausableSigner,
) -> None:
    a, b = f"{namespace}-a", f"{namespace}-b"
    first: dict[str, Any] = _instance("first", a, "fnf")
    first["spec"]["nextHops"] = [{"instance": "second", "node": b}]
    _apply(kube_env, namespace, _edgenode(a), _edgenode(b))
    _apply(kube_env, namespace, first, _instance("second", b, "fnf"))
    apis = {n: api_client_for(str(agent_kubeconfig(kube_env, n, namespace))) for n in (a, b)}
    # A peer that checks what the agents present: a 90-day certificate from the cluster CA.
    checker = signer.ca().issue_to(tmp_path / "checker", "agent checker", node="checker")

    def agent(node: str) -> ClusterAgent:
        # The CSR asks for 600 s, the least Kubernetes allows; the signer's cap gives 30.
        tls = obtain_node_tls(apis[node], node, tmp_path / node / "tls", timeout_s=30, expiration_s=600)
        return ClusterAgent(
            AgentConfig(node=node, state_dir=tmp_path / node, tls=tls), apis[node],
            pod_namespace=None, instance_namespace=namespace, heartbeat_s=0.0,
            tls_renewal="csr", tls_retry_s=0.5, tls_request_timeout_s=2.0,
        )  # fmt: skip

    agent_a, agent_b = agent(a), agent(b)
    try:
        tls_a = agent_a.agent.config.tls
        assert tls_a is not None
        csrs = kube_env.kubectl_json("get", "csr", "-l", f"flyslice.io/node={a}")["items"]
        assert [c["spec"]["expirationSeconds"] for c in csrs] == [600]
        serial1, ident = server_serial(agent_a.agent.address, checker)
        assert ident == PeerIdentity(f"agent/{a}", None)
        leaf1 = tls_a.loaded()
        assert leaf1 is not None and leaf1.serial_number == serial1
        lifetime = leaf1.not_valid_after_utc - leaf1.not_valid_before_utc
        assert lifetime <= LIFETIME + datetime.timedelta(minutes=5)  # the cap, plus the back-dating
        not_after1 = _not_after(tls_a)
        renewer = agent_a.agent.tls_renewer
        assert renewer is not None
        assert agent_a.heartbeat()
        cond = _condition(kube_env, a)
        assert (cond["status"], cond["reason"]) == ("True", "Valid") and f"serial {serial1:x}" in cond[
            "message"
        ]

        # The signer stops answering before renewal is due: attempts fail (CSR not signed in time),
        # are retried with backoff, and the old certificate stays in use meanwhile.
        signer.running.clear()
        wait_for(lambda: renewer.failures >= 2, 40, "renewal attempts to fail while the signer is paused")
        assert renewer.renewals == 0
        assert server_serial(agent_a.agent.address, checker)[0] == serial1
        assert agent_a.heartbeat()
        cond = _condition(kube_env, a)
        assert (cond["status"], cond["reason"]) == ("False", "RenewalFailing"), cond
        assert "not signed within" in cond["message"]
        gauges = agent_a.agent._agent_gauges()
        assert gauges["dataplane_cert_renewal_failures"] >= 2 and gauges["dataplane_cert_renewals"] == 0

        # The signer is back: the next attempt renews, without a restart.
        signer.running.set()
        wait_for(lambda: renewer.renewals >= 1, 30, "agent a's certificate to be renewed")
        serial2, ident = server_serial(agent_a.agent.address, checker)
        assert serial2 != serial1 and ident == PeerIdentity(f"agent/{a}", None)
        assert serial2 == serial_of(tls_a.cert.read_bytes())
        assert agent_a.heartbeat()
        cond = _condition(kube_env, a)
        assert (cond["status"], cond["reason"]) == ("True", "Valid") and f"serial {serial2:x}" in cond[
            "message"
        ]
        assert agent_a.agent._agent_gauges()["dataplane_cert_not_after_timestamp_seconds"] > not_after1
        b_renewer = agent_b.agent.tls_renewer
        assert b_renewer is not None
        wait_for(lambda: b_renewer.renewals >= 1, 30, "agent b's certificate to be renewed")

        # Past the first certificates' notAfter: new connections both ways still pass, and the chain
        # a -> b delivers in order with nothing refused.
        wait_for(lambda: time.time() > not_after1 + 1, 30, "the first certificate to expire")
        assert server_serial(agent_a.agent.address, checker)[0] == serial2
        arrived: list[dict[str, Any]] = []
        agent_b.agent.on_sink(lambda _inst, msgs: arrived.extend(msgs))
        for ag in (agent_b, agent_a, agent_b, agent_a):
            ag.sync_once()
        before = REJECTED.snapshot()
        for i in range(10):
            assert agent_a.agent.plane.deliver(new_message("s1", "sensors/t", {"temperature": i}))
        wait_for(lambda: len(arrived) >= 10, 15, "the chain's messages to reach node b")
        assert [m["payload"]["temperature"] for m in arrived[:10]] == list(range(10))
        # A fresh connection with a's renewed client certificate into b's renewed listener.
        fresh = new_message("s1", "fresh", {"temperature": 99})
        fresh["to"] = "second"
        send_lines(agent_b.agent.address, [fresh], tls=tls_a)
        wait_for(lambda: any(m["topic"] == "fresh" for m in arrived), 10, "a fresh connection's message")
        assert REJECTED.snapshot() == before
    finally:
        agent_a.stop()
        agent_b.stop()


def _secret(env: kubeenv.KubeEnv, namespace: str, name: str) -> dict[str, bytes]:
    data = env.kubectl_json("-n", namespace, "get", "secret", name)["data"]
    return {k: base64.b64decode(v) for k, v in data.items()}


def test_vnf_pod_certificate_is_renewed_and_its_runner_reloads_it(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    signer: PausableSigner,
) -> None:
    a = f"{namespace}-a"
    _apply(kube_env, namespace, _edgenode(a), _instance("vnf-a", a, "vnf"))
    kc_a = agent_kubeconfig(kube_env, a, namespace)
    _install_policy(kube_env, namespace, kc_a, a)  # renewal replaces the Secret under admission too
    api_a = api_client_for(str(kc_a))
    checker = signer.ca().issue_to(tmp_path / "checker", "agent checker", node="checker")
    tls = obtain_node_tls(api_a, a, tmp_path / "a" / "tls", timeout_s=30)

    def start_agent() -> ClusterAgent:  # renewing its own certificate too, as `--tls` does
        return ClusterAgent(
            AgentConfig(node=a, state_dir=tmp_path / "a", tls=tls), api_a,
            pod_namespace=namespace, instance_namespace=namespace, heartbeat_s=0.0,
            tls_renewal="csr", tls_retry_s=0.5,
        )  # fmt: skip

    agent = start_agent()
    proc: subprocess.Popen[bytes] | None = None
    try:
        agent.sync_once()
        pods = wait_for(
            lambda: kube_env.kubectl_json("-n", namespace, "get", "pods", "-l", "flyslice.io/instance=vnf-a")[
                "items"
            ],
            30,
            "the VNF pod",
        )
        pod = pods[0]
        secret_name = f"flyslice-tls-{pod['metadata']['name']}"
        data1 = _secret(kube_env, namespace, secret_name)
        serial1 = serial_of(data1["cert.pem"])

        # The pod's runner, as the image runs it, on the Secret's files in the kubelet's layout.
        container = pod["spec"]["containers"][0]
        env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
        env.pop("FLYSLICE_DATA_DIR", None)
        vol = tmp_path / "pod-tls"
        project(vol, data1)
        ready = tmp_path / "ready.json"
        proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "flyslice.nodeagent.runtime.runner", "--listen", "127.0.0.1:0",
             "--uplink", agent.agent.address, "--tls-dir", str(vol), "--ready-file", str(ready)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        runner = wait_for(
            lambda: ready.exists() and json.loads(ready.read_text())["address"], 30, "the runner"
        )
        assert server_serial(runner, checker) == (serial1, PeerIdentity("slice/s1", frozenset({"s1"})))
        not_after1 = x509.load_pem_x509_certificate(data1["cert.pem"]).not_valid_after_utc.timestamp()

        # At 2/3 of its lifetime the agent renews it: new key, CSR, the Secret replaced.
        def renewed() -> dict[str, bytes] | None:
            agent.sync_once()
            try:
                data = _secret(kube_env, namespace, secret_name)
            except subprocess.CalledProcessError:
                return None  # between the delete and the create of the replacement
            return data if serial_of(data["cert.pem"]) != serial1 else None

        data2 = wait_for(renewed, 40, "the pod's certificate to be renewed", interval=1.0)
        assert agent.pods is not None and agent.pods.tls_renewals >= 1
        cert2 = x509.load_pem_x509_certificate(data2["cert.pem"])
        assert _sans(cert2) == ["flyslice://slice/s1"]
        key2 = serialization.load_pem_private_key(data2["key.pem"], None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert key2.public_key().public_bytes(*spki) == cert2.public_key().public_bytes(*spki)
        assert data2["key.pem"] != data1["key.pem"]
        now_pods = kube_env.kubectl_json("-n", namespace, "get", "pods", "-l", "flyslice.io/instance=vnf-a")
        assert [p["metadata"]["uid"] for p in now_pods["items"]] == [pod["metadata"]["uid"]]  # same pod

        # The kubelet projects the new Secret; the running runner loads it for new connections.
        project(vol, data2)
        wait_for(lambda: server_serial(runner, checker)[0] == cert2.serial_number, 10, "the runner to reload")
        wait_for(lambda: time.time() > not_after1 + 1, 30, "the first pod certificate to expire")
        assert server_serial(runner, checker) == (
            cert2.serial_number,
            PeerIdentity("slice/s1", frozenset({"s1"})),
        )
        assert proc.poll() is None  # the same runner process: no restart

        # An agent that restarts cannot read the Secret to learn its expiry: it renews once, at once.
        agent.stop()
        agent = start_agent()
        agent.sync_once()
        agent.sync_once()
        assert agent.pods is not None and agent.pods.tls_renewals == 1
        assert serial_of(_secret(kube_env, namespace, secret_name)["cert.pem"]) not in (
            serial1,
            cert2.serial_number,
        )
    finally:
        agent.stop()
        if proc is not None:
            proc.terminate()
            proc.communicate(timeout=20)


def test_a_lifetime_below_the_kubernetes_minimum_is_refused_on_the_command_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "flyslice.nodeagent", "--kube", "--node", "gw", "--state-dir", str(tmp_path),
         "--tls", "--tls-cert-seconds", "300"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "--tls-cert-seconds: 300: a CSR's expirationSeconds must be at least 600" in r.stderr
