"""Every key of every CRD property schema is an OpenAPI/Kubernetes schema keyword.

A YAML flow mapping with an unquoted comma in a description (``{type: integer, description: a, b}``)
parses as an extra key ``b`` in the schema: the API server may drop or reject it, and the jsonschema
check of git YAML silently ignores it. This test names the file, the property path and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CRDS = Path(__file__).resolve().parents[2] / "crds"

#: Keywords of the Kubernetes structural-schema subset of OpenAPI v3 (JSONSchemaProps).
KEYWORDS = frozenset(
    {
        "type", "description", "properties", "required", "items", "enum", "pattern", "format",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
        "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties",
        "default", "nullable", "anyOf", "oneOf", "allOf", "not", "additionalProperties", "example",
        "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
        "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
        "x-kubernetes-embedded-resource",
    }
)  # fmt: skip


def _unknown_keys(node: Any, path: str) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for name, schema in props.items():
                if isinstance(schema, dict):
                    found += [f"{path}.{name}: {key!r}" for key in sorted(set(schema) - KEYWORDS, key=str)]
        for key, value in node.items():
            found += _unknown_keys(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _unknown_keys(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("crd", sorted(CRDS.glob("*.yaml")), ids=lambda p: p.name)
def test_schema_keys_are_keywords(crd: Path) -> None:
    docs = list(yaml.safe_load_all(crd.read_text(encoding="utf-8")))
    assert docs, f"{crd.name}: empty"
    bad = [f"{crd.name}{where}" for doc in docs for where in _unknown_keys(doc, "")]
    assert not bad, "schema keys that are not keywords (an unquoted comma in a flow mapping?):\n" + "\n".join(
        bad
    )


def test_the_check_catches_a_comma_in_a_flow_mapping() -> None:
    schema = yaml.safe_load(
        "properties:\n  n: {type: integer, description: Messages for another slice, dropped.}\n"
    )
    assert _unknown_keys(schema, "") == [".n: 'dropped.'"]
