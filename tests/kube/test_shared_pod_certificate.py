"""The pod of a shared VNF instance on the mutual-TLS data plane, against the real API server with the
operator's signer and deploy/ RBAC: one certificate naming exactly its tenants' slices, and a new one
when a tenant of another slice joins.

The signer (operator/kube/dataplane_ca.py) signs a CSR naming several slices only when every tenant it
lists is a VNF on the requester's node, all are tenants of one ``sharedInstance.name``, and together
they are exactly those slices. The agent's pod driver puts that certificate into the pod's Secret
(``flyslice-tls-<pod>``), mounts it, and replaces it when the tenants' slices change. The pods here are
started by the test's FakeKubelet (there is no kubelet), so no runner answers; the runner's side --
taking the new certificate with the tenant set -- is tests/nodeagent/test_shared_vnf_control.py, and a
shared pod under a real kubelet is tests/cluster/test_shared_vnf_pod.py.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import kubeenv
import pytest
from cryptography import x509

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for
from flyslice.nodeagent.kube.dataplane_certs import (
    CertificateUnavailable,
    obtain_node_tls,
    obtain_shared_certificate,
)
from flyslice.nodeagent.kube.shared_pods import SHARED_LABEL, TLS_WORK_MOUNT
from flyslice.operator.kube.dataplane_ca import DataplaneSigner

from .fake_kubelet import FakeKubelet
from .operator_harness import agent_kubeconfig, wait_for
from .test_agent_cluster import _apply, _edgenode, _instance
from .test_agent_dataplane_mtls import signer  # noqa: F401  (fixture)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]


def _tenant(name: str, node: str, slice_: str, shared: str) -> dict[str, Any]:
    body = _instance(name, node, "vnf")
    body["spec"]["slice"] = slice_
    body["metadata"]["labels"]["flyslice.io/slice"] = slice_
    body["spec"]["sharedInstance"] = {"name": shared}
    return body


def _slices(pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(pem)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(str(v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier))


def test_a_shared_pod_gets_one_certificate_for_exactly_its_tenants_slices(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    signer: DataplaneSigner,  # noqa: F811
) -> None:
    a, b = f"{namespace}-a", f"{namespace}-b"
    x, y = f"broker/vnf/any@{a}#0", f"broker/vnf/any@{a}#1"
    _apply(kube_env, namespace, _edgenode(a), _edgenode(b))
    _apply(
        kube_env, namespace, _tenant("t1", a, "s1", x), _tenant("t2", a, "s2", x), _tenant("t3", a, "s3", y),
        _tenant("t4", b, "s4", x),
    )  # fmt: skip
    kc_a = agent_kubeconfig(kube_env, a, namespace)
    api_a = api_client_for(str(kc_a))

    def ask(*tenants: tuple[str, str]) -> tuple[bytes, bytes]:
        return obtain_shared_certificate(api_a, a, [(namespace, n, s) for n, s in tenants], "x", timeout_s=20)

    assert _slices(ask(("t1", "s1"), ("t2", "s2"))[0]) == ["flyslice://slice/s1", "flyslice://slice/s2"]
    refusals = [
        ((("t1", "s1"), ("t3", "s3")), "not the tenants of one shared instance"),
        ((("t1", "s1"), ("t4", "s4")), "scheduled on node"),  # a tenant on another node
        ((("t1", "s1"), ("t2", "s3")), "are of slices"),  # a slice none of the tenants is of
    ]
    for tenants, why in refusals:
        with pytest.raises(CertificateUnavailable, match=rf"denied.*{why}"):
            ask(*tenants)

    tls = obtain_node_tls(api_a, a, tmp_path / "tls", timeout_s=30)
    agent = ClusterAgent(
        AgentConfig(node=a, state_dir=tmp_path, tls=tls), api_a, pod_namespace=namespace,
        instance_namespace=namespace, heartbeat_s=3600, report_load=False,
    )  # fmt: skip

    def shared_pods() -> dict[str, dict[str, Any]]:
        items = kube_env.kubectl_json("-n", namespace, "get", "pods", "-l", SHARED_LABEL)["items"]
        return {p["metadata"]["annotations"][SHARED_LABEL]: p for p in items}

    def secret_slices(pod: dict[str, Any]) -> list[str]:
        secret = kube_env.kubectl_json(
            "-n", namespace, "get", "secret", f"flyslice-tls-{pod['metadata']['name']}"
        )
        return _slices(base64.b64decode(secret["data"]["cert.pem"]))

    try:
        from kubernetes import client

        # The kubelet's writes (pod status) need more than an agent's rights: admin credentials.
        with FakeKubelet(client.CoreV1Api(api_client_for(str(kube_env.kubeconfig))), namespace, {a}):
            agent.sync_once()
            pods = wait_for(lambda: len(shared_pods()) == 2 and shared_pods(), 30, "two shared pods")
            assert not kube_env.kubectl_json("-n", namespace, "get", "pods", "-l", "flyslice.io/instance")[
                "items"
            ]
            pod = pods[x]
            assert secret_slices(pod) == ["flyslice://slice/s1", "flyslice://slice/s2"]
            assert secret_slices(pods[y]) == ["flyslice://slice/s3"]  # a lone tenant: its slice only
            container = pod["spec"]["containers"][0]
            assert "--tenants-control" in container["args"]
            assert container["args"][container["args"].index("--tls-work-dir") + 1] == TLS_WORK_MOUNT
            assert {v["name"] for v in pod["spec"]["volumes"]} >= {"tls", "tls-work"}
            assert "FLYSLICE_CONTROL_TOKEN" in {e["name"] for e in container["env"]}

            # A tenant of a fifth slice joins: same pod, its Secret now names the three slices.
            _apply(kube_env, namespace, _tenant("t5", a, "s5", x))
            wait_for(
                lambda: (
                    agent.sync_once()
                    and secret_slices(pod) == [f"flyslice://slice/{s}" for s in ("s1", "s2", "s5")]
                ),
                60,
                "the shared pod's Secret naming s1, s2 and s5",
                interval=0.5,
            )
            assert shared_pods()[x]["metadata"]["uid"] == pod["metadata"]["uid"]

            # Its last tenant gone, the pod and its Secret go.
            for name in ("t1", "t2", "t5"):
                kube_env.kubectl("-n", namespace, "delete", "nfinstance", name)
            wait_for(lambda: agent.sync_once() and x not in shared_pods(), 60, "the shared pod deleted", 0.5)
            gone = kube_env.kubectl(
                "-n", namespace, "get", "secret", f"flyslice-tls-{pod['metadata']['name']}", "--ignore-not-found",
                "-o", "name",
            )  # fmt: skip
            assert gone.stdout.strip() == ""
            assert y in shared_pods()
    finally:
        agent.stop(stop_vnfs=True)
