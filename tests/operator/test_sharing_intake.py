"""NF sharing in the manifests (issue 15): the CRDs' new fields, their CEL rules and what intake reads.

The same CRD schemas check plain git YAML (jsonschema), the CEL rules run through the project's CEL
checker exactly as the API server would run them, and the validated catalog carries the sharing policy
of packages, roles and slices. (tests/invalid holds the refused cases with their exact messages.)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from flyslice.crds import openapi_schema
from flyslice.operator.intake.catalog import SharingSpec
from flyslice.operator.intake.cel_rules import cel_errors
from flyslice.operator.intake.manifests import Manifest, load_text
from flyslice.operator.intake.schema_check import schema_errors
from flyslice.operator.intake.validation import validate, validate_paths

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shared-gateways"
SLICE_RULE_MESSAGE = (
    "isolation required forbids sharing NF instances with other slices: "
    "remove sharing allowed or set isolation none"
)


def _manifest(doc: dict[str, Any]) -> Manifest:
    manifests, errors = load_text(yaml.safe_dump(doc, sort_keys=False), "test.yaml")
    assert not errors and len(manifests) == 1, errors
    return manifests[0]


def _example_docs() -> list[dict[str, Any]]:
    return [d for f in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _doc(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _validate(docs: list[dict[str, Any]]) -> Any:
    manifests, errors = load_text(yaml.safe_dump_all(docs, sort_keys=False), "test.yaml")
    assert not errors, errors
    return validate(manifests)


def test_the_example_reads_into_the_catalog_with_its_sharing_policy() -> None:
    result = validate_paths([str(EXAMPLE)])
    assert result.errors == [], [str(e) for e in result.errors]
    cat = result.catalog
    broker = cat.packages[("default", "tower-broker")]
    # Only the flyweight flavour is shareable; resources stay the footprint of one instance.
    assert broker.flavors["fnf"].sharing == SharingSpec(
        capacity_mbps=40.0,
        max_tenants=20,
        per_tenant_cpu_millis=5,
        per_tenant_memory_bytes=2 * 2**20,
        per_tenant_config=False,
    )
    assert (broker.flavors["fnf"].cpu_millis, broker.flavors["fnf"].memory_bytes) == (50, 8 * 2**20)
    assert broker.flavors["vnf"].sharing is None
    assert cat.packages[("default", "sensor-filter")].flavors["fnf"].sharing is None
    service = cat.services[("default", "forest-telemetry")]
    assert service.role("broker-gw").sharing == "allowed"
    assert service.role("db").sharing == "allowed"  # omitted means allowed
    slices = {s.name: s for s in cat.slices.values()}
    assert slices["fire-watch"].sharing == "allowed" and slices["fire-watch"].sharing_allowed
    assert slices["ranger-tracking"].sharing == "forbidden" and not slices["ranger-tracking"].sharing_allowed


def test_per_tenant_amounts_may_be_zero_or_absent_and_max_tenants_optional() -> None:
    docs = _example_docs()
    pkg = _doc(docs, "NFPackage", "tower-broker")
    pkg["spec"]["flavors"]["fnf"]["sharing"] = {
        "capacityMbps": 0.5,
        "perTenant": {"cpu": 0},
        "perTenantConfig": True,
    }
    result = _validate(docs)
    assert result.ok, [str(e) for e in result.errors]
    assert result.catalog.packages[("default", "tower-broker")].flavors["fnf"].sharing == SharingSpec(
        capacity_mbps=0.5, max_tenants=None, per_tenant_config=True
    )


def test_isolation_required_forbids_sharing_even_when_sharing_is_omitted() -> None:
    docs = _example_docs()
    fire = _doc(docs, "Slice", "fire-watch")
    fire["spec"]["isolation"] = "required"
    # fNFs are forbidden too under isolation, and the towers only run fNFs: planning will refuse
    # the slice, but the intent itself is valid; what matters here is the policy intake derives.
    result = _validate(docs)
    assert result.ok, [str(e) for e in result.errors]
    spec = next(s for s in result.catalog.slices.values() if s.name == "fire-watch")
    assert spec.sharing == "allowed" and not spec.sharing_allowed


# -- the CEL rules, evaluated as the API server evaluates them ------------------------------


def _slice(**extra: Any) -> dict[str, Any]:
    spec = {
        "services": ["forest-telemetry"],
        "qos": {"maxLatencyMs": 10},
        "attachments": [{"node": "tower-1"}],
    }
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "Slice",
        "metadata": {"name": "cameras"},
        "spec": {**spec, **extra},
    }


@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        ({"isolation": "required", "sharing": "allowed"}, True),
        ({"isolation": "required", "sharing": "forbidden"}, False),
        ({"isolation": "required"}, False),
        ({"isolation": "none", "sharing": "allowed"}, False),
        ({"sharing": "allowed"}, False),
        ({"sharing": "forbidden"}, False),
    ],
)
def test_the_slice_cel_rule_refuses_only_explicit_sharing_with_isolation(
    extra: dict[str, Any], refused: bool
) -> None:
    m = _manifest(_slice(**extra))
    assert schema_errors(m) == []
    found = [(e.path, e.message) for e in cel_errors(m)]
    assert found == ([("spec.sharing", SLICE_RULE_MESSAGE)] if refused else [])


def test_the_slice_rule_is_in_the_crd_and_validate_words_it_as_a_fix() -> None:
    rules = openapi_schema("Slice")["properties"]["spec"]["x-kubernetes-validations"]
    assert any(r.get("message") == SLICE_RULE_MESSAGE and r.get("fieldPath") == ".sharing" for r in rules)
    others = [d for d in _example_docs() if d["kind"] != "Slice"]
    result = _validate([*others, _slice(isolation="required", sharing="allowed")])
    (error,) = [e for e in result.errors if e.severity == "error"]
    assert (error.object, error.path) == ("Slice/cameras", "spec.sharing")
    assert "remove sharing" in error.message and "isolation to none" in error.message


def _nfinstance(**shared: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "NFInstance",
        "metadata": {"name": "fire-watch-broker-gw-tower-1"},
        "spec": {
            "slice": "fire-watch",
            "role": "broker-gw",
            "package": "tower-broker",
            "flavor": "fnf",
            "node": "tower-1",
            "module": "builtin:broker",
            "digest": "sha256:" + "0" * 64,
            "resources": {"cpu": "50m", "memory": "8Mi"},
            "sharedInstance": shared,
        },
    }


def test_an_nfinstance_tenant_validates_with_schema_and_cel() -> None:
    doc = _nfinstance(
        name="default/tower-broker/fnf/any@tower-1#0",
        perTenantConfig=False,
        perTenant={"cpu": "5m", "memory": 0},
    )
    m = _manifest(doc)
    assert schema_errors(m) == [] and cel_errors(m) == []
    assert validate([m]).ok


@pytest.mark.parametrize(
    ("shared", "path", "fragment"),
    [
        ({}, "spec.sharedInstance.name", "required field 'name' is missing"),
        ({"name": ""}, "spec.sharedInstance.name", "must not be empty"),
        ({"name": "x", "perTenantConfig": "yes"}, "spec.sharedInstance.perTenantConfig", "true or false"),
        ({"name": "x", "owner": "a"}, "spec.sharedInstance.owner", "unknown field 'owner'"),
        (
            {"name": "x", "perTenant": {"memory": "600Ti"}},
            "spec.sharedInstance.perTenant.memory",
            "at most 512Ti",
        ),
    ],
)
def test_bad_shared_instance_fields_are_refused_naming_the_field(
    shared: dict[str, Any], path: str, fragment: str
) -> None:
    result = validate([_manifest(_nfinstance(**shared))])
    errors = [e for e in result.errors if e.severity == "error"]
    assert [(e.object, e.path) for e in errors] == [("NFInstance/fire-watch-broker-gw-tower-1", path)]
    assert fragment in errors[0].message, errors[0].message


def test_the_crds_describe_every_sharing_field() -> None:
    pkg = openapi_schema("NFPackage")["properties"]["spec"]["properties"]["flavors"]["properties"]
    for flavor in ("vnf", "fnf"):
        block = pkg[flavor]["properties"]["sharing"]
        assert block["required"] == ["capacityMbps"]
        assert set(block["properties"]) == {"capacityMbps", "maxTenants", "perTenant", "perTenantConfig"}
        cap = block["properties"]["capacityMbps"]
        assert (cap["minimum"], cap.get("exclusiveMinimum")) == (0, True)
        assert block["properties"]["maxTenants"]["minimum"] == 1
    role = openapi_schema("NetworkService")["properties"]["spec"]["properties"]["graph"]["properties"][
        "roles"
    ]
    assert role["items"]["properties"]["sharing"]["enum"] == ["allowed", "forbidden"]
    spec = openapi_schema("Slice")["properties"]["spec"]["properties"]
    # No default: a defaulted "allowed" would break the isolation rule on the server.
    assert spec["sharing"]["enum"] == ["allowed", "forbidden"] and "default" not in spec["sharing"]
    status = openapi_schema("Slice")["properties"]["status"]["properties"]["placement"]["items"]
    assert "sharedInstance" in status["properties"]


def test_a_package_error_in_the_sharing_block_keeps_the_package_out() -> None:
    docs = copy.deepcopy(_example_docs())
    pkg = _doc(docs, "NFPackage", "tower-broker")
    pkg["spec"]["flavors"]["fnf"]["sharing"]["perTenant"] = {"cpu": "3M"}
    result = _validate(docs)
    refs = {(e.object, e.path) for e in result.errors if e.severity == "error"}
    assert ("NFPackage/tower-broker", "spec.flavors.fnf.sharing.perTenant.cpu") in refs
    assert ("default", "tower-broker") not in result.catalog.packages
