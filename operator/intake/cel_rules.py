"""Evaluate the CRDs' CEL rules (``x-kubernetes-validations``) client-side.

The API server enforces these rules; evaluating the very same expressions here (with
cel-python) means a manifest in a pull request is refused for the same reason, with the same
message, before it ever reaches a cluster. cel-python lacks the Kubernetes CEL libraries the
CRDs use (quantities, ``find``/``findAll``, ``sum``); the few functions used are defined below,
with Kubernetes' semantics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from flyslice.crds import openapi_schema
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.manifests import Manifest
from flyslice.operator.intake.quantities import QuantityError, parse_quantity

PathKey = tuple[str | int, ...]


class _Quantity:
    """A value of the Kubernetes CEL ``Quantity`` type."""

    def __init__(self, value: Decimal) -> None:
        self.value = value


def _parse(text: Any) -> Decimal | None:
    """What Kubernetes' ParseQuantity reads, signs included; ``None`` when it is no quantity."""
    raw = str(text)
    negative = raw.startswith("-")
    try:
        value = parse_quantity(raw[1:] if negative else raw)
    except QuantityError:
        return None
    return -value if negative else value


def _quantity(text: Any) -> Any:
    value = _parse(text)
    if value is None:
        return CELEvalError(f"quantity: {text!s} is not a quantity")
    return _Quantity(value)


def _is_quantity(text: Any) -> celtypes.BoolType:
    return celtypes.BoolType(_parse(text) is not None)


def _compare_to(a: _Quantity, b: _Quantity) -> celtypes.IntType:
    return celtypes.IntType((a.value > b.value) - (a.value < b.value))


def _find(text: Any, regex: Any) -> celtypes.StringType:
    found = re.search(str(regex), str(text))
    return celtypes.StringType(found.group(0) if found else "")


def _find_all(text: Any, regex: Any) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(m.group(0)) for m in re.finditer(str(regex), str(text))])


def _sum(items: Any) -> Any:
    values = list(items)
    if all(isinstance(v, celtypes.IntType) for v in values):
        return celtypes.IntType(sum(int(v) for v in values))
    return celtypes.DoubleType(sum(float(v) for v in values))


_FUNCTIONS: dict[str, Any] = {
    "quantity": _quantity,
    "isQuantity": _is_quantity,
    "compareTo": _compare_to,
    "isLessThan": lambda a, b: celtypes.BoolType(a.value < b.value),
    "isGreaterThan": lambda a, b: celtypes.BoolType(a.value > b.value),
    "find": _find,
    "findAll": _find_all,
    "sum": _sum,
}


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule), functions=_FUNCTIONS)


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
