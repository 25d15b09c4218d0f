"""VNF pods on the cluster's mutual-TLS data plane, against the real API server with deploy/ RBAC and
the agent admission policy: the agent obtains a certificate naming exactly its pod's slice (a CSR the
operator's signer approves only for an NFInstance on the requester's node), stores it in a Secret
owned by the NFInstance and mounts it into the pod, whose runner uses it (``--tls-dir``); a CSR for a
VNF on another node, or for another slice, is denied, and an agent's pod cannot mount the CA's Secret."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import kubeenv
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.dataplane.tls import write_tls_dir
from flyslice.nodeagent.dataplane.transport import send_lines
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for
from flyslice.nodeagent.kube.dataplane_certs import (
    CertificateUnavailable,
    obtain_node_tls,
    obtain_slice_certificate,
)
from flyslice.nodeagent.kube.pod_driver import TLS_MOUNT
from flyslice.nodeagent.message import new_message
from flyslice.operator.kube.dataplane_ca import DataplaneSigner

from .operator_harness import agent_kubeconfig, wait_for
from .test_agent_cluster import _apply, _edgenode, _instance
from .test_agent_dataplane_mtls import signer  # noqa: F401  (fixture)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
POLICY = "flyslice-agent-node-restriction"


def _install_policy(env: kubeenv.KubeEnv, namespace: str, kubeconfig: Path, node: str) -> None:
    """The deploy/ admission policy, in effect (the API server's informers need a moment)."""
    env.kubectl("apply", "-f", str(REPO / "deploy" / "k3s" / "admission-agent-node-restriction.yaml"))
    probe = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-flyslice", "namespace": namespace,
        "labels": {"flyslice.io/node": node}}, "data": {},
    }  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = env.kubectl("create", "-f", "-", input=json.dumps(probe), kubeconfig=kubeconfig, check=False)
        if out.returncode != 0 and POLICY in out.stderr:
            return
        env.kubectl("-n", namespace, "delete", "secret", "not-flyslice", "--ignore-not-found")
        time.sleep(0.5)
    pytest.fail(f"{POLICY} never took effect")


def _sans(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier)] + [
        repr(n) for n in ext if not isinstance(n, x509.UniformResourceIdentifier)
    ]


def test_vnf_pod_gets_a_certificate_for_its_own_slice_only(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    signer: DataplaneSigner,  # noqa: F811
) -> None:
    a, b = f"{namespace}-a", f"{namespace}-b"
    _apply(kube_env, namespace, _edgenode(a), _edgenode(b))
    other: dict[str, Any] = _instance("vnf-b", b, "vnf")
    other["spec"]["slice"] = "s2"
    other["metadata"]["labels"]["flyslice.io/slice"] = "s2"
    _apply(kube_env, namespace, _instance("vnf-a", a, "vnf"), other)
    kc_a = agent_kubeconfig(kube_env, a, namespace)
    _install_policy(kube_env, namespace, kc_a, a)
    api_a = api_client_for(str(kc_a))

    # Node a's credentials get no slice identity for a VNF scheduled on node b, nor another slice
    # for its own VNF: the signer reads the NFInstance and denies.
    with pytest.raises(CertificateUnavailable, match=r"denied.*scheduled on node"):
        obtain_slice_certificate(api_a, a, namespace, "vnf-b", "s2", timeout_s=20)
    with pytest.raises(CertificateUnavailable, match=r"denied.*belongs to slice 's1'"):
        obtain_slice_certificate(api_a, a, namespace, "vnf-a", "s2", timeout_s=20)

    tls = obtain_node_tls(api_a, a, tmp_path / "a" / "tls", timeout_s=30)
    agent = ClusterAgent(
        AgentConfig(node=a, state_dir=tmp_path / "a", tls=tls), api_a,
        pod_namespace=namespace, instance_namespace=namespace, heartbeat_s=0.0,
    )  # fmt: skip
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
        container = pod["spec"]["containers"][0]
        # The pod mounts its Secret, read-only, where its runner's --tls-dir points.
        vols = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert vols["tls"]["secret"]["secretName"] == secret_name
        assert {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True} in container["volumeMounts"]
        args = container["args"]
        assert args[args.index("--tls-dir") + 1] == TLS_MOUNT

        secret = kube_env.kubectl_json("-n", namespace, "get", "secret", secret_name)
        nfi = kube_env.kubectl_json("-n", namespace, "get", "nfinstances.flyslice.io", "vnf-a")
        owners = secret["metadata"]["ownerReferences"]
        assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
            ("NFInstance", "vnf-a", nfi["metadata"]["uid"])
        ]
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        cert = x509.load_pem_x509_certificate(data["cert.pem"])
        assert _sans(cert) == ["flyslice://slice/s1"]  # exactly its slice: no agent identity, no other slice
        cm = kube_env.kubectl_json("-n", "flyslice-system", "get", "configmap", "flyslice-dataplane-ca")
        assert data["ca.pem"] == cm["data"]["ca.pem"].encode() == tls.ca.read_bytes()
        ca = x509.load_pem_x509_certificate(data["ca.pem"])
        cert.verify_directly_issued_by(ca)
        ca_key = ca.public_key()
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        key = serialization.load_pem_private_key(data["key.pem"], None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]

        # The runner's credentials work on the agent's mTLS port, for slice s1 only: a message
        # for s2 signed in with them is dropped as another slice's, not as a bad certificate.
        files = write_tls_dir(tmp_path / "pod-tls", data["ca.pem"], data["cert.pem"], data["key.pem"])
        rejected = agent.agent.ingress.rejected
        before = dict(rejected)
        send_lines(agent.agent.address, [new_message("s2", "forged", {"x": 1})], tls=files)
        wait_for(
            lambda: rejected["slice"] > before.get("slice", 0), 10, "the cross-slice message to be dropped"
        )
        assert rejected["untrusted_certificate"] == before.get("untrusted_certificate", 0)
        assert rejected["handshake"] == before.get("handshake", 0)

        # Creating a pod is reading the Secrets it mounts: an agent's pod may not mount the CA's.
        steal = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "steal-ca", "namespace": namespace},
            "spec": {"nodeName": a, "containers": [{"name": "c", "image": "busybox",
                     "volumeMounts": [{"name": "ca", "mountPath": "/ca"}]}],
                     "volumes": [{"name": "ca", "secret": {"secretName": "flyslice-dataplane-ca"}}]},
        }  # fmt: skip
        out = kube_env.kubectl("create", "-f", "-", input=json.dumps(steal), kubeconfig=kc_a, check=False)
        assert out.returncode != 0 and POLICY in out.stderr and "flyslice-tls-" in out.stderr, out.stderr

        # Removing the VNF removes its credentials with the pod.
        assert agent.pods is not None
        agent.pods.remove("vnf-a")
        wait_for(
            lambda: (
                not kube_env.kubectl(
                    "-n", namespace, "get", "secret", secret_name, "--ignore-not-found", "-o", "name"
                ).stdout.strip()
            ),
            15,
            "the pod's Secret to be deleted",
        )
    finally:
        agent.stop()
