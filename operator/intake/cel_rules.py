"""Evaluate the CRDs' CEL rules (``x-kubernetes-validations``) client-side.

The API server enforces these rules; evaluating the very same expressions here (with
cel-python) means a manifest in a pull request is refused for the same reason, with the same
message, before it ever reaches a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import celpy
from celpy.adapter import json_to_cel

from flyslice.crds import openapi_schema
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import Manifest

PathKey = tuple[str | int, ...]


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _rules(schema: dict[str, Any], data: Any, path: PathKey) -> Iterator[tuple[PathKey, dict[str, Any], Any]]:
    for rule in schema.get("x-kubernetes-validations", []):
        yield path, rule, data
    if isinstance(data, dict):
        for name, child in schema.get("properties", {}).items():
            if name in data:
                yield from _rules(child, data[name], (*path, name))
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(data):
            yield from _rules(schema["items"], item, (*path, i))


def cel_errors(manifest: Manifest) -> list[ManifestError]:
    """Errors for every CEL rule of the object's CRD that evaluates to false."""
    errors = []
    for path, rule, value in _rules(openapi_schema(manifest.kind), manifest.data, ()):
        try:
            ok = _program(rule["rule"]).evaluate({"self": json_to_cel(value)})
        except Exception as exc:
            errors.append(
                manifest.error(path, f"could not evaluate rule {rule['rule']!r}: {exc}", severity="note")
            )
            continue
        if not bool(ok):
            field_path = rule.get("fieldPath", "")
            where = path + tuple(p for p in field_path.split(".") if p) if field_path else path
            errors.append(manifest.error(where, str(rule.get("message") or f"failed rule {rule['rule']}")))
    return errors
