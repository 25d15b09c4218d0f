"""Cosign-compatible image signatures: what cosign signs for an image digest, and its check.

``cosign sign`` (and ``cosign generate`` followed by ``cosign sign-blob``) signs the "simple signing"
payload of the image's manifest digest, the bytes Go's ``json.Marshal`` makes of sigstore's
``payload.Cosign`` (github.com/sigstore/sigstore, ``pkg/signature/payload/payload.go``)::

    {"critical":{"identity":{"docker-reference":"<registry>/<repository>"},
     "image":{"docker-manifest-digest":"sha256:<hex>"},"type":"cosign container image signature"},
     "optional":null}

(one line, no spaces). The docker-reference is go-containerregistry's ``Repository.Name()``: the
tag dropped, Docker Hub spelled ``index.docker.io`` and its one-word names under ``library/``.
An NFPackage's ``imageSignature`` is the base64 of a signature over those bytes for the flavour's
pinned digest, made with an ed25519 key (the agents' module-signing keys) or an ECDSA P-256 key
(``cosign generate-key-pair``'s ``cosign.pub``: SHA-256, ASN.1 DER signature).

Not supported, and refused rather than half-checked: annotations (``cosign sign -a``: they go into
``optional``, which flyslice cannot know), ``--sign-container-identity``, keyless (Fulcio)
certificates and transparency-log (Rekor) entries. The payload is rebuilt here from the image
reference, so nothing fetched from a registry is trusted and no registry is contacted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # cryptography costs ~6 MB of RSS: imported only when a key is used
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: A key an agent verifies image signatures with.
TrustedKey = Union["Ed25519PublicKey", "EllipticCurvePublicKey"]
SigningKey = Union["Ed25519PrivateKey", "EllipticCurvePrivateKey"]

COSIGN_SIGNATURE_TYPE = "cosign container image signature"
#: go-containerregistry's ``name.DefaultRegistry``; ``docker.io`` is rewritten to it.
DEFAULT_REGISTRY = "index.docker.io"
_PINNED = re.compile(r"^(?P<name>[^\s@]+)@(?P<digest>sha256:[0-9a-f]{64})$")
# go-containerregistry's repositoryChars (lowercase only); path components as the distribution spec.
_TAG = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_REPOSITORY = re.compile(r"^[a-z0-9_.-]+(/[a-z0-9_.-]+)*$")
# A host[:port] authority; IPv6 literals in brackets. Narrower than Go's url.Parse, on purpose:
# every accepted character is one json.Marshal writes as itself (no \u escapes to reproduce).
_REGISTRY = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]+)?$")


class ImageSignatureError(ValueError):
    """An image signature that is missing, malformed or does not verify; the pod is not started."""


def docker_reference(name: str) -> str:
    """The repository as cosign writes it into the payload (``Repository.Name()``), from an image
    name without its digest: ``nf:1`` -> ``index.docker.io/library/nf``."""
    base = name
    head, sep, tag = name.rpartition(":")
    if sep and "/" not in tag:  # name:tag -- a colon before the last '/' is a registry port
        if not _TAG.match(tag):
            raise ImageSignatureError(f"image {name!r}: tag {tag!r} is not a valid tag")
        base = head
    registry, _, repository = base.partition("/")
    if not repository or not (registry == "localhost" or any(c in registry for c in ".:")):
        registry, repository = "", base  # the first component is a path, the registry Docker Hub
    if registry in ("", "docker.io"):
        registry = DEFAULT_REGISTRY
    if not _REGISTRY.match(registry):
        raise ImageSignatureError(f"image {name!r}: registry {registry!r} is not a host[:port]")
    if not _REPOSITORY.match(repository) or len(repository) > 255:
        raise ImageSignatureError(
            f"image {name!r}: repository {repository!r} is not a valid repository name "
            "(lowercase letters, digits, '_', '.', '-' and '/')"
        )
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = "library/" + repository  # Docker Hub's official images
    return f"{registry}/{repository}"


def pinned_digest(image: str) -> tuple[str, str]:
    """``(docker-reference, sha256:<hex>)`` of an image pinned by digest; refuses a tag-only one."""
    m = _PINNED.match(image)
    if m is None:
        raise ImageSignatureError(
            f"image {image!r} is not pinned by digest (name@sha256:<64 hex digits>): "
            "a signature covers one digest, a tag can be moved to other bytes"
        )
    return docker_reference(m.group("name")), m.group("digest")


def simple_signing_payload(image: str) -> bytes:
    """The exact bytes cosign signs for ``image`` (``name[:tag]@sha256:<hex>``), no annotations."""
    reference, digest = pinned_digest(image)
    doc = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": COSIGN_SIGNATURE_TYPE,
        },
        "optional": None,
    }
    # Go's json.Marshal: struct field order, no whitespace, no trailing newline.
    return json.dumps(doc, separators=(",", ":")).encode()


def load_trusted_key(data: bytes | str) -> TrustedKey:
    """A key for image signatures: PEM ed25519 or ECDSA P-256 (``cosign.pub``), or an ed25519 key
    in the forms module keys take (32 raw bytes or their base64; ``modules.load_public_key``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from flyslice.nodeagent.runtime.modules import load_public_key

    raw = data.encode() if isinstance(data, str) else data
    if not raw.lstrip().startswith(b"-----BEGIN"):
        try:
            return load_public_key(raw)
        except ValueError as exc:
            raise ValueError(
                f"not a PEM public key, nor an ed25519 key as 32 raw bytes or their base64 ({exc})"
            ) from exc
    key = serialization.load_pem_public_key(raw)
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("not an ed25519 or ECDSA P-256 public key (what cosign generate-key-pair writes)")


def key_id(key: TrustedKey) -> str:
    """``ed25519:<12 hex>`` / ``ecdsa-p256:<12 hex>``: sha256 of the key's SubjectPublicKeyInfo, to name
    a key in a message without printing it (``openssl pkey -pubin -outform DER | sha256sum``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kind = "ed25519" if isinstance(key, Ed25519PublicKey) else "ecdsa-p256"
    return f"{kind}:{hashlib.sha256(der).hexdigest()[:12]}"


def verify_image_signature(image: str, signature: str, keys: Sequence[TrustedKey]) -> str:
    """Check ``signature`` (base64) over ``image``'s payload with ``keys``; the verifying key's id.

    Raises :class:`ImageSignatureError` naming the problem: a tag-only image, no key, bad base64,
    or no key that verifies (with the ids of the keys tried)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    payload = simple_signing_payload(image)
    if not keys:
        raise ImageSignatureError("no trusted key to verify the image signature with")
    try:
        sig = base64.b64decode(signature, validate=True)
    except ValueError as exc:
        raise ImageSignatureError("imageSignature is not valid base64") from exc
    for key in keys:
        try:
            if isinstance(key, Ed25519PublicKey):
                key.verify(sig, payload)
            else:
                key.verify(sig, payload, ec.ECDSA(hashes.SHA256()))
            return key_id(key)
        except InvalidSignature:
            continue
    tried = ", ".join(key_id(k) for k in keys)
    raise ImageSignatureError(f"imageSignature does not verify for {image} with any trusted key ({tried})")


def load_signing_key(data: bytes) -> SigningKey:
    """An unencrypted PEM private key, ed25519 or ECDSA P-256 (PKCS#8 or SEC1, as openssl writes).

    cosign's own ``cosign.key`` is encrypted in sigstore's format (scrypt + secretbox) and is not
    read here: sign cosign's payload with ``cosign sign-blob`` instead (docs/security.md)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data:
        raise ValueError(
            "a cosign.key (encrypted sigstore format) is not read by flyslice: sign the payload "
            "(flyslice sign-image --payload-only) with cosign sign-blob --key cosign.key"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key ({exc})") from exc
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ValueError("not an ed25519 or ECDSA P-256 private key")


def sign_image(image: str, key: SigningKey) -> str:
    """The ``imageSignature`` for ``image`` (pinned by digest): base64 of the key's signature over
    cosign's payload, what ``cosign sign-blob`` prints for the same key and payload."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    payload = simple_signing_payload(image)
    if isinstance(key, Ed25519PrivateKey):
        sig = key.sign(payload)
    else:
        sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(sig).decode()
