"""Shared VNF instances in cluster mode: ONE pod per ``spec.sharedInstance.name``, whose tenants the
agent attaches and detaches without restarting it.

The pod runs the NF runner with ``--tenants-control``: it verifies the module, serves its data-plane
port and has no tenant until the agent sends them. The agent sends the tenant set -- every tenant's
InstanceSpec -- as a control request on that port (``transport.control_request``), and the runner makes
its tenants equal to it between two batches, exactly as the embedded runner follows its tenants file
(``runtime/tenants.py``). A pod spec cannot change after creation, which is why the tenants do not
travel in it: a ConfigMap or annotation projected into the pod reaches it only when the kubelet next
syncs the pod (up to a minute), and an agent may not update either. The agent re-sends the set when
the runner reports another digest than the agent's (a new or leaving tenant, a container restart) and
otherwise asks the runner for its status about once a second; each tenant's state, message, counters
and latency in its NFInstance status come from that answer, so they are its own.

Who may set the tenants: the request carries the pod's control token (a random value the agent puts in
the pod's environment and reads back from the pod after an agent restart) and, on mutual TLS, must
come from this node's agent certificate (``flyslice://agent/<node>``). With mutual TLS the pod's
certificate names every tenant's slice (one CSR listing all tenants; the operator's signer checks each
is a VNF on this node and that they are tenants of one shared instance). When the slices change the
agent obtains a new certificate, replaces the pod's Secret and sends the certificate and key with the
tenant set: the runner loads them before the new tenant's first output (the kubelet would project the
new Secret only at its next sync of the pod). Renewal at 2/3 of the lifetime goes the same way.

Not done: a shared pod has no ownerReference (its owners would change with its tenants, and an agent
may not update pods), so a pod whose last tenant is deleted while its agent is down stays until the
agent is back; the pod's resources are the instance's plus ``perTenant`` for the tenants it was created
with (a running pod cannot be resized by an agent); no state is handed over when the pod is replaced
(a change of the shared code or config), as for any VNF pod.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flyslice.nodeagent.dataplane.transport import control_request
from flyslice.nodeagent.kube.pod_driver import (
    DATA_PORT,
    MANAGED_BY,
    TLS_SECRET_PREFIX,
    observe_pod,
    pod_manifest,
)
from flyslice.nodeagent.quantity import parse_memory
from flyslice.nodeagent.runtime.drivers import VnfObservation, shared_base, shared_key
from flyslice.nodeagent.runtime.tenants import CONTROL_TOKEN_ENV, tenants_digest
from flyslice.nodeagent.spec import InstanceSpec

if TYPE_CHECKING:
    from flyslice.nodeagent.kube.pod_driver import KubernetesPodDriver

log = logging.getLogger("flyslice.nodeagent.pods")

#: Label (the instance's :func:`shared_key`) and annotation (its full name) of a shared instance's pod.
SHARED_LABEL = "flyslice.io/shared-instance"
SHARED_ANNOTATION = "flyslice.io/shared-instance"
#: Writable copy of the pod's credentials, where the agent's later ones are written (an emptyDir).
TLS_WORK_MOUNT = "/var/run/flyslice/tls-live"
#: How often the agent asks a shared runner for its tenants' status.
STATUS_EVERY_S = 1.0
#: A runner that answered no control request for this long (its pod Running) is Failed: the agent
#: replaces the pod, as it restarts an embedded shared runner that stops answering its probes.
UNRESPONSIVE_S = 20.0
CONTROL_TIMEOUT_S = 3.0


def shared_pod_name(name: str, base: InstanceSpec) -> str:
    """``nf-s-<20 hex of the name>-<fp8 of the shared code/config>``: a new pod only when those change."""
    return f"nf-{shared_key(name)}-{base.fingerprint[:8]}"


def _millicores(cpu: str) -> int:
    return int(cpu[:-1]) if cpu.endswith("m") else round(float(cpu) * 1000)


def shared_pod_manifest(
    name: str,
    specs: list[InstanceSpec],
    *,
    token: str,
    node_name: str,
    namespace: str,
    agent_address: str,
    default_image: str = "ghcr.io/flyslice/nf-runner:0.1",
    trusted_keys_b64: list[str] | None = None,
    tls_secret: str | None = None,
) -> dict[str, Any]:
    """The pod of shared instance ``name``, created for tenants ``specs`` (which agree on code and config).

    Its runner's spec (``FLYSLICE_SPEC``) is the instance's own (``shared_base``): nothing of one tenant.
    """
    first = specs[0]
    assert first.shared is not None
    key = shared_key(name)
    base = shared_base(key, first)
    body = pod_manifest(
        base, node_name=node_name, namespace=namespace, agent_address=agent_address,
        default_image=default_image, trusted_keys_b64=trusted_keys_b64 or (), tls_secret=tls_secret,
    )  # fmt: skip
    meta = body["metadata"]
    meta["name"] = shared_pod_name(name, base)
    labels = meta["labels"]
    for tenant_label in ("flyslice.io/instance", "flyslice.io/slice", "flyslice.io/role"):
        labels.pop(tenant_label, None)
    labels[SHARED_LABEL] = key
    labels["app.kubernetes.io/managed-by"] = MANAGED_BY
    meta["annotations"].pop("flyslice.io/nfinstance", None)
    meta["annotations"][SHARED_ANNOTATION] = name
    container = body["spec"]["containers"][0]
    container["args"] = [*container.get("args", []), "--tenants-control"]
    container["env"].append({"name": CONTROL_TOKEN_ENV, "value": token})
    if tls_secret:
        container["args"] += ["--tls-work-dir", TLS_WORK_MOUNT]
        container["volumeMounts"].append({"name": "tls-work", "mountPath": TLS_WORK_MOUNT})
        body["spec"]["volumes"].append({"name": "tls-work", "emptyDir": {"medium": "Memory"}})
    per = first.shared
    n = len(specs)
    requests: dict[str, str] = {}
    if first.cpu or per.per_tenant_cpu:
        requests["cpu"] = f"{_millicores(first.cpu or '0') + _millicores(per.per_tenant_cpu or '0') * n}m"
    if first.memory or per.per_tenant_memory:
        requests["memory"] = str(parse_memory(first.memory or 0) + per.per_tenant_memory_bytes * n)
    if requests:
        resources: dict[str, dict[str, str]] = {"requests": requests}
        if "memory" in requests:
            resources["limits"] = {"memory": requests["memory"]}
        container["resources"] = resources
    return body


def _env(pod: dict[str, Any], key: str) -> str:
    for c in pod.get("spec", {}).get("containers") or []:
        for e in c.get("env") or []:
            if e.get("name") == key:
                return str(e.get("value") or "")
    return ""


def _tls_secret_body(
    secret: str, name: str, *, node: str, namespace: str, ca: bytes, cert: bytes, key: bytes
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "flyslice-nf",
                "app.kubernetes.io/managed-by": MANAGED_BY,
                SHARED_LABEL: shared_key(name),
                "flyslice.io/node": re.sub(r"[^A-Za-z0-9_.-]", "-", node)[:63].strip("-_."),
            },
            "annotations": {SHARED_ANNOTATION: name},
        },
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in
                 (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key))},
    }  # fmt: skip


@dataclass
class _Shared:
    """What the agent knows of one shared instance's pod and runner."""

    name: str
    specs: list[InstanceSpec]
    digest: str = ""
    generation: int = 0
    pod: str = ""
    uid: str = ""
    token: str = ""
    #: The runner's last answer (its digest, each tenant's status, the instance's queue).
    reply: dict[str, Any] | None = None
    answered: float | None = None  # monotonic time of that answer
    seen: float | None = None  # when the current pod was first seen with an address
    asked: float = 0.0
    retry_at: float = 0.0
    backoff: float = 0.25
    error: str = ""
    #: The pod's certificate and key (mutual TLS), for the slices in ``slices``; sent with the tenants.
    creds: tuple[bytes, bytes] | None = None
    slices: tuple[str, ...] = ()
    #: The runner must be sent the tenants (and credentials) again, whatever digest it reports.
    resend: bool = False
    tls_due: float = 0.0
    tls_backoff: float = 30.0
    tenants: set[str] = field(default_factory=set)


class SharedPods:
    """The pod driver's shared instances (``KubernetesPodDriver.ensure_shared`` and friends)."""

    def __init__(self, driver: KubernetesPodDriver) -> None:
        self.driver = driver
        self.instances: dict[str, _Shared] = {}

    # -- pods -------------------------------------------------------------------------------------

    def _pods(self, name: str) -> list[dict[str, Any]]:
        key = shared_key(name)
        return [
            p
            for p in self.driver.snapshot.pods()
            if (p["metadata"].get("labels") or {}).get(SHARED_LABEL) == key
        ]

    def names(self) -> list[str]:
        """Shared instances this agent serves, and those whose pods it finds (after a restart)."""
        found = {
            str((p["metadata"].get("annotations") or {}).get(SHARED_ANNOTATION, ""))
            for p in self.driver.snapshot.pods()
            if (p["metadata"].get("labels") or {}).get(SHARED_LABEL)
        }
        return sorted((found | set(self.instances)) - {""})

    def tenant_of(self, tenant: str) -> str | None:
        for name, inst in list(self.instances.items()):
            if tenant in inst.tenants:
                return name
        return None

    def ensure(self, name: str, specs: list[InstanceSpec]) -> None:
        """One pod runs ``name`` for exactly these tenants: created with the first, told of each change."""
        drv = self.driver
        drv.verify_image(specs[0])  # the tenants agree on the image (the agent checked): one check
        if not specs[0].module:
            raise ValueError(
                f"shared instance {name}: a shared pod runs the NF runner (vnf.module); an image-only "
                "VNF cannot take tenants"
            )
        base = shared_base(shared_key(name), specs[0])
        want = shared_pod_name(name, base)
        inst = self.instances.get(name) or _Shared(name, [])
        self.instances[name] = inst
        inst.specs = list(specs)
        inst.tenants = {s.name for s in specs}
        inst.digest = tenants_digest(inst.specs)
        pods = self._pods(name)
        current = next((p for p in pods if p["metadata"]["name"] == want), None)
        if current is None:
            current = self._create(inst, want)
        elif inst.pod != want or inst.uid != current["metadata"].get("uid", ""):
            self._adopt(inst, current)
        for p in pods:  # make-before-break: an older version goes once the new pod exists
            if p["metadata"]["name"] != want:
                drv._delete(p["metadata"]["name"])
        self._converge_runner(inst, current)

    def _create(self, inst: _Shared, pod: str) -> dict[str, Any]:
        drv = self.driver
        token = secrets.token_urlsafe(24)
        secret = None
        if drv.tls is not None:
            self._issue(inst)
            assert inst.creds is not None
            secret = TLS_SECRET_PREFIX + pod
            inst.pod = pod
            self._replace_secret(inst)
        body = shared_pod_manifest(
            inst.name, inst.specs, token=token, node_name=drv.node_name, namespace=drv.namespace,
            agent_address=drv.agent_address, default_image=drv.default_image,
            trusted_keys_b64=drv.trusted_keys_b64, tls_secret=secret,
        )  # fmt: skip
        created = drv.create_pod(body)
        if created is body:  # 409: a pod of that name existed already (not in our list yet)
            created = next((p for p in self._pods(inst.name) if p["metadata"]["name"] == pod), body)
            self._adopt(inst, created)
        else:
            inst.pod, inst.uid, inst.token = pod, str(created["metadata"].get("uid", "")), token
            inst.reply = inst.answered = inst.seen = None
            inst.resend = True
        log.info("shared instance %s: created pod %s for %d tenant(s)", inst.name, pod, len(inst.specs))
        return created

    def _adopt(self, inst: _Shared, pod: dict[str, Any]) -> None:
        """A pod this agent did not create in this life (it restarted) or one re-created by others: its
        token comes from the pod; its runner's digest tells whether the tenants must be sent again."""
        inst.pod = pod["metadata"]["name"]
        inst.uid = str(pod["metadata"].get("uid", ""))
        inst.token = _env(pod, CONTROL_TOKEN_ENV)
        inst.reply = inst.answered = inst.seen = None
        inst.retry_at = 0.0
        if self.driver.tls is not None:
            # The agent cannot read the pod's Secret: it does not hold the key the runner uses, so a
            # new certificate is issued and sent now (and then renewed on schedule).
            inst.creds, inst.resend = None, True

    def _issue(self, inst: _Shared, timeout_s: float | None = None) -> None:
        """A new key and certificate naming every tenant's slice (CSR to the operator's signer)."""
        from flyslice.nodeagent.dataplane.tls import renewal_due
        from flyslice.nodeagent.kube.dataplane_certs import obtain_shared_certificate

        drv = self.driver
        node = inst.specs[0].node or drv.node_name
        cert, key = obtain_shared_certificate(
            drv.core.api_client, node, [(s.namespace, s.name, s.slice) for s in inst.specs],
            shared_key(inst.name), timeout_s=drv.cert_timeout_s if timeout_s is None else timeout_s,
        )  # fmt: skip
        inst.creds = (cert, key)
        inst.slices = tuple(sorted({s.slice for s in inst.specs}))
        inst.tls_due, inst.tls_backoff = renewal_due(cert).timestamp(), drv.tls_retry_s
        inst.resend = True

    def _replace_secret(self, inst: _Shared) -> None:
        """The pod's Secret holds the certificate it starts with after a container restart."""
        drv = self.driver
        assert drv.tls is not None and inst.creds is not None
        body = _tls_secret_body(
            TLS_SECRET_PREFIX + inst.pod, inst.name, node=drv.node_name, namespace=drv.namespace,
            ca=drv.tls.ca.read_bytes(), cert=inst.creds[0], key=inst.creds[1],
        )  # fmt: skip
        drv.put_secret(body)

    def _converge_runner(self, inst: _Shared, pod: dict[str, Any]) -> None:
        """Send the tenants when the runner's differ; otherwise refresh its status (once a second)."""
        drv = self.driver
        status = pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") != "Running":
            return
        now = time.monotonic()
        if inst.seen is None:
            inst.seen = now
        if now < inst.retry_at:
            return
        if drv.tls is not None and (
            inst.creds is None or inst.slices != tuple(sorted({s.slice for s in inst.specs}))
        ):
            # The slices changed (or the agent restarted): a certificate for exactly the new set first.
            self._issue(inst)
            self._replace_secret(inst)
        send = inst.resend or inst.reply is None or inst.reply.get("digest") != inst.digest
        if not send and now - inst.asked < STATUS_EVERY_S:
            return
        request: dict[str, Any] = {"op": "status", "token": inst.token}
        if send:
            inst.generation += 1
            request = {
                "op": "tenants", "token": inst.token, "generation": inst.generation, "digest": inst.digest,
                "tenants": [s.to_dict() for s in inst.specs],
            }  # fmt: skip
            if drv.tls is not None and inst.creds is not None:
                request["tls"] = {
                    "ca": drv.tls.ca.read_text(),
                    "cert": inst.creds[0].decode(),
                    "key": inst.creds[1].decode(),
                }
        inst.asked = now
        try:
            reply = control_request(f"{ip}:{DATA_PORT}", request, CONTROL_TIMEOUT_S, tls=drv.tls)
        except (OSError, ValueError) as exc:  # not listening yet, restarting, unreachable
            self._failed(inst, now, f"no answer from the runner in pod {inst.pod}: {exc}")
            return
        if "error" in reply:
            self._failed(inst, now, f"the runner in pod {inst.pod} refused: {reply['error']}")
            return
        inst.reply, inst.answered, inst.error = reply, time.monotonic(), ""
        inst.backoff, inst.retry_at = 0.25, 0.0
        if send:
            inst.resend = False

    def _failed(self, inst: _Shared, now: float, why: str) -> None:
        inst.error = why
        inst.retry_at = now + inst.backoff
        inst.backoff = min(inst.backoff * 2, 5.0)
        log.debug("shared instance %s: %s", inst.name, why)

    # -- observation --------------------------------------------------------------------------------

    def _current(self, name: str) -> dict[str, Any] | None:
        inst = self.instances.get(name)
        pods = self._pods(name)
        if inst is not None:
            mine = [p for p in pods if p["metadata"]["name"] == inst.pod]
            pods = mine or pods
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        return pods[0] if pods else None

    def observe(self, name: str) -> VnfObservation | None:
        """The shared pod itself: the kubelet's view, and Failed when its runner stopped answering."""
        pod = self._current(name)
        if pod is None:
            return None
        obs = observe_pod(pod)
        inst = self.instances.get(name)
        if obs.state == "Running" and inst is not None and inst.error and inst.seen is not None:
            silent = time.monotonic() - (inst.answered or inst.seen)
            if silent > UNRESPONSIVE_S:
                return VnfObservation(
                    "Failed", f"the runner in pod {inst.pod} answered no control request for {silent:.0f}s: "
                    f"{inst.error}", address=obs.address,
                )  # fmt: skip
        return obs

    def observe_tenant(self, tenant: str, name: str) -> VnfObservation:
        """One tenant, as its runner reports it (its own state, counters and latency)."""
        inst = self.instances[name]
        pod = self.observe(name)
        if pod is None:
            return VnfObservation("Installing", f"shared instance {name}: its pod is being created")
        if pod.state != "Running":
            return VnfObservation(pod.state, f"shared instance {name} (pod {inst.pod}): {pod.message}",
                                  address=pod.address)  # fmt: skip
        reply = inst.reply
        mine = (reply.get("tenants") or {}).get(tenant) if reply is not None else None
        if reply is None or reply.get("digest") != inst.digest or not isinstance(mine, dict):
            why = f": {inst.error}" if inst.error else ""
            return VnfObservation(
                "Installing", f"joining shared instance {name} (pod {inst.pod}){why}", address=pod.address
            )
        return VnfObservation(
            state=str(mine.get("state", "Running")),
            message=str(mine.get("message", "")),
            address=pod.address,
            counters={k: int(v) for k, v in (mine.get("counters") or {}).items()},
            latency_ms=mine.get("latencyMs"),
            e2e_latency_ms=mine.get("e2eLatencyMs"),
            # The kubelet restarting the runner's container restarts every tenant of the pod.
            restarts=pod.restarts,
        )

    def status(self, name: str) -> dict[str, Any]:
        """What the runner reports of its shared instance (tenants, queue drops, builds), and its pod."""
        inst = self.instances.get(name)
        reply = (inst.reply if inst is not None else None) or {}
        shared = reply.get("shared") or {}
        doc: dict[str, Any] = dict(next(iter(shared.values()))) if isinstance(shared, dict) and shared else {}
        doc["pod"] = inst.pod if inst is not None else ""
        doc["flavor"] = "vnf"
        return doc

    # -- removal and renewal ---------------------------------------------------------------------------

    def remove(self, name: str) -> None:
        """Delete the instance's pod(s) and their Secrets (its last tenant left)."""
        self.instances.pop(name, None)
        for p in self._pods(name):
            self.driver._delete(p["metadata"]["name"])
        log.info("shared instance %s: its pod deleted", name)

    def renew(self, now: float, *, limit: int, timeout_s: float) -> int:
        """Shared pods' certificates due for renewal: new key and certificate, Secret replaced, and
        sent to the runner with its tenants at the next converge. How many were renewed."""
        if self.driver.tls is None:
            return 0
        renewed = attempts = 0
        for inst in list(self.instances.values()):
            if inst.creds is None or inst.tls_due > now or attempts >= limit:
                continue
            attempts += 1
            try:
                self._issue(inst, timeout_s)
                self._replace_secret(inst)
            except Exception as exc:  # the old certificate stays in use; retried with backoff
                self.driver.tls_renewal_failures += 1
                inst.tls_due, inst.tls_backoff = now + inst.tls_backoff, min(inst.tls_backoff * 2, 600.0)
                log.warning("shared instance %s: renewing its pod's certificate failed: %s", inst.name, exc)
                continue
            self.driver.tls_renewals += 1
            renewed += 1
        return renewed
