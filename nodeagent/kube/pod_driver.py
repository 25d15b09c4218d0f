"""Kubernetes pod driver: a VNF is a pod pinned to this node (``spec.nodeName``), labelled with its
NFInstance, running the NF-runner image with the instance spec in ``FLYSLICE_SPEC``.

The pod name carries the spec fingerprint (``nf-<instance>-<fp8>``), so an update creates the new
pod before deleting the old one, and an agent restart re-adopts pods by label instead of starting
them twice. ``pod_manifest`` is pure (unit-tested); the driver talks to the API server through the
official ``kubernetes`` client.

When the agent's data plane is mutual TLS, each pod gets its own certificate naming only its slice:
the agent makes a key, asks the operator's signer for ``flyslice://slice/<slice>`` with a CSR that
points at the NFInstance (signed only if that instance is on this agent's node), and puts key,
certificate and the cluster CA into the Secret ``flyslice-tls-<pod>`` that the pod mounts and its
runner reads with ``--tls-dir``. At 2/3 of that certificate's lifetime the agent makes a new key and
CSR and replaces the Secret (:meth:`KubernetesPodDriver.renew_certificates`); the kubelet updates the
mounted files and the runner loads them without a restart.

Before it creates a pod, the driver verifies the flavour's ``imageSignature`` (cosign-compatible,
``runtime/image_signatures.py``) with the agent's keys: always when the agent has keys and the spec
carries one, and as a requirement for an image-only VNF when the agent has keys or the namespace
requires signed packages. A refused spec starts nothing, and a pod of this instance already running
(an earlier version) is stopped, as a runner whose module no longer verifies is.

The driver reads this agent's pods from one LIST (:class:`PodSnapshot`): the agent refreshes it once
per converge, every other read reuses it (at most ``max_age_s`` old), and the driver's own creates and
deletes are written into it. Before, every ``names()`` and ``observe()`` was a LIST of its own, and
the agent called ``names()`` once per fNF in each sync (27-29 LISTs per fNF created at 20 fNFs).

Tenants of a shared VNF instance (``spec.sharedInstance``) run in ONE pod per instance:
:mod:`flyslice.nodeagent.kube.shared_pods`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.runtime.drivers import VnfObservation
from flyslice.nodeagent.spec import InstanceSpec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from flyslice.nodeagent.dataplane.tls import TlsFiles
    from flyslice.nodeagent.runtime.image_signatures import TrustedKey

log = logging.getLogger("flyslice.nodeagent.pods")

MANAGED_BY = "flyslice-nodeagent"
DATA_PORT = 7000
#: Where a pod's NFs keep their files (``FLYSLICE_DATA_DIR`` of the runner).
DATA_MOUNT = "/var/lib/flyslice/data"
#: Where a pod's data-plane credentials (ca.pem, cert.pem, key.pem) are mounted (``--tls-dir``).
TLS_MOUNT = "/var/run/flyslice/tls"
#: Secrets with this prefix are the only ones an agent may create, delete or mount (admission).
TLS_SECRET_PREFIX = "flyslice-tls-"
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    v = _LABEL_BAD.sub("-", value)[:63]
    return v.strip("-_.")


def pod_name(spec: InstanceSpec) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", spec.name.lower())[:50].strip("-")
    return f"nf-{base}-{spec.fingerprint[:8]}"


def tls_secret_name(spec: InstanceSpec) -> str:
    """The Secret holding the data-plane credentials of ``spec``'s pod (one per pod version)."""
    return TLS_SECRET_PREFIX + pod_name(spec)


def _owner(spec: InstanceSpec, uid: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "flyslice.io/v1alpha1",
            "kind": "NFInstance",
            "name": spec.name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]


def tls_secret_manifest(
    spec: InstanceSpec, *, node_name: str, namespace: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
    owner_uid: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The Secret with the pod's slice certificate, its key and the cluster CA (``--tls-dir`` layout)."""
    import base64

    metadata: dict[str, Any] = {
        "name": tls_secret_name(spec),
        "namespace": namespace,
        "labels": {
            "app.kubernetes.io/name": "flyslice-nf",
            "app.kubernetes.io/managed-by": MANAGED_BY,
            "flyslice.io/instance": label_value(spec.name),
            "flyslice.io/slice": label_value(spec.slice),
            # The admission policy lets an agent create and delete only Secrets of its own node.
            "flyslice.io/node": label_value(node_name),
        },
        "annotations": {"flyslice.io/nfinstance": f"{spec.namespace}/{spec.name}"},
    }
    if owner_uid:
        metadata["ownerReferences"] = _owner(spec, owner_uid)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in
                 (("ca.pem", ca_pem), ("cert.pem", cert_pem), ("key.pem", key_pem))},
    }  # fmt: skip


def pod_manifest(
    spec: InstanceSpec,
    *,
    node_name: str,
    namespace: str,
    agent_address: str,
    default_image: str = "ghcr.io/flyslice/nf-runner:0.1",
    owner_uid: str | None = None,
    trusted_keys_b64: Sequence[str] = (),
    tls_secret: str | None = None,
) -> dict[str, Any]:
    """The pod that runs ``spec`` as a VNF on Kubernetes node ``node_name``.

    ``tls_secret``: the Secret with the pod's slice certificate; its runner then listens and sends
    over mutual TLS only.

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
        if tls_secret:
            args += ["--tls-dir", TLS_MOUNT]
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
    volumes: list[dict[str, Any]] = [{"name": "data", "emptyDir": {}}]
    if tls_secret:
        container["volumeMounts"].append({"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True})
        # 0444: the runner's user is the image's, not known here; the Secret volume is visible to
        # this pod's one container only, so world-readable inside it exposes the key to nobody else.
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret, "defaultMode": 0o444}})
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
        metadata["ownerReferences"] = _owner(spec, owner_uid)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node_name,
            "restartPolicy": "Always",
            # NF code never talks to the API server: no service-account token in its file system.
            "automountServiceAccountToken": False,
            "containers": [container],
            "volumes": volumes,
        },
    }


def _dict(obj: Any) -> dict[str, Any]:
    """An API object as the JSON dict the API server sent (a model object is serialized)."""
    if isinstance(obj, dict):
        return obj
    from kubernetes.client import ApiClient

    data: dict[str, Any] = ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
    return data


def _raw_body(resp: Any) -> bytes | str | None:
    """The body of a call made with ``_preload_content=False`` (the connection goes back to the pool);
    None for a client that returned a deserialized model."""
    data = getattr(resp, "data", None)
    release = getattr(resp, "release_conn", None)
    if callable(release):
        release()
    return data if isinstance(data, bytes | str) else None


def _response_dict(resp: Any) -> dict[str, Any]:
    """The body of a call made with ``_preload_content=False`` (or a deserialized model), as a dict."""
    data = _raw_body(resp)
    if data is not None:
        body: dict[str, Any] = json.loads(data)
        return body
    return _dict(resp)


class PodSnapshot:
    """This agent's pods (its label, its node), from one LIST reused until it is ``max_age_s`` old.

    :meth:`refresh` lists now (the agent calls it once per converge); :meth:`pods` lists only when the
    snapshot is older than ``max_age_s`` -- and when that LIST fails but an older snapshot exists, it
    returns that one (the API server unreachable: the agent goes on with what it last saw instead of
    failing the whole converge). :meth:`put` and :meth:`drop` record the driver's own writes, so a pod
    it just created or deleted is seen at once. Pods are kept as the JSON dicts the API server sent:
    deserializing them into model objects cost more than the LIST itself.
    """

    def __init__(self, core: Any, namespace: str, node_name: str, *, max_age_s: float = 1.0) -> None:
        self.core = core
        self.namespace = namespace
        self.node_name = node_name
        self.max_age_s = max_age_s
        #: LISTs made so far (tests and benchmarks read it).
        self.lists = 0
        self._pods: dict[str, dict[str, Any]] = {}
        self._at: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> None:
        resp = self.core.list_namespaced_pod(
            self.namespace,
            label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}",
            field_selector=f"spec.nodeName={self.node_name}",
            _preload_content=False,
        )
        data = _raw_body(resp)
        if data is not None:
            items = list(json.loads(data).get("items") or [])
        else:  # a client that returned the deserialized list
            items = [_dict(p) for p in resp.items or []]
        with self._lock:
            self.lists += 1
            self._pods = {p["metadata"]["name"]: p for p in items}
            self._at = time.monotonic()

    def pods(self) -> list[dict[str, Any]]:
        """The pods not being deleted."""
        if self._at is None or time.monotonic() - self._at > self.max_age_s:
            try:
                self.refresh()
            except Exception as exc:
                if self._at is None:
                    raise
                log.warning("listing this node's VNF pods failed; using the list of %.0f s ago: %s",
                            time.monotonic() - self._at, getattr(exc, "reason", None) or exc)  # fmt: skip
        with self._lock:
            return [p for p in self._pods.values() if not p["metadata"].get("deletionTimestamp")]

    def put(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._pods[pod["metadata"]["name"]] = pod

    def drop(self, name: str) -> None:
        with self._lock:
            self._pods.pop(name, None)


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
    # The kubelet restarts a crashed or killed runner in place (restartPolicy Always): counted here.
    restarts = sum(int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or [])
    if restarts:
        return replace(_observe_phase(phase, ready, status, message, address), restarts=restarts)
    return _observe_phase(phase, ready, status, message, address)


def _observe_phase(
    phase: str, ready: bool, status: dict[str, Any], message: str, address: str
) -> VnfObservation:
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


class ImageRefused(ValueError):
    """A VNF pod not created because its image signature is missing or does not verify; the
    message names the instance, package, flavour and the problem (it becomes the status message)."""

    def __init__(self, spec: InstanceSpec, problem: str) -> None:
        super().__init__(
            f"instance {spec.name}: package {spec.namespace}/{spec.package} flavour {spec.flavor}: "
            f"image signature refused: {problem}; no pod started"
        )


class KubernetesPodDriver:
    """VNFs as pods on this node. ``core`` is a ``kubernetes.client.CoreV1Api``."""

    def __init__(self, core: Any, *, namespace: str, node_name: str, agent_address: str,
                 default_image: str = "ghcr.io/flyslice/nf-runner:0.1",
                 trusted_keys: Sequence[Ed25519PublicKey] = (), tls: TlsFiles | None = None,
                 cert_timeout_s: float = 30.0, image_keys: Sequence[TrustedKey] = ()) -> None:  # fmt: skip
        from flyslice.nodeagent.kube.shared_pods import SharedPods

        self.core = core
        #: What image signatures verify with: the module keys (ed25519) and the image-only keys
        #: (``--trusted-image-key``: ed25519 or ECDSA P-256, e.g. cosign.pub).
        self.image_keys: list[TrustedKey] = [*trusted_keys, *image_keys]
        #: The agent's data-plane credentials: with them, every pod gets a slice certificate (CSR to
        #: the operator's signer) and the agent's CA, so the agent and its pods speak mutual TLS only.
        self.tls = tls
        self.cert_timeout_s = cert_timeout_s
        self.trusted_keys_b64: list[str] = []
        if trusted_keys:
            from flyslice.nodeagent.runtime.modules import public_key_b64

            self.trusted_keys_b64 = sorted(public_key_b64(k) for k in trusted_keys)
        self.namespace = namespace
        self.node_name = node_name
        self.agent_address = agent_address
        self.default_image = default_image
        self.uids: dict[str, str] = {}  # optional NFInstance uids for ownerReferences
        #: instance -> (spec of its pod, when its certificate is due for renewal (epoch seconds),
        #: the wait before the next attempt after a failure). See :meth:`renew_certificates`.
        self.tls_due: dict[str, tuple[InstanceSpec, float, float]] = {}
        self.tls_renewals = 0
        self.tls_renewal_failures = 0
        #: First wait after a failed pod-certificate renewal; it doubles up to 10 minutes.
        self.tls_retry_s = 30.0
        #: This agent's pods, listed once per converge (see :class:`PodSnapshot`).
        self.snapshot = PodSnapshot(core, namespace, node_name)
        #: Shared instances: one pod per ``sharedInstance.name`` (``shared_pods.py``).
        self.shared = SharedPods(self)

    def refresh(self) -> None:
        """List this node's pods now; the agent calls it once at the start of each converge."""
        self.snapshot.refresh()

    def _pods(self, instance: str | None = None) -> list[dict[str, Any]]:
        pods = self.snapshot.pods()
        if instance is None:
            return pods
        want = label_value(instance)
        return [p for p in pods if (p["metadata"].get("labels") or {}).get("flyslice.io/instance") == want]

    def ensure(self, spec: InstanceSpec) -> None:

        try:
            self.verify_image(spec)
        except ImageRefused:
            # Nothing of a refused spec runs: a pod of an earlier version of it is stopped too.
            self.remove(spec.name)
            raise
        want = pod_name(spec)
        pods = self._pods(spec.name)
        exists = any(p["metadata"]["name"] == want for p in pods)
        if self.tls is not None and spec.name not in self.tls_due and exists:
            # A pod this agent adopted (it restarted): it cannot read the pod's Secret to learn when
            # the certificate expires, so it renews it now, once, and then on schedule.
            self.tls_due[spec.name] = (spec, 0.0, self.tls_retry_s)
        if not exists:
            secret = self._issue_tls_secret(spec) if self.tls is not None else None
            body = pod_manifest(
                spec, node_name=self.node_name, namespace=self.namespace, agent_address=self.agent_address,
                default_image=self.default_image, owner_uid=self.uids.get(spec.name),
                trusted_keys_b64=self.trusted_keys_b64, tls_secret=secret,
            )  # fmt: skip
            self.create_pod(body)
        for p in pods:  # make-before-break: old versions go once the new pod exists
            if p["metadata"]["name"] != want:
                self._delete(p["metadata"]["name"])

    def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the pod ``body`` (already there: what we want, concurrently created) and record it."""
        from kubernetes.client.exceptions import ApiException

        try:
            pod = _response_dict(
                self.core.create_namespaced_pod(self.namespace, body, _preload_content=False)
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: created concurrently -- already what we want
                raise
            pod = body
        self.snapshot.put(pod)
        return pod

    def verify_image(self, spec: InstanceSpec) -> str:
        """Check ``spec``'s image signature where this agent's policy asks for one; the verifying
        key's id, or "" when nothing was to be checked. Raises :class:`ImageRefused`."""
        from flyslice.nodeagent.runtime.image_signatures import ImageSignatureError, verify_image_signature

        image_only = not spec.module
        if not spec.image_signature:
            if image_only and (self.image_keys or spec.signature_required):
                # No module signature covers an image-only VNF: its image signature is its only proof.
                why = (
                    "its namespace requires signed packages"
                    if spec.signature_required
                    else "this agent has trusted keys"
                )
                raise ImageRefused(spec, f"image-only VNF without imageSignature, and {why}")
            return ""
        if not self.image_keys:
            if spec.signature_required:
                raise ImageRefused(
                    spec, "no trusted key on this agent to verify imageSignature with "
                    "(start it with --trusted-key or --trusted-image-key)",
                )  # fmt: skip
            return ""  # recorded, not checkable here: the same as a module signature without keys
        try:
            return verify_image_signature(spec.image, spec.image_signature, self.image_keys)
        except ImageSignatureError as exc:
            raise ImageRefused(spec, str(exc)) from exc

    def _issue_tls_secret(self, spec: InstanceSpec, timeout_s: float | None = None) -> str:
        """A fresh key and slice certificate for ``spec``'s next pod, in its Secret; the Secret's name.

        Issued per pod version (a new key at every start, update or re-creation), like a runner's
        under ``flyslice up``. Raises :class:`CertificateUnavailable` when the signer refuses.
        """
        from flyslice.nodeagent.kube.dataplane_certs import obtain_slice_certificate

        assert self.tls is not None
        cert_pem, key_pem = obtain_slice_certificate(
            self.core.api_client, spec.node or self.node_name, spec.namespace, spec.name, spec.slice,
            timeout_s=self.cert_timeout_s if timeout_s is None else timeout_s,
        )  # fmt: skip
        body = tls_secret_manifest(
            spec, node_name=self.node_name, namespace=self.namespace, ca_pem=self.tls.ca.read_bytes(),
            cert_pem=cert_pem, key_pem=key_pem, owner_uid=self.uids.get(spec.name),
        )  # fmt: skip
        from flyslice.nodeagent.dataplane.tls import renewal_due

        due = renewal_due(cert_pem).timestamp()
        self.put_secret(body)
        self.tls_due[spec.name] = (spec, due, self.tls_retry_s)
        return str(body["metadata"]["name"])

    def put_secret(self, body: dict[str, Any]) -> None:
        """Create the Secret ``body``, replacing one of that name."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.create_namespaced_secret(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Left by an earlier attempt whose pod was never created, or a renewal: the agent may
            # neither read nor update Secrets (the CA's lives in this namespace), so it replaces it.
            # A running pod keeps its mounted files meanwhile; the kubelet projects the new ones.
            self._delete_secret(str(body["metadata"]["name"]))
            self.core.create_namespaced_secret(self.namespace, body)

    def renew_certificates(self, now: float | None = None, *, limit: int = 1, timeout_s: float = 10.0) -> int:
        """Renew pod certificates that are due (2/3 of their lifetime): a new key and CSR as at pod
        creation, and the pod's Secret replaced with them; the kubelet then updates the mounted files
        and the runner loads them for new connections (``TlsFiles.reload_if_changed``), without a pod
        restart. A failure keeps the old certificate and is retried with backoff. How many were renewed.
        A shared instance's pod gets its new certificate from the agent directly as well
        (``SharedPods.renew``).

        Called from the agent's sync loop: at most ``limit`` attempts per call, each waiting at most
        ``timeout_s`` for the signer, so a signer that does not answer delays a round (and the
        heartbeat after it) by at most that, well within the operator's heartbeat timeout (30 s).
        """
        now = time.time() if now is None else now
        renewed = attempts = 0
        for name, (spec, due, backoff) in list(self.tls_due.items()):
            if due > now or attempts >= limit:
                continue
            if not any(p["metadata"]["name"] == pod_name(spec) for p in self._pods(name)):
                self.tls_due.pop(name, None)  # pod gone or replaced by a version with its own Secret
                continue
            attempts += 1
            try:
                self._issue_tls_secret(spec, timeout_s)
            except Exception as exc:  # signer down or denied, API unreachable: the old one stays
                self.tls_renewal_failures += 1
                self.tls_due[name] = (spec, now + backoff, min(backoff * 2, 600.0))
                log.warning("VNF pod %s: renewing its certificate failed (retry in %gs): %s",
                            pod_name(spec), backoff, exc)  # fmt: skip
                continue
            self.tls_renewals += 1
            renewed += 1
            log.info("VNF pod %s: renewed its data-plane certificate", pod_name(spec))
        if attempts < limit:
            renewed += self.shared.renew(now, limit=limit - attempts, timeout_s=timeout_s)
        return renewed

    def _delete_secret(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.snapshot.drop(name)
        if self.tls is not None:  # the pod's credentials go with it
            self._delete_secret(TLS_SECRET_PREFIX + name)

    def remove(self, name: str) -> None:
        self.tls_due.pop(name, None)
        for p in self._pods(name):
            self._delete(p["metadata"]["name"])

    def observe(self, name: str) -> VnfObservation | None:
        shared = self.shared.tenant_of(name)
        if shared is not None:
            return self.shared.observe_tenant(name, shared)
        pods = self._pods(name)
        if not pods:
            return None
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        return observe_pod(pods[0])

    def names(self) -> list[str]:
        labels = (p["metadata"].get("labels") or {} for p in self._pods())
        return sorted({lb.get("flyslice.io/instance", "") for lb in labels} - {""})

    # -- shared instances: one pod, several tenants (the same interface as LocalProcessDriver) --------

    def ensure_shared(self, name: str, specs: Sequence[InstanceSpec]) -> None:
        self.shared.ensure(name, list(specs))

    def remove_shared(self, name: str) -> None:
        self.shared.remove(name)

    def shared_names(self) -> list[str]:
        return self.shared.names()

    def tenant_of(self, tenant: str) -> str | None:
        return self.shared.tenant_of(tenant)

    def observe_shared(self, name: str) -> VnfObservation | None:
        return self.shared.observe(name)

    def shared_status(self, name: str) -> dict[str, Any]:
        return self.shared.status(name)

    def close(self) -> None:
        return None
