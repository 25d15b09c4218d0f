"""Digest-pinned images under the signing policy (issue 12, item 1): in a namespace listed in
``--require-signed-packages`` a VNF flavour's ``image`` must name ``name@sha256:<64 hex>``; a tag can
be moved to other bytes, a digest cannot. Outside the policy, tags stay valid (the examples use them)."""

from __future__ import annotations

import base64

import pytest

from flyslice.nodeagent.runtime.modules import BUILTIN_DIR, digest_of
from flyslice.operator.intake.manifests import load_text
from flyslice.operator.intake.validation import PackagePolicy, ValidationResult, validate

MODULE = (BUILTIN_DIR / "broker.py").read_bytes()
DIGEST = "sha256:" + "0123456789abcdef" * 4
#: Validation checks the form only; the agents verify the signature itself.
SIGNATURE = base64.b64encode(bytes(64)).decode()

PACKAGE = """\
apiVersion: flyslice.io/v1alpha1
kind: NFPackage
metadata: {{name: broker, namespace: {ns}}}
spec:
  function: broker
  flavors:
    vnf:
      image: '{image}'
      module: builtin:broker
      digest: {digest}
      signature: {signature}
      resources: {{cpu: 100m, memory: 64Mi}}
"""


def validated(ns: str, image: str) -> ValidationResult:
    text = PACKAGE.format(ns=ns, image=image, digest=digest_of(MODULE), signature=SIGNATURE)
    found, errors = load_text(text, "packages.yaml")
    assert errors == []
    return validate(found, policy=PackagePolicy(frozenset({"secure"})))


def errors_of(result: ValidationResult) -> list[tuple[str, str, str, str]]:
    return [(e.file, e.object, e.path, e.message) for e in result.errors if e.severity == "error"]


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/flyslice/nf-runner:0.1.0",
        "ghcr.io/flyslice/nf-runner",
        "ghcr.io/flyslice/nf-runner@sha256:abc",  # too short
        "ghcr.io/flyslice/nf-runner@sha256:" + "A" * 64,  # not lowercase hex
        "ghcr.io/flyslice/nf-runner@sha512:" + "a" * 128,
        "@sha256:" + "a" * 64,  # no name
    ],
)
def test_an_image_not_pinned_by_digest_is_invalid_under_the_signing_policy(image: str) -> None:
    result = validated("secure", image)
    assert not result.ok
    assert errors_of(result) == [
        (
            "packages.yaml",
            "NFPackage/secure/broker",
            "spec.flavors.vnf.image",
            "namespace 'secure' requires signed packages (--require-signed-packages): "
            f"image {image!r} must be pinned by digest (name@sha256:<64 hex digits>), not by tag",
        )
    ]
    assert "\n" not in result.errors[0].message
    # The package is invalid, so nothing of it is placed.
    assert ("secure", "broker") not in result.catalog.packages


@pytest.mark.parametrize(
    "image",
    [
        "ghcr.io/flyslice/nf-runner@" + DIGEST,
        "ghcr.io/flyslice/nf-runner:0.1.0@" + DIGEST,
        "localhost:5000/nf-runner@" + DIGEST,
    ],
)
def test_a_digest_pinned_image_passes_the_signing_policy(image: str) -> None:
    result = validated("secure", image)
    assert errors_of(result) == []
    assert result.catalog.packages[("secure", "broker")].flavors["vnf"].image == image


def test_tags_stay_valid_outside_the_policy() -> None:
    assert validated("open", "ghcr.io/flyslice/nf-runner:0.1.0").ok
    found, errors = load_text(
        PACKAGE.format(ns="secure", image="nf:1", digest=digest_of(MODULE), signature=SIGNATURE), "p.yaml"
    )
    assert errors == [] and validate(found).ok  # no policy at all


def test_a_policy_for_every_namespace_covers_images_too() -> None:
    found, _ = load_text(
        PACKAGE.format(ns="any", image="nf:1", digest=digest_of(MODULE), signature=SIGNATURE), "p.yaml"
    )
    result = validate(found, policy=PackagePolicy(frozenset({"*"})))
    assert [e.path for e in result.errors if e.severity == "error"] == ["spec.flavors.vnf.image"]
