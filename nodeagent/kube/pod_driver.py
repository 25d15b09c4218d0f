"""Kubernetes pod driver: a VNF is a pod pinned to this node (``spec.nodeName``), labelled with its
NFInstance, running the NF-runner image with the instance spec in ``FLYSLICE_SPEC``.

The pod name carries the spec fingerprint (``nf-<instance>-<fp8>``), so an update creates the new
pod before deleting the old one, and an agent restart re-adopts pods by label instead of starting
them twice. ``pod_manifest`` is pure (unit-tested); the driver talks to the API server through the
official ``kubernetes`` client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.runtime.drivers import VnfObservation
from flyslice.nodeagent.spec import InstanceSpec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MANAGED_BY = "flyslice-nodeagent"
DATA_PORT = 7000
#: Where a pod's NFs keep their files (``FLYSLICE_DATA_DIR`` of the runner).
DATA_MOUNT = "/var/lib/flyslice/data"
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    v = _LABEL_BAD.sub("-", value)[:63]
    return v.strip("-_.")


def pod_name(spec: InstanceSpec) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", spec.name.lower())[:50].strip("-")
    return f"nf-{base}-{spec.fingerprint[:8]}"


def pod_manifest(
    spec: InstanceSpec,
    *,
    node_name: str,
    namespace: str,
    agent_address: str,
    default_image: str = "ghcr.io/flyslice/nf-runner:0.1",
    owner_uid: str | None = None,
    trusted_keys_b64: Sequence[str] = (),
) -> dict[str, Any]:
    """The pod that runs ``spec`` as a VNF on Kubernetes node ``node_name``.

    ``trusted_keys_b64`` is the agent's signing policy (``public_key_b64``): the runner in the pod
    then verifies the module's signature, as the agent does for fNFs, before any NF code runs.
    """
    labels = {
        "app.kubernetes.io/name": "flyslice-nf",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "flyslice.io/instance": label_value(spec.name),
        "flyslice.io/slice": label_value(spec.slice),
        "flyslice.io/role": label_value(spec.role),
        "flyslice.io/node": label_value(spec.node or node_name),
    }
    annotations = {
        "flyslice.io/fingerprint": spec.fingerprint,
        "flyslice.io/package": spec.package,
        "flyslice.io/nfinstance": f"{spec.namespace}/{spec.name}",
    }
    args: list[str] = []
    if spec.module:  # the NF-runner image runs the same module an fNF would
        args = ["--listen", f"0.0.0.0:{DATA_PORT}", "--uplink", agent_address]
        for key in trusted_keys_b64:
            args += ["--trusted-key-data", key]
    resources: dict[str, dict[str, str]] = {}
    if spec.cpu:
        resources.setdefault("requests", {})["cpu"] = spec.cpu
    if spec.memory:
        resources.setdefault("requests", {})["memory"] = spec.memory
        resources.setdefault("limits", {})["memory"] = spec.memory
    container: dict[str, Any] = {
        "name": "nf",
        "image": spec.image or default_image,
        "env": [
            {"name": "FLYSLICE_SPEC", "value": json.dumps(spec.to_dict(), sort_keys=True)},
            {"name": "FLYSLICE_INSTANCE", "value": spec.name},
            {"name": "FLYSLICE_DATA_DIR", "value": DATA_MOUNT},
        ],
        # The NF's files (the storage NF's database): they survive container restarts in the pod;
        # to outlive the pod, mount a PersistentVolumeClaim at the same path instead.
        "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT}],
        "ports": [{"name": "data", "containerPort": DATA_PORT, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": DATA_PORT}, "periodSeconds": 2},
    }
    if args:
        container["args"] = args
    if resources:
        container["resources"] = resources
    metadata: dict[str, Any] = {
        "name": pod_name(spec),
        "namespace": namespace,
        "labels": labels,
        "annotations": annotations,
    }
    if owner_uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "flyslice.io/v1alpha1",
                "kind": "NFInstance",
                "name": spec.name,
                "uid": owner_uid,
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node_name,
            "restartPolicy": "Always",
            "containers": [container],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }


def observe_pod(pod: dict[str, Any]) -> VnfObservation:
    """Map a pod (as a dict) to the instance state vocabulary."""
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    message = ""
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            message = f"{waiting.get('reason', '')}: {waiting.get('message', '')}".strip(": ")
    ip = status.get("podIP") or ""
    address = f"{ip}:{DATA_PORT}" if ip else ""
    if phase == "Failed":
        return VnfObservation("Failed", status.get("message") or message or "pod failed", address=address)
    if phase == "Succeeded":
        return VnfObservation("Stopped", "pod exited", address=address)
    if phase == "Running" and ready:
        return VnfObservation("Running", "", address=address)
    if message.startswith(
        ("CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError")
    ):
        return VnfObservation("Failed", message, address=address)
    return VnfObservation("Installing", message or f"pod {phase}", address=address)


class KubernetesPodDriver:
    """VNFs as pods on this node. ``core`` is a ``kubernetes.client.CoreV1Api``."""

    def __init__(self, core: Any, *, namespace: str, node_name: str, agent_address: str,
                 default_image: str = "ghcr.io/flyslice/nf-runner:0.1",
                 trusted_keys: Sequence[Ed25519PublicKey] = (), tls: bool = False) -> None:  # fmt: skip
        self.core = core
        #: The agent's data plane is mutual TLS: VNF pods would need slice certificates, which this
        #: driver does not issue yet, so they are refused rather than run on an open port.
        self.tls = tls
        self.trusted_keys_b64: list[str] = []
        if trusted_keys:
            from flyslice.nodeagent.runtime.modules import public_key_b64

            self.trusted_keys_b64 = sorted(public_key_b64(k) for k in trusted_keys)
        self.namespace = namespace
        self.node_name = node_name
        self.agent_address = agent_address
        self.default_image = default_image
        self.uids: dict[str, str] = {}  # optional NFInstance uids for ownerReferences

    def _pods(self, instance: str | None = None) -> list[Any]:
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        if instance is not None:
            selector += f",flyslice.io/instance={label_value(instance)}"
        pods = self.core.list_namespaced_pod(
            self.namespace, label_selector=selector, field_selector=f"spec.nodeName={self.node_name}"
        ).items
        return [p for p in pods if p.metadata.deletion_timestamp is None]

    def ensure(self, spec: InstanceSpec) -> None:
        from kubernetes.client.exceptions import ApiException

        if self.trusted_keys_b64 and not spec.module:
            # An image-only VNF runs code no module signature covers, and this agent verifies no
            # image signatures: under a signing policy it is refused rather than run unverified.
            raise ValueError(
                f"instance {spec.name}: a signing policy is configured, and an image-only VNF "
                "cannot be verified; give the package's vnf flavour a signed module"
            )
        if self.tls:
            raise ValueError(
                f"instance {spec.name}: this agent's data plane is mutual TLS and VNF pods get no "
                "slice certificate yet (docs/security.md); run the NF as an fNF or the agent without TLS"
            )
        want = pod_name(spec)
        pods = self._pods(spec.name)
        if not any(p.metadata.name == want for p in pods):
            body = pod_manifest(
                spec, node_name=self.node_name, namespace=self.namespace, agent_address=self.agent_address,
                default_image=self.default_image, owner_uid=self.uids.get(spec.name),
                trusted_keys_b64=self.trusted_keys_b64,
            )  # fmt: skip
            try:
                self.core.create_namespaced_pod(self.namespace, body)
            except ApiException as exc:
                if exc.status != 409:  # 409: created concurrently -- already what we want
                    raise
        for p in pods:  # make-before-break: old versions go once the new pod exists
            if p.metadata.name != want:
                self._delete(p.metadata.name)

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def remove(self, name: str) -> None:
        for p in self._pods(name):
            self._delete(p.metadata.name)

    def observe(self, name: str) -> VnfObservation | None:
        pods = self._pods(name)
        if not pods:
            return None
        pods.sort(key=lambda p: p.metadata.creation_timestamp or 0, reverse=True)
        return observe_pod(self.core.api_client.sanitize_for_serialization(pods[0]))

    def names(self) -> list[str]:
        return sorted({p.metadata.labels.get("flyslice.io/instance", "") for p in self._pods()} - {""})

    def close(self) -> None:
        return None
