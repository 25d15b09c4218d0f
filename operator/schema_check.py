"""Validate one object against its CRD schema and phrase jsonschema's findings for humans."""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

import jsonschema

from flyslice.crds import strict_schema

from .errors import ManifestError
from .manifests import Manifest

_QUANTITY_HINT = "a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi"


@cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 (what CRDs use) follows JSON Schema draft 4, e.g. boolean exclusiveMinimum.
    return jsonschema.Draft4Validator(strict_schema(kind))


def schema_errors(manifest: Manifest) -> list[ManifestError]:
    errors: list[ManifestError] = []
    for err in _validator(manifest.kind).iter_errors(manifest.data):
        for path, message in _explain(err):
            errors.append(manifest.error(path, message))
    # One finding per field: anyOf branches and their children may report the same place twice.
    unique = {(e.path, e.message): e for e in errors}
    return sorted(unique.values(), key=lambda e: (e.line, e.path))


def _explain(err: jsonschema.ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    path = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    value = err.instance
    v = err.validator
    if v == "required":
        missing = [f for f in err.validator_value if not (isinstance(value, dict) and f in value)]
        return [((*path, f), f"required field {f!r} is missing") for f in missing]
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        out = []
        for extra in sorted(set(value) - set(allowed)) if isinstance(value, dict) else []:
            guess = difflib.get_close_matches(str(extra), allowed, n=1)
            hint = f"did you mean {guess[0]!r}? " if guess else ""
            out.append(
                ((*path, extra), f"unknown field {extra!r}: {hint}valid fields here are {', '.join(allowed)}")
            )
        return out
    if v == "type":
        return [(path, f"must be {_article(str(err.validator_value))}, got {_describe(value)}")]
    if v == "enum":
        options = ", ".join(str(o) for o in err.validator_value)
        return [(path, f"must be one of {options}; got {value!r}")]
    if v == "pattern":
        return [(path, _pattern_message(path, value, str(err.validator_value)))]
    if v == "anyOf" and schema.get("x-kubernetes-int-or-string"):
        return [(path, f"must be {_QUANTITY_HINT}, got {_describe(value)}")]
    if v == "minimum":
        op = ">" if schema.get("exclusiveMinimum") else ">="
        return [(path, f"must be {op} {err.validator_value}, got {value!r}")]
    if v == "maximum":
        return [(path, f"must be <= {err.validator_value}, got {value!r}")]
    if v == "minItems":
        return [(path, f"must have at least {err.validator_value} item(s)")]
    if v == "maxItems":
        return [(path, f"must have at most {err.validator_value} items, has {len(value)}")]
    if v == "minLength":
        return [(path, "must not be empty")]
    if v == "maxLength":
        return [(path, f"must be at most {err.validator_value} characters long")]
    return [(path, err.message)]


def _pattern_message(path: tuple[str | int, ...], value: Any, pattern: str) -> str:
    field = str(path[-1]) if path else ""
    if field in ("cpu", "memory"):
        return f"{value!r} is not {_QUANTITY_HINT}"
    if field == "digest":
        return f"{value!r} is not a digest: expected sha256: followed by 64 lowercase hex digits"
    if field in ("lifetime", "interval"):
        return f"{value!r} is not a duration: expected e.g. 30s, 5m, 7h or 1d12h"
    if field == "module":
        return f"{value!r} is not a module reference: expected builtin:<name> or file:/absolute/path.py"
    return f"{value!r} does not match the pattern {pattern}"


def _article(t: str) -> str:
    return {
        "object": "a mapping",
        "array": "a list",
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "boolean": "true or false",
    }.get(t, t)


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!r}"
