"""A cluster agent's data-plane certificate, through the Kubernetes CertificateSigningRequest API.

The agent makes its key on its own node (it never leaves the state directory), asks for a certificate
naming ``flyslice://agent/<node>`` with a CSR for the signer ``flyslice.io/dataplane``, and waits for the
operator to approve and sign it. The operator signs only when the identity that created the CSR (the
API server records it in ``spec.username``/``spec.extra``) belongs to that node -- the same rule as the
``flyslice-agent-node-restriction`` admission policy -- so one node's credentials cannot obtain
another node's certificate. The CA certificate (public) comes from the ConfigMap
``flyslice-dataplane-ca``; its key stays in the operator's Secret of the same name.
"""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path
from typing import Any

from flyslice.nodeagent.dataplane.tls import LEAF_DAYS, URI_AGENT, URI_SLICE, TlsFiles, write_tls_dir

SIGNER = "flyslice.io/dataplane"
CA_NAME = "flyslice-dataplane-ca"
CA_KEY = "ca.pem"
#: On a slice CSR: the NFInstance (``<namespace>/<name>``) the certificate is for. The requester
#: chooses it, so the operator trusts nothing in it: it reads that NFInstance and signs only when
#: the instance is on the requester's node and in the slice the CSR names.
NFINSTANCE_ANNOTATION = "flyslice.io/nfinstance"


#: ``spec.expirationSeconds`` of the CSRs: the lifetime asked for (the signer caps it, see
#: :mod:`flyslice.operator.kube.dataplane_ca`), and the least the API server accepts.
DEFAULT_EXPIRATION_S = LEAF_DAYS * 86400
MIN_EXPIRATION_S = 600


class CertificateUnavailable(RuntimeError):
    """The operator did not sign the agent's CSR in time (or denied it)."""


def csr_pem(node: str) -> tuple[bytes, bytes]:
    """(CSR PEM, key PEM) for ``flyslice://agent/<node>``."""
    return _csr_for(URI_AGENT + node, f"agent {node}")


def _csr_for(uri: str | list[str], common_name: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(u) for u in ([uri] if isinstance(uri, str) else uri)]
            ),
            False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return csr.public_bytes(serialization.Encoding.PEM), key_pem


def request_certificate(
    api_client: Any,
    request: bytes,
    name_hint: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    poll_s: float = 0.5,
    expiration_s: int = DEFAULT_EXPIRATION_S,
) -> bytes:
    """Create a CSR for the signer, wait until it is signed, and return the certificate (PEM).

    ``expiration_s`` goes into ``spec.expirationSeconds``: the lifetime asked for. The API server
    refuses less than :data:`MIN_EXPIRATION_S`; the signer may issue shorter (its own maximum).
    """
    if expiration_s < MIN_EXPIRATION_S:
        raise ValueError(
            f"expirationSeconds {expiration_s}: Kubernetes requires at least {MIN_EXPIRATION_S} seconds"
        )
    from kubernetes import client

    certs: Any = client.CertificatesV1Api(api_client)
    name = f"flyslice-dataplane-{name_hint}-{secrets.token_hex(4)}"[:253]
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if annotations:
        metadata["annotations"] = annotations
    body: dict[str, Any] = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": metadata,
        "spec": {
            "request": base64.b64encode(request).decode(),
            "signerName": SIGNER,
            "usages": ["digital signature", "server auth", "client auth"],
            "expirationSeconds": int(expiration_s),
        },
    }
    certs.create_certificate_signing_request(body)
    deadline = time.monotonic() + timeout_s
    while True:
        obj = certs.read_certificate_signing_request(name)
        status = obj.status
        for cond in (status.conditions if status else None) or []:
            if cond.type in ("Denied", "Failed") and cond.status == "True":
                raise CertificateUnavailable(f"CSR {name} {cond.type.lower()}: {cond.message or cond.reason}")
        if status is not None and status.certificate:
            return base64.b64decode(status.certificate)
        if time.monotonic() > deadline:
            raise CertificateUnavailable(
                f"CSR {name} not signed within {timeout_s:g}s: is the flyslice operator running?"
            )
        time.sleep(poll_s)


def obtain_slice_certificate(
    api_client: Any,
    node: str,
    namespace: str,
    instance: str,
    slice_: str,
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.5,
    expiration_s: int = DEFAULT_EXPIRATION_S,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) naming ``flyslice://slice/<slice>`` for the VNF pod of NFInstance
    ``namespace/instance``, requested with this node agent's credentials.

    The key is made here, on the node, and goes only into the pod's Secret.
    """
    request, key_pem = _csr_for(URI_SLICE + slice_, f"vnf {namespace}/{instance}")
    cert_pem = request_certificate(
        api_client, request, f"{node}-{instance}"[:200],
        labels={"flyslice.io/node": node[:63]},
        annotations={NFINSTANCE_ANNOTATION: f"{namespace}/{instance}"},
        timeout_s=timeout_s, poll_s=poll_s, expiration_s=expiration_s,
    )  # fmt: skip
    return cert_pem, key_pem


def obtain_shared_certificate(
    api_client: Any,
    node: str,
    tenants: list[tuple[str, str, str]],
    name_hint: str,
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.5,
    expiration_s: int = DEFAULT_EXPIRATION_S,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for the pod of a shared VNF instance: one ``flyslice://slice/<s>``
    per slice of its ``tenants`` ((namespace, NFInstance, slice) each), requested with this node
    agent's credentials. The annotation lists every tenant (``ns/a,ns/b``): the signer checks that
    each is a VNF on the requester's node, that together they are exactly the slices asked for, and
    that they are tenants of one shared instance."""
    slices = sorted({s for _, _, s in tenants})
    request, key_pem = _csr_for([URI_SLICE + s for s in slices], f"vnf shared {name_hint}")
    refs = ",".join(sorted({f"{ns}/{name}" for ns, name, _ in tenants}))
    cert_pem = request_certificate(
        api_client, request, f"{node}-{name_hint}"[:200],
        labels={"flyslice.io/node": node[:63]},
        annotations={NFINSTANCE_ANNOTATION: refs},
        timeout_s=timeout_s, poll_s=poll_s, expiration_s=expiration_s,
    )  # fmt: skip
    return cert_pem, key_pem


def obtain_node_tls(
    api_client: Any,
    node: str,
    directory: Path,
    *,
    ca_namespace: str = "flyslice-system",
    timeout_s: float = 60.0,
    poll_s: float = 0.5,
    expiration_s: int = DEFAULT_EXPIRATION_S,
) -> TlsFiles:
    """Request, wait for and store this node's data-plane certificate; the files in ``directory``.

    Also how a running agent renews (:class:`~flyslice.nodeagent.dataplane.tls.Renewer`): a new key
    and CSR, and only once the signer answered are the files replaced -- a renewal that fails or
    times out leaves the certificate in use, and the CA, untouched.
    """
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    request, key_pem = csr_pem(node)
    cert_pem = request_certificate(
        api_client, request, node, labels={"flyslice.io/node": node[:63]}, timeout_s=timeout_s, poll_s=poll_s,
        expiration_s=expiration_s,
    )  # fmt: skip
    ca = core.read_namespaced_config_map(CA_NAME, ca_namespace)
    ca_pem = str((ca.data or {}).get(CA_KEY, "")).encode()
    if not ca_pem:
        raise CertificateUnavailable(f"ConfigMap {ca_namespace}/{CA_NAME} has no {CA_KEY}")
    return write_tls_dir(directory, ca_pem, cert_pem, key_pem)
