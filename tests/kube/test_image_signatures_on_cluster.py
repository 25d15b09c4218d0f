"""Verified image signatures for VNF pods, against the real API server (issue 12, items 1 and 3).

Manifests in a namespace under ``--require-signed-packages`` go through validation and planning to
NFInstance objects; a real cluster agent (a separate ``flyslice agent --kube`` process holding only
``--trusted-image-key cosign.pub``, and in-process agents with other keys) verifies each flavour's
``imageSignature`` before it creates the pod: a signed image gets its pod; an unsigned package, a
signature moved to another digest, or a signature by a key the agent does not trust gets none, with
the reason in the NFInstance status, and a pod of the earlier, signed version is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubeenv
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flyslice.nodeagent.agent import AgentConfig
from flyslice.nodeagent.kube.agent import ClusterAgent, api_client_for
from flyslice.nodeagent.runtime.image_signatures import key_id, load_trusted_key, sign_image
from flyslice.operator.intake.manifests import load_text
from flyslice.operator.intake.validation import PackagePolicy, ValidationResult, validate
from flyslice.operator.planning import plan, slice_actions

from .fake_kubelet import FakeKubelet
from .operator_harness import agent_kubeconfig, kubectl_items, wait_for
from .test_agent_cluster import _apply

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]

COSIGN = Path(__file__).resolve().parents[1] / "data" / "cosign"
#: What `cosign generate` was given for the vector in tests/data/cosign.
COSIGN_IMAGE = "busybox:1.36@sha256:c643f1965b26a33f30586c3a013f7ea8532986636baae5c4522d4425e9002fb7"

DIGEST = "sha256:" + "5e" * 32
MOVED = "sha256:" + "e5" * 32
IMAGE = f"ghcr.io/flyslice/camera:1.0@{DIGEST}"

MANIFESTS = """\
apiVersion: flyslice.io/v1alpha1
kind: EdgeNode
metadata: {{name: {node}}}
spec:
  tier: fog
  runtimes: [vnf]
  capacity: {{cpu: "2", memory: 2Gi}}
---
apiVersion: flyslice.io/v1alpha1
kind: NFPackage
metadata: {{name: camera, namespace: {ns}}}
spec:
  function: camera
  flavors:
    vnf:
      image: '{image}'
{signature}      resources: {{cpu: 100m, memory: 64Mi}}
---
apiVersion: flyslice.io/v1alpha1
kind: NetworkService
metadata: {{name: video, namespace: {ns}}}
spec:
  provides: [video]
  graph:
    roles:
      - {{name: camera, package: camera, scope: perSlice, tiers: [fog]}}
---
apiVersion: flyslice.io/v1alpha1
kind: Slice
metadata: {{name: cams, namespace: {ns}}}
spec:
  services: [video]
  qos: {{maxLatencyMs: 50}}
  attachments: [{{node: {node}}}]
"""


def validated(ns: str, node: str, image: str, signature: str, policy: set[str]) -> ValidationResult:
    line = f"      imageSignature: {signature}\n" if signature else ""
    found, errors = load_text(MANIFESTS.format(ns=ns, node=node, image=image, signature=line), "cams.yaml")
    assert errors == []
    return validate(found, policy=PackagePolicy(frozenset(policy)))


def instances(result: ValidationResult) -> list[dict[str, Any]]:
    """The NFInstance objects the control plane writes for a valid revision."""
    assert result.ok, [str(e) for e in result.errors]
    out = []
    for sp in plan(result.catalog).slices:
        assert sp.service is not None and sp.demand is not None, sp.placement.reasons
        out += [
            a.as_object()
            for a in slice_actions(result.catalog, sp.slice, sp.service, sp.demand, sp.placement)
        ]
    return out


def status(env: kubeenv.KubeEnv, ns: str, name: str) -> dict[str, Any]:
    got: dict[str, Any] = env.kubectl_json("-n", ns, "get", "nfinstance", name).get("status") or {}
    return got


def pods(env: kubeenv.KubeEnv, ns: str) -> list[dict[str, Any]]:
    return [p for p in kubectl_items(env, ns, "pods") if not p["metadata"].get("deletionTimestamp")]


def test_signed_image_runs_and_a_moved_digest_is_refused_and_stopped(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    node = f"{namespace}-cam"
    # The vector cosign v2.6.5 made (tests/data/cosign/README.md): its cosign.pub, and the signature
    # cosign sign-blob made over cosign generate's payload for COSIGN_IMAGE.
    pub = COSIGN / "cosign.pub"
    signature = (COSIGN / "payload.sig").read_text().strip()
    image = COSIGN_IMAGE

    # Under the policy an image-only VNF without a signature is invalid; with one it is placed.
    unsigned = validated(namespace, node, image, "", {namespace})
    assert [e.message for e in unsigned.errors if e.object == f"NFPackage/{namespace}/camera"] == [
        f"namespace {namespace!r} requires signed packages (--require-signed-packages): an image-only vnf "
        "needs imageSignature, a cosign-compatible signature of its digest (flyslice sign-image, or "
        "cosign generate + cosign sign-blob); or add module, digest and signature"
    ]
    (nfi,) = instances(validated(namespace, node, image, signature, {namespace}))
    assert nfi["spec"]["imageSignature"] == signature and nfi["spec"]["signatureRequired"] is True
    _apply(kube_env, namespace, nfi)
    stored = kube_env.kubectl_json("-n", namespace, "get", "nfinstance", nfi["metadata"]["name"])
    assert stored["spec"]["imageSignature"] == signature  # the CRD keeps the field (not pruned)

    kubeconfig = agent_kubeconfig(kube_env, node, namespace)
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["HOME"] = str(tmp_path)
    core = client.CoreV1Api(api_client_for(str(kube_env.kubeconfig)))
    # The agent holds only the image key: no module key at all (--trusted-key), yet the namespace's
    # signatureRequired image-only VNF runs, because its image signature verifies.
    proc = subprocess.Popen(
        [sys.executable, "-m", "flyslice.operator.cli", "agent", "--kube", "--node", node,
         "--state-dir", str(tmp_path / "state"), "--kubeconfig", str(kubeconfig), "--namespace", namespace,
         "--pod-namespace", namespace, "--listen", "127.0.0.1:0", "--heartbeat", "1", "--interval", "0.5",
         "--trusted-image-key", str(pub),
         "--insecure-plaintext"],  # image signatures, not the data plane: no signer runs here
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    name = nfi["metadata"]["name"]
    try:
        with FakeKubelet(core, namespace, {node}):
            (pod,) = wait_for(lambda: pods(kube_env, namespace), 60, "the signed VNF's pod")
            assert pod["spec"]["containers"][0]["image"] == image
            assert pod["metadata"]["labels"]["flyslice.io/instance"] == name
            wait_for(lambda: status(kube_env, namespace, name).get("state") == "Running", 30, "Running")

            # The same signature on another digest (a re-pushed image, a typo, an attacker's
            # image): validation cannot tell (the keys are the agents'), the agent refuses it and
            # stops the pod of the signed version.
            moved_image = image.split("@")[0] + "@" + MOVED
            (moved,) = instances(validated(namespace, node, moved_image, signature, {namespace}))
            _apply(kube_env, namespace, moved)
            st = wait_for(
                lambda: (s := status(kube_env, namespace, name)).get("state") == "Failed" and s, 30, "refusal"
            )
            assert st["message"] == (
                f"instance {name}: package {namespace}/camera flavour vnf: image signature refused: "
                f"imageSignature does not verify for {moved_image} with any trusted key "
                f"({key_id(load_trusted_key(pub.read_bytes()))}); no pod started"
            )
            wait_for(lambda: not pods(kube_env, namespace), 30, "the signed version's pod to be stopped")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    assert pods(kube_env, namespace) == []


def test_unsigned_and_wrong_key_images_get_no_pod(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    node = f"{namespace}-cam"
    trusted = Ed25519PrivateKey.generate()  # the agents' module key signs images too
    stranger = Ed25519PrivateKey.generate()
    # Outside the policy the unsigned package is valid and planned; the agent's keys still bind it.
    (unsigned,) = instances(validated(namespace, node, IMAGE, "", set()))
    assert "imageSignature" not in unsigned["spec"] and "signatureRequired" not in unsigned["spec"]
    unsigned["metadata"]["name"] = "unsigned"
    (foreign,) = instances(validated(namespace, node, IMAGE, sign_image(IMAGE, stranger), {namespace}))
    foreign["metadata"]["name"] = "foreign"
    (signed,) = instances(validated(namespace, node, IMAGE, sign_image(IMAGE, trusted), {namespace}))
    signed["metadata"]["name"] = "signed"
    _apply(kube_env, namespace, unsigned, foreign, signed)

    api = api_client_for(str(agent_kubeconfig(kube_env, node, namespace)))
    agent = ClusterAgent(
        AgentConfig(node=node, state_dir=tmp_path / "state", trusted_keys=[trusted.public_key()]), api,
        pod_namespace=namespace, instance_namespace=namespace, heartbeat_s=0.0,
    )  # fmt: skip
    try:
        agent.sync_once()
        agent.report_status(force=True)
        prefix = f"package {namespace}/camera flavour vnf: image signature refused: "
        st = status(kube_env, namespace, "unsigned")
        assert st["state"] == "Failed"
        assert st["message"] == (
            f"instance unsigned: {prefix}image-only VNF without imageSignature, and this agent has "
            "trusted keys; no pod started"
        )
        st = status(kube_env, namespace, "foreign")
        assert st["state"] == "Failed"
        assert st["message"] == (
            f"instance foreign: {prefix}imageSignature does not verify for {IMAGE} with any trusted key "
            f"({key_id(trusted.public_key())}); no pod started"
        )
        # Only the image signed by the trusted key has a pod.
        assert [p["metadata"]["labels"]["flyslice.io/instance"] for p in pods(kube_env, namespace)] == [
            "signed"
        ]
    finally:
        agent.stop()
