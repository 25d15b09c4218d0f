"""The cluster's data-plane CA and the signer ``flyslice.io/dataplane`` (the operator's side of
:mod:`flyslice.nodeagent.kube.dataplane_certs`).

The CA lives in the Secret ``flyslice-dataplane-ca`` of the operator's namespace (``ca.pem``,
``ca.key``), created on first start and kept; its certificate alone is published in the ConfigMap of
the same name, which agents may read. The leader signs pending CertificateSigningRequests for the
signer when the requester's node -- derived exactly as in the ``flyslice-agent-node-restriction``
admission policy -- is the node the CSR names, and denies every other request with a reason.

A CSR may instead name one slice (``flyslice://slice/<slice>``): an agent asks for the certificate
of a VNF pod it is about to start. It is signed only when the NFInstance the CSR points at
(annotation ``flyslice.io/nfinstance``) is a VNF scheduled on the requester's node and belongs to
that slice -- so an agent obtains slice identities only for the VNFs placed on its own node.

The pod of a shared VNF instance serves several slices: its CSR names one ``flyslice://slice/<s>`` per
slice and its annotation lists every tenant (``ns/a,ns/b``). It is signed only when each listed
NFInstance is a VNF on the requester's node, all are tenants of one ``sharedInstance.name``, and their
slices are exactly the slices asked for.

The signer lists the pending CSRs, then watches from that list's version until one is added or
changes while still pending (or ``watch_s`` passes), and lists again: a request per new CSR and two
a minute when idle, where polling every second cost one request a second (77 in the 500-slice
benchmark run, a third of its fixed requests).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from flyslice.nodeagent.dataplane.tls import LEAF_DAYS, URI_AGENT, URI_SLICE, CertificateAuthority
from flyslice.nodeagent.kube.dataplane_certs import CA_KEY, CA_NAME, NFINSTANCE_ANNOTATION, SIGNER

log = logging.getLogger("flyslice.operator.dataplane_ca")

AGENT_USER_PREFIX = "system:flyslice-agent:"
#: The longest certificate this signer issues, whatever a CSR asks for.
MAX_LIFETIME = datetime.timedelta(days=LEAF_DAYS)
AGENT_GROUP = "system:flyslice-agents"
NODE_EXTRA = "authentication.kubernetes.io/node-name"


def requester_node(
    username: str, groups: Sequence[str], extra: Mapping[str, Sequence[str]] | None, namespace: str
) -> str:
    """The node an agent identity belongs to ('' for none), as the admission policy derives it."""
    if username.startswith(AGENT_USER_PREFIX):
        return username[len(AGENT_USER_PREFIX) :]
    if username == f"system:serviceaccount:{namespace}:flyslice-agent" or AGENT_GROUP in groups:
        values = (extra or {}).get(NODE_EXTRA) or []
        return str(values[0]) if values else ""
    return ""


def ensure_ca(core: Any, namespace: str) -> CertificateAuthority:
    """Load the CA from its Secret, creating it (and publishing its certificate) the first time."""
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core.read_namespaced_secret(CA_NAME, namespace)
        data = secret.data or {}
        ca = CertificateAuthority.from_pem(base64.b64decode(data["ca.pem"]), base64.b64decode(data["ca.key"]))
    except ApiException as exc:
        if exc.status != 404:
            raise
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:  # creates a fresh key; the Secret is its only home
            ca = CertificateAuthority.load_or_create(Path(tmp), "flyslice cluster data plane CA")
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": CA_NAME,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/part-of": "flyslice"},
            },
            "type": "Opaque",
            "data": {
                "ca.pem": base64.b64encode(ca.cert_pem).decode(),
                "ca.key": base64.b64encode(ca.key_pem()).decode(),
            },
        }
        try:
            core.create_namespaced_secret(namespace, body)
        except ApiException as exc2:
            if exc2.status != 409:
                raise
            return ensure_ca(core, namespace)  # another replica won the race: use its CA
    ca_text = ca.cert_pem.decode()
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CA_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "flyslice"},
        },
        "data": {CA_KEY: ca_text},
    }
    try:
        current = core.read_namespaced_config_map(CA_NAME, namespace)
        if (current.data or {}).get(CA_KEY) != ca_text:
            core.replace_namespaced_config_map(CA_NAME, namespace, cm)
    except ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_config_map(namespace, cm)
    return ca


def _decide(csr: Any, namespace: str, custom: Any = None) -> tuple[str, Any]:
    """('', (public key, common name, node, slices)) to sign, or (why not, None)."""
    from cryptography import x509

    spec = csr.spec
    node = requester_node(spec.username or "", spec.groups or [], spec.extra, namespace)
    if not node:
        return f"{spec.username} is not a flyslice agent identity naming a node", None
    try:
        req = x509.load_pem_x509_csr(base64.b64decode(spec.request))
    except (ValueError, TypeError) as exc:
        return f"unreadable request: {exc}", None
    if not req.is_signature_valid:
        return "the request's signature does not verify", None
    try:
        sans = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the request names no flyslice identity", None
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    others = [n for n in sans if not isinstance(n, x509.UniformResourceIdentifier)]
    ref = (csr.metadata.annotations or {}).get(NFINSTANCE_ANNOTATION, "")
    if uris and not others and all(u.startswith(URI_SLICE) for u in uris) and (len(uris) > 1 or "," in ref):
        slices = sorted({u[len(URI_SLICE) :] for u in uris})  # the pod of a shared instance
        why = _shared_refusal(ref, node, slices, custom)
        if why:
            return why, None
        return "", (req.public_key(), f"vnf shared {ref}", None, slices)
    if len(uris) == 1 and not others and uris[0].startswith(URI_SLICE):
        slice_ = uris[0][len(URI_SLICE) :]
        why = _slice_refusal(csr, node, slice_, custom)
        if why:
            return why, None
        ref = (csr.metadata.annotations or {})[NFINSTANCE_ANNOTATION]
        return "", (req.public_key(), f"vnf {ref}", None, [slice_])
    if uris != [URI_AGENT + node] or others:
        return (
            f"the agent of node {node} may request only {URI_AGENT}{node} or {URI_SLICE}<slice> for a VNF "
            f"on its node, not {uris + others}",
            None,
        )
    return "", (req.public_key(), f"agent {node}", node, [])


def _slice_refusal(csr: Any, node: str, slice_: str, custom: Any) -> str:
    """Why the agent of ``node`` may not have a certificate for ``slice_`` ('' when it may).

    Only the NFInstance object decides: the annotation is the requester's claim of which instance
    the certificate is for, and the instance's own spec (written by the operator, not by agents --
    admission) must put a VNF of that slice on the requester's node.
    """
    from kubernetes.client.exceptions import ApiException

    ref = (csr.metadata.annotations or {}).get(NFINSTANCE_ANNOTATION, "")
    ns, _, name = ref.partition("/")
    if not ns or not name or "/" in name:
        return (
            f"a slice certificate must name its NFInstance (annotation {NFINSTANCE_ANNOTATION}: <ns>/<name>)"
        )
    if custom is None:
        return "this signer cannot read NFInstances"
    try:
        obj = custom.get_namespaced_custom_object("flyslice.io", "v1alpha1", ns, "nfinstances", name)
    except ApiException as exc:
        if exc.status == 404:
            return f"NFInstance {ref} does not exist"
        raise  # transient: the CSR stays pending and is decided on the next round
    ispec = obj.get("spec") or {}
    if ispec.get("node") != node:
        return (
            f"NFInstance {ref} is scheduled on node {ispec.get('node')!r}, not on the requester's node {node}"
        )
    if ispec.get("slice") != slice_:
        return f"NFInstance {ref} belongs to slice {ispec.get('slice')!r}, not {slice_!r}"
    if ispec.get("flavor") != "vnf":
        # fNFs run inside the agent, which already holds its node identity: no pod needs one.
        return f"NFInstance {ref} is not a VNF (flavor {ispec.get('flavor')!r})"
    return ""


def _shared_refusal(refs: str, node: str, slices: list[str], custom: Any) -> str:
    """Why the agent of ``node`` may not have one certificate for ``slices`` for the pod of a shared
    instance whose tenants are ``refs`` (``ns/name,...``); '' when it may."""
    from kubernetes.client.exceptions import ApiException

    names = [r for r in refs.split(",") if r]
    if not names:
        return f"a shared pod's certificate must list its tenants (annotation {NFINSTANCE_ANNOTATION})"
    if custom is None:
        return "this signer cannot read NFInstances"
    covered: set[str] = set()
    shared: set[str] = set()
    for ref in names:
        ns, _, name = ref.partition("/")
        if not ns or not name or "/" in name:
            return f"annotation {NFINSTANCE_ANNOTATION}: {ref!r} is not <ns>/<name>"
        try:
            obj = custom.get_namespaced_custom_object("flyslice.io", "v1alpha1", ns, "nfinstances", name)
        except ApiException as exc:
            if exc.status == 404:
                return f"NFInstance {ref} does not exist"
            raise  # transient: decided on the next round
        ispec = obj.get("spec") or {}
        if ispec.get("node") != node:
            return f"NFInstance {ref} is scheduled on node {ispec.get('node')!r}, not on the requester's node {node}"
        if ispec.get("flavor") != "vnf":
            return f"NFInstance {ref} is not a VNF (flavor {ispec.get('flavor')!r})"
        covered.add(str(ispec.get("slice")))
        shared.add(str((ispec.get("sharedInstance") or {}).get("name") or ""))
    if len(shared) != 1 or "" in shared:
        return f"NFInstances {names} are not the tenants of one shared instance ({sorted(shared)})"
    if covered != set(slices):
        return f"the tenants {names} are of slices {sorted(covered)}, the request names {slices}"
    return ""


def _condition(type_: str, reason: str, message: str) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": type_, "status": "True", "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    }  # fmt: skip


def leaf_lifetime(csr: Any, max_lifetime: datetime.timedelta = MAX_LIFETIME) -> datetime.timedelta:
    """How long a certificate for ``csr`` is valid: its ``spec.expirationSeconds`` (the API server
    enforces at least 600 s), else 90 days -- never more than ``max_lifetime``, the signer's cap.

    Agents renew at 2/3 of whatever they get, so a shorter cap means more frequent renewal, nothing
    else. Tests set a cap of seconds to watch renewal happen (``DataplaneSigner(max_lifetime=...)``).
    """
    requested = getattr(csr.spec, "expiration_seconds", None)
    lifetime = datetime.timedelta(seconds=int(requested)) if requested else MAX_LIFETIME
    return min(lifetime, max_lifetime)


def sign_pending(
    certs: Any,
    ca: CertificateAuthority,
    namespace: str,
    custom: Any = None,
    max_lifetime: datetime.timedelta = MAX_LIFETIME,
    *,
    csrs: Sequence[Any] | None = None,
) -> dict[str, str]:
    """Approve and sign, or deny, every pending CSR for the signer; name -> 'signed' or why denied.
    ``csrs``: the signer's CSRs as just listed (else listed here)."""
    done: dict[str, str] = {}
    if csrs is None:
        csrs = certs.list_certificate_signing_request(field_selector=f"spec.signerName={SIGNER}").items
    for csr in csrs:
        status = csr.status
        conditions = (status.conditions if status else None) or []
        if (status and status.certificate) or any(c.type in ("Denied", "Failed") for c in conditions):
            continue
        name = csr.metadata.name
        why, decision = _decide(csr, namespace, custom)
        if decision is None:
            body = certs.api_client.sanitize_for_serialization(csr)
            body.setdefault("status", {})["conditions"] = [_condition("Denied", "NotThisNode", why)]
            certs.replace_certificate_signing_request_approval(name, body)
            log.warning("denied data-plane CSR %s: %s", name, why)
            done[name] = why
            continue
        public_key, common_name, node, slices = decision
        if not any(c.type == "Approved" for c in conditions):
            body = certs.api_client.sanitize_for_serialization(csr)
            body.setdefault("status", {})["conditions"] = [
                _condition("Approved", "AgentOfNode", f"requested by the agent of the node of {common_name}")
            ]
            csr = certs.replace_certificate_signing_request_approval(name, body)
        cert_pem = ca.sign(
            public_key, common_name, node=node, slices=slices, lifetime=leaf_lifetime(csr, max_lifetime)
        )
        body = certs.api_client.sanitize_for_serialization(csr)
        body.setdefault("status", {})["certificate"] = base64.b64encode(cert_pem).decode()
        certs.replace_certificate_signing_request_status(name, body)
        log.info("signed data-plane certificate for %s (CSR %s)", common_name, name)
        done[name] = "signed"
    return done


def _pending(csr: Mapping[str, Any]) -> bool:
    """Whether a CSR (as JSON) still waits for this signer: no certificate, not denied or failed."""
    status = csr.get("status") or {}
    conditions = status.get("conditions") or []
    return not status.get("certificate") and not any(
        c.get("type") in ("Denied", "Failed") for c in conditions
    )


class DataplaneSigner:
    """The leader's signer loop: the CA from its Secret, the pending CSRs whenever a watch says one
    arrived (``interval_s``: the pause after a failed round).

    ``max_lifetime`` caps every certificate's lifetime below what Kubernetes lets a CSR ask for
    (600 s at least): tests use seconds to watch agents renew. The operator's command line does not
    expose it (its signer issues what the CSR asks, at most 90 days).
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        interval_s: float = 1.0,
        *,
        max_lifetime: datetime.timedelta = MAX_LIFETIME,
        watch_s: float = 30.0,
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        # Typed Any: a watch (``_preload_content=False``) returns the raw response, not the typed list.
        self.certs: Any = client.CertificatesV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.interval_s = interval_s
        self.ca: CertificateAuthority | None = None
        self.max_lifetime = max_lifetime
        self.watch_s = watch_s
        #: The last list's resourceVersion: where the watch for the next CSR starts.
        self._rv = ""
        self._response: Any = None
        self._stopped = False

    def run_once(self) -> dict[str, str]:
        if self.ca is None:
            self.ca = ensure_ca(self.core, self.namespace)
        listed = self.certs.list_certificate_signing_request(field_selector=f"spec.signerName={SIGNER}")
        self._rv = str(listed.metadata.resource_version or "")
        return sign_pending(
            self.certs, self.ca, self.namespace, self.custom, self.max_lifetime, csrs=listed.items
        )

    def wait_for_csr(self, timeout_s: float) -> bool:
        """Block until a pending CSR for the signer is added or changed since the last
        :meth:`run_once` (True), or ``timeout_s`` passes or the watch ends (False)."""
        resp = self.certs.list_certificate_signing_request(
            field_selector=f"spec.signerName={SIGNER}", watch=True, resource_version=self._rv,
            timeout_seconds=max(1, int(timeout_s)), _preload_content=False,
            _request_timeout=(10, timeout_s + 10),
        )  # fmt: skip
        self._response = resp
        try:
            if self._stopped:  # stopped while the request was being made
                return False
            rest = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                *lines, rest = (rest + chunk).split(b"\n")
                for line in filter(bytes.strip, lines):
                    event = json.loads(line)
                    # ERROR (e.g. 410 Gone: the version is no longer kept): list again at once.
                    if event.get("type") == "ERROR" or (
                        event.get("type") in ("ADDED", "MODIFIED") and _pending(event.get("object") or {})
                    ):
                        return True
            return False
        finally:
            self._response = None
            resp.close()
            resp.release_conn()

    def _interrupt(self) -> None:
        self._stopped = True
        resp = self._response
        if resp is not None:
            with contextlib.suppress(Exception):  # the watching thread may be closing it too
                resp.shutdown()

    def _watch_in_thread(self) -> asyncio.Future[bool]:
        """:meth:`wait_for_csr` in a daemon thread: a stop never waits for the watch to end (an
        executor thread would hold up the event loop's shutdown for up to ``watch_s``)."""
        aio = asyncio.get_running_loop()
        done: asyncio.Future[bool] = aio.create_future()

        def settle(result: bool | None, exc: BaseException | None) -> None:
            if done.done():
                return
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(bool(result))

        def watch() -> None:
            try:
                result, exc = self.wait_for_csr(self.watch_s), None
            except Exception as e:
                result, exc = None, e
            with contextlib.suppress(RuntimeError):  # the event loop has closed: nobody waits
                aio.call_soon_threadsafe(settle, result, exc)

        threading.Thread(target=watch, name="flyslice-csr-watch", daemon=True).start()
        return done

    async def run(self, stop: asyncio.Event) -> None:
        self._stopped = False
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_once)
                watching = self._watch_in_thread()
                stopping = asyncio.ensure_future(stop.wait())
                waiters: set[asyncio.Future[Any]] = {watching, stopping}
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if stop.is_set():
                    self._interrupt()
                    watching.cancel()
                    return
                watching.result()
                continue
            except Exception as exc:  # retried after a pause; agents wait for their certificate
                log.warning("data-plane signer: %s", getattr(exc, "reason", None) or exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
