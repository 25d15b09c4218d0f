"""Cosign-compatible image signatures (issue 12, items 1 and 3): the payload is byte for byte what
cosign signs, signatures by ed25519 and ECDSA P-256 keys verify for their digest and key only, the
pod driver's policy decides which VNFs need one, and ``flyslice sign-image`` (a real CLI process)
makes signatures the agents accept. tests/data/cosign/ holds a vector made by cosign itself."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flyslice.nodeagent.kube.pod_driver import ImageRefused, KubernetesPodDriver
from flyslice.nodeagent.runtime.image_signatures import (
    ImageSignatureError,
    docker_reference,
    key_id,
    load_trusted_key,
    sign_image,
    simple_signing_payload,
    verify_image_signature,
)
from flyslice.nodeagent.runtime.modules import public_key_b64
from flyslice.nodeagent.spec import InstanceSpec

REPO = Path(__file__).resolve().parents[2]
VECTOR = REPO / "tests" / "data" / "cosign"
HEX = "0123456789abcdef" * 4
OTHER_HEX = "fedcba9876543210" * 4
IMAGE = f"ghcr.io/flyslice/nf-runner:0.1@sha256:{HEX}"


def test_the_payload_is_byte_for_byte_what_cosign_signs() -> None:
    # sigstore/sigstore pkg/signature/payload/payload.go (commit bd0ad71): json.Marshal of
    # SimpleContainerImage -- field order critical{identity, image, type}, optional; no spaces;
    # Optional is a nil map without annotations, so "optional":null.
    assert simple_signing_payload(IMAGE) == (
        b'{"critical":{"identity":{"docker-reference":"ghcr.io/flyslice/nf-runner"},'
        b'"image":{"docker-manifest-digest":"sha256:' + HEX.encode() + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        # go-containerregistry pkg/name (commit 3f4ff3c): Repository.Name() after NewDigest/NewTag.
        ("busybox", "index.docker.io/library/busybox"),
        ("busybox:1.36", "index.docker.io/library/busybox"),
        ("docker.io/busybox", "index.docker.io/library/busybox"),
        ("docker.io/flyslice/nf:2", "index.docker.io/flyslice/nf"),
        ("flyslice/nf", "index.docker.io/flyslice/nf"),
        ("ghcr.io/flyslice/nf-runner:0.1", "ghcr.io/flyslice/nf-runner"),
        ("localhost:5000/nf:1", "localhost:5000/nf"),  # the first colon is the port, not a tag
        ("localhost/nf", "localhost/nf"),
        ("registry.example:8443/a/b/c", "registry.example:8443/a/b/c"),
    ],
)
def test_docker_reference_follows_go_containerregistry(name: str, reference: str) -> None:
    assert docker_reference(name) == reference


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("ghcr.io/flyslice/nf-runner:0.1", "not pinned by digest"),
        ("ghcr.io/flyslice/nf-runner@sha256:abc", "not pinned by digest"),
        ("ghcr.io/Flyslice/nf@sha256:" + HEX, "not a valid repository name"),
        ("ghcr.io/nf:a+b@sha256:" + HEX, "not a valid tag"),
    ],
)
def test_an_image_cosign_could_not_have_signed_is_refused(image: str, problem: str) -> None:
    with pytest.raises(ImageSignatureError, match=problem):
        simple_signing_payload(image)


def test_signatures_verify_for_their_digest_and_key_only() -> None:
    ed = Ed25519PrivateKey.generate()
    p256 = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    for key in (ed, p256):
        sig = sign_image(IMAGE, key)
        assert verify_image_signature(IMAGE, sig, [other.public_key(), key.public_key()]) == key_id(
            key.public_key()
        )
        # The same signature for another digest, or checked with another key only, fails.
        moved = IMAGE.replace(HEX, OTHER_HEX)
        with pytest.raises(ImageSignatureError, match=r"does not verify for .*with any trusted key"):
            verify_image_signature(moved, sig, [key.public_key()])
        with pytest.raises(ImageSignatureError, match=r"any trusted key \(ecdsa-p256:[0-9a-f]{12}\)"):
            verify_image_signature(IMAGE, sig, [other.public_key()])
    # The tag is not part of what is signed (cosign drops it too): the digest is.
    sig = sign_image(IMAGE, p256)
    assert verify_image_signature(IMAGE.replace(":0.1@", "@"), sig, [p256.public_key()])
    with pytest.raises(ImageSignatureError, match="not valid base64"):
        verify_image_signature(IMAGE, "not base64!", [p256.public_key()])
    with pytest.raises(ImageSignatureError, match="no trusted key"):
        verify_image_signature(IMAGE, sig, [])
    truncated = base64.b64encode(base64.b64decode(sig)[:-4]).decode()
    with pytest.raises(ImageSignatureError, match="does not verify"):
        verify_image_signature(IMAGE, truncated, [p256.public_key()])


def test_trusted_keys_are_ed25519_or_p256() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = p256.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert key_id(load_trusted_key(pem)) == key_id(p256)
    ed = Ed25519PrivateKey.generate().public_key()
    assert key_id(load_trusted_key(public_key_b64(ed))) == key_id(ed)  # the module keys' form
    for other in (ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)):
        pem = other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(ValueError, match="not an ed25519 or ECDSA P-256 public key"):
            load_trusted_key(pem)


# -- a vector made by cosign itself -------------------------------------------------------------


#: The reference given to `cosign generate` (tests/data/cosign/README.md): a Docker Hub short name
#: with a tag, so the vector also pins the reference normalisation.
COSIGN_IMAGE = "busybox:1.36@sha256:c643f1965b26a33f30586c3a013f7ea8532986636baae5c4522d4425e9002fb7"


def test_cosign_made_vector_verifies_and_not_for_another_digest() -> None:
    image = COSIGN_IMAGE
    payload = (VECTOR / "payload.json").read_bytes()
    signature = (VECTOR / "payload.sig").read_text().strip()
    key = load_trusted_key((VECTOR / "cosign.pub").read_bytes())
    # cosign generate's bytes are the payload flyslice rebuilds from the reference alone...
    assert simple_signing_payload(image) == payload
    # ...so cosign sign-blob's signature over them verifies, by cosign.pub only, for that digest only.
    assert verify_image_signature(image, signature, [key]).startswith("ecdsa-p256:")
    digest = image.rsplit("@sha256:", 1)[1]
    moved = image.replace(digest, digest[::-1])
    with pytest.raises(ImageSignatureError, match="does not verify"):
        verify_image_signature(moved, signature, [key])
    with pytest.raises(ImageSignatureError, match="does not verify"):
        verify_image_signature(image, signature, [ec.generate_private_key(ec.SECP256R1()).public_key()])


# -- which VNFs the pod driver asks a signature of -----------------------------------------------


class _NoCreate:
    """Only a lookup of the instance's pods (to stop an earlier version) is allowed."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def list_namespaced_pod(self, *args: object, **kwargs: object) -> object:
        self.calls.append("list_namespaced_pod")
        return type("PodList", (), {"items": []})()

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"API call {name} made for a refused instance")


def _image_only(image: str = IMAGE, signature: str = "", required: bool = False) -> InstanceSpec:
    return InstanceSpec(
        name="cam", slice="s1", role="camera", package="camera", flavor="vnf", image=image,
        image_signature=signature, signature_required=required, namespace="secure", node="k1",
    )  # fmt: skip


def _driver(*keys: object) -> KubernetesPodDriver:
    return KubernetesPodDriver(
        _NoCreate(), namespace="ns", node_name="k1", agent_address="a:1", image_keys=keys,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_pod_driver_requires_and_checks_image_signatures_by_policy() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sig = sign_image(IMAGE, key)
    signed = _image_only(signature=sig)
    assert _driver(key.public_key()).verify_image(signed) == key_id(key.public_key())
    assert _driver(key.public_key()).verify_image(replace(signed, signature_required=True))
    refusals = [
        # (driver keys, spec, what the message says)
        (
            (key.public_key(),),
            _image_only(),
            "image-only VNF without imageSignature, and this agent has trusted keys",
        ),
        (
            (),
            _image_only(required=True),
            "without imageSignature, and its namespace requires signed packages",
        ),
        ((), replace(signed, signature_required=True), "no trusted key on this agent"),
        ((key.public_key(),), replace(signed, image=IMAGE.replace(HEX, OTHER_HEX)), "does not verify"),
        ((ec.generate_private_key(ec.SECP256R1()).public_key(),), signed, "does not verify"),
        (
            (key.public_key(),),
            replace(signed, image="ghcr.io/flyslice/nf-runner:0.1"),
            "not pinned by digest",
        ),
    ]
    for keys, spec, why in refusals:
        driver = _driver(*keys)
        with pytest.raises(ImageRefused) as info:
            driver.ensure(spec)
        message = str(info.value)
        assert message.startswith(
            "instance cam: package secure/camera flavour vnf: image signature refused: "
        ), message
        assert why in message and message.endswith("; no pod started") and "\n" not in message
        assert driver.core.calls == ["list_namespaced_pod"]  # looked for a pod to stop, created none
    # No keys and no requirement: recorded, not checkable here (as a module signature without keys).
    assert _driver().verify_image(signed) == ""
    assert _driver().verify_image(_image_only()) == ""


# -- flyslice sign-image, a real CLI process ------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "flyslice.operator.cli", "sign-image", *args],
        capture_output=True, timeout=60, env={**os.environ},
    )  # fmt: skip


def test_sign_image_prints_a_signature_the_agents_accept(tmp_path: Path) -> None:
    keys = {
        "ed25519.pem": Ed25519PrivateKey.generate(),
        "p256.pem": ec.generate_private_key(ec.SECP256R1()),
    }
    for name, key in keys.items():
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (tmp_path / name).write_bytes(pem)
        out = _cli("--key", str(tmp_path / name), IMAGE)
        assert out.returncode == 0, out.stderr
        sig = out.stdout.decode().strip()
        assert verify_image_signature(IMAGE, sig, [key.public_key()])
    payload = _cli("--payload-only", IMAGE)
    assert payload.returncode == 0 and payload.stdout == simple_signing_payload(IMAGE)

    tag_only = _cli("--key", str(tmp_path / "p256.pem"), "ghcr.io/flyslice/nf-runner:0.1")
    assert tag_only.returncode == 1
    assert tag_only.stderr.decode().strip() == (
        "flyslice sign-image: image 'ghcr.io/flyslice/nf-runner:0.1' is not pinned by digest "
        "(name@sha256:<64 hex digits>): a signature covers one digest, a tag can be moved to other bytes"
    )
    (tmp_path / "cosign.key").write_text(
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    encrypted = _cli("--key", str(tmp_path / "cosign.key"), IMAGE)
    assert encrypted.returncode == 1
    assert b"is not read by flyslice" in encrypted.stderr and b"cosign sign-blob" in encrypted.stderr
    assert _cli(IMAGE).returncode == 2  # no --key: a usage error
