"""The CustomResourceDefinitions of flyslice, the single source of truth for every schema.

The YAML files in this directory are applied to Kubernetes as they are; the CLI and the
embedded mode validate plain git YAML against the very same ``openAPIV3Schema``.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

GROUP = "flyslice.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CRD_DIR = Path(__file__).resolve().parent
KINDS = ("EdgeNode", "NFPackage", "NetworkService", "Slice", "NFInstance", "GitSource")


@cache
def crd_documents() -> dict[str, dict[str, Any]]:
    """Every CRD document, keyed by its kind."""
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def crd_paths() -> list[Path]:
    return sorted(CRD_DIR.glob("*.yaml"))


def openapi_schema(kind: str) -> dict[str, Any]:
    """The CRD's openAPIV3Schema for ``kind``, exactly as the API server sees it."""
    versions = crd_documents()[kind]["spec"]["versions"]
    (version,) = [v for v in versions if v["name"] == VERSION]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def is_namespaced(kind: str) -> bool:
    return bool(crd_documents()[kind]["spec"]["scope"] == "Namespaced")


@cache
def strict_schema(kind: str) -> dict[str, Any]:
    """The schema for client-side validation (JSON Schema draft 4, which OpenAPI v3.0 follows).

    The API server drops unknown fields (or refuses them with ``kubectl``'s strict field
    validation). Client-side we refuse them too, so a misspelt field never passes silently:
    every object schema with ``properties`` gets ``additionalProperties: false`` unless it
    preserves unknown fields. ``metadata`` is left to Kubernetes' own rules.
    """
    schema = copy.deepcopy(openapi_schema(kind))
    _close_objects(schema)
    return schema


def _close_objects(node: dict[str, Any]) -> None:
    props = node.get("properties")
    if isinstance(props, dict):
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for name, child in props.items():
            if name != "metadata":
                _close_objects(child)
    items = node.get("items")
    if isinstance(items, dict):
        _close_objects(items)
