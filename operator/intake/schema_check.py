"""Validate one object against its CRD schema and phrase jsonschema's findings for humans.

Each message says what is wrong and what would be valid, using the CRD itself (enums,
bounds, descriptions) so that the CLI, the docs and ``kubectl explain`` never disagree.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from datetime import date
from functools import cache
from typing import Any

import jsonschema

from flyslice.crds import openapi_schema, strict_schema
from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.limits import (
    LIMITS,
    MAX_DURATION_CHARS,
    MAX_QUANTITY_CHARS,
    is_unstorable,
    not_a_number,
    show_number,
    too_large,
    too_long,
    too_small,
)
from flyslice.operator.intake.manifests import Manifest, format_path
from flyslice.operator.intake.quantities import (
    DURATION_EXAMPLES,
    QUANTITY_EXAMPLES,
    explain_bad_duration,
    explain_bad_quantity,
)

PathKey = tuple[str | int, ...]
_QUANTITY_FIELDS = ("cpu", "memory")
_DURATION_FIELDS = ("lifetime", "interval")
_MAX_CHARS = {
    **dict.fromkeys(_QUANTITY_FIELDS, MAX_QUANTITY_CHARS),
    **dict.fromkeys(_DURATION_FIELDS, MAX_DURATION_CHARS),
}


@cache
def _validator(kind: str) -> jsonschema.Draft4Validator:
    # OpenAPI v3.0 (what CRDs use) follows JSON Schema draft 4, e.g. boolean exclusiveMinimum.
    return jsonschema.Draft4Validator(strict_schema(kind))


def schema_errors(manifest: Manifest) -> list[ManifestError]:
    errors: list[ManifestError] = []
    unstorable = dict(_unstorable_numbers(openapi_schema(manifest.kind), manifest.data))
    found = list(_validator(manifest.kind).iter_errors(manifest.data))
    # jsonschema lets .nan through every bound and words .inf as "must be at most"; those values
    # get the one message above instead, as does whatever else jsonschema says about them.
    found = [err for err in found if tuple(err.absolute_path) not in unstorable]
    too_long_at = {tuple(err.absolute_path) for err in found if err.validator == "maxLength"}
    # A pattern's explanation of a string of thousands of characters is noise next to "too long".
    found = [
        err for err in found if not (err.validator == "pattern" and tuple(err.absolute_path) in too_long_at)
    ]
    # A value of the wrong type (an unquoted yes for an enum of words) is one mistake: say it once.
    mistyped = {tuple(err.absolute_path) for err in found if err.validator == "type"}
    found = [err for err in found if not (err.validator == "enum" and tuple(err.absolute_path) in mistyped)]
    typos = _typos(found)
    for err in found:
        for path, message in _explain(err, typos, crd=True):
            errors.append(manifest.error(path, message))
    for path, message in unstorable.items():
        errors.append(manifest.error(path, message))
    for path, message in _list_uniqueness(openapi_schema(manifest.kind), manifest.data, (), manifest):
        errors.append(manifest.error(path, message))
    # One finding per field: anyOf branches and their children may report the same place twice.
    unique = {(e.path, e.message): e for e in errors}
    return sorted(unique.values(), key=lambda e: (e.line, e.path))


def _unstorable_numbers(schema: dict[str, Any], data: Any) -> Iterator[tuple[PathKey, str]]:
    """NaN, infinities and integers beyond float64 anywhere in ``data``, with a message each.

    Anywhere, status and free-form config included: JSON has no such numbers, so ``kubectl apply``
    cannot send them either. Iterative, like the YAML line index: documents may be deep.
    """
    stack: list[tuple[Any, PathKey, dict[str, Any] | None]] = [(data, (), schema)]
    while stack:
        value, path, node = stack.pop()
        if isinstance(value, dict):
            props = node.get("properties", {}) if node is not None else {}
            for key, child in value.items():
                sub = props.get(key)
                stack.append(
                    (
                        child,
                        (*path, key if isinstance(key, str) else str(key)),
                        sub if isinstance(sub, dict) else None,
                    )
                )
        elif isinstance(value, list):
            items = node.get("items") if node is not None else None
            for i, child in enumerate(value):
                stack.append((child, (*path, i), items if isinstance(items, dict) else None))
        elif is_unstorable(value):
            field = str(path[-1]) if path and isinstance(path[-1], str) else ""
            yield path, not_a_number(field, value, limited=node is not None and _is_limited(field, node))


def _is_limited(field: str, node: dict[str, Any]) -> bool:
    """Whether ``node`` is a CRD field that :data:`LIMITS` bounds (not a status field of that name)."""
    return field in LIMITS and (
        "maximum" in node or "maxLength" in node or bool(node.get("x-kubernetes-validations"))
    )


def _typos(found: list[jsonschema.ValidationError]) -> set[tuple[PathKey, str]]:
    """(object path, required field) pairs whose absence is explained by a misspelt field.

    ``maxLatency: 5`` should produce one error (did you mean maxLatencyMs?), not a second
    one saying that maxLatencyMs is missing.
    """
    typos: set[tuple[PathKey, str]] = set()
    for err in found:
        schema = err.schema if isinstance(err.schema, dict) else {}
        if err.validator != "additionalProperties" or not isinstance(err.instance, dict):
            continue
        allowed = sorted(schema.get("properties", {}))
        required = set(schema.get("required", [])) - set(err.instance)
        for extra in set(err.instance) - set(allowed):
            guess = difflib.get_close_matches(str(extra), allowed, n=1)
            if guess and guess[0] in required:
                typos.add((tuple(err.absolute_path), guess[0]))
    return typos


def explain_error(err: jsonschema.ValidationError) -> list[tuple[PathKey, str]]:
    """(path relative to the validated instance, message) for one jsonschema finding.

    Used for packages' configSchemas; CRD findings go through :func:`schema_errors`.
    """
    return _explain(err, set(), crd=False)


def _explain(
    err: jsonschema.ValidationError, typos: set[tuple[PathKey, str]], crd: bool
) -> list[tuple[PathKey, str]]:
    """``crd``: the schema is a CRD's, so a field's bounds are those of :data:`LIMITS` and worded so."""
    path: PathKey = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    value = err.instance
    v = err.validator
    field = str(path[-1]) if path and isinstance(path[-1], str) else ""
    if v == "required":
        missing = [
            f
            for f in err.validator_value
            if not (isinstance(value, dict) and f in value) and (path, f) not in typos
        ]
        props = schema.get("properties", {})
        return [
            ((*path, f), f"required field {f!r} is missing{_expected(props.get(f, {}))}") for f in missing
        ]
    if v == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        out: list[tuple[PathKey, str]] = []
        for extra in sorted(set(value) - set(allowed), key=str) if isinstance(value, dict) else []:
            message = _unknown_field(str(extra), schema, path)
            if any((path, f) in typos and f"did you mean {f!r}?" in message for f in allowed):
                message = message.replace("? Valid fields", " (required here)? Valid fields", 1)
            out.append(((*path, extra), message))
        return out
    if v == "type":
        expected = str(err.validator_value)
        wanted = _article(expected)
        hint = ""
        if field in _DURATION_FIELDS:
            wanted = DURATION_EXAMPLES
            if isinstance(value, int | float) and not isinstance(value, bool):
                hint = f": add a unit, e.g. {value}h (units: ms, s, m, h, d)"
            elif isinstance(value, date):
                hint = ": it is a length of time, not a date or time of day"
        elif isinstance(value, date) and expected == "string":
            hint = ": YAML reads an unquoted date as a date; quote it to make it a string"
        elif value is None and expected == "object":
            hint = ": is what belongs under it indented further than this line?"
        elif expected in ("number", "integer") and isinstance(value, str):
            hint = f": write the number without quotes or units, e.g. {_number_example(value)}"
        elif isinstance(value, bool) and expected in ("string", "array"):
            hint = ": YAML reads unquoted yes, no, on, off, true and false as booleans; quote the word if you meant text"
        elif expected == "array" and isinstance(value, str | int | float):
            hint = f": write it as a list, e.g. [{value}]"
        elif expected == "array" and isinstance(value, dict):
            hint = ": start each item of the list with '- '"
        elif (
            expected == "object"
            and isinstance(value, str | int | float)
            and len(schema.get("required", [])) == 1
        ):
            hint = f": write it as {{{schema['required'][0]}: {value}}}"
        return [(path, f"must be {wanted}, got {describe_value(value)}{hint}")]
    if v == "enum":
        options = ", ".join(str(o) for o in err.validator_value)
        guess = difflib.get_close_matches(str(value), [str(o) for o in err.validator_value], n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess and guess[0] != str(value) else ""
        return [(path, f"must be one of {options}; got {describe_value(value)}{hint}")]
    if v == "pattern":
        return [(path, _pattern_message(path, value, str(err.validator_value)))]
    if v == "anyOf" and schema.get("x-kubernetes-int-or-string"):
        hint = ""
        if isinstance(value, float):
            hint = f': Kubernetes takes whole numbers or strings here, so quote it: "{value}"'
        return [(path, f"must be {QUANTITY_EXAMPLES}, got {describe_value(value)}{hint}")]
    if v in ("minimum", "maximum"):
        return [(path, _bounds_message(field, schema, value, v, crd))]
    if v in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(err.validator_value, int | float):
        # JSON Schema draft 6 and later (packages' configSchemas): the bound itself is the value.
        op = "greater than" if v == "exclusiveMinimum" else "less than"
        return [(path, f"must be {op} {err.validator_value}, got {value!r}")]
    if v == "minItems":
        n = err.validator_value
        return [(path, f"must have at least {n} item{'s' if n != 1 else ''}, has {len(value)}")]
    if v == "maxItems":
        return [(path, f"must have at most {err.validator_value} items, has {len(value)}")]
    if v == "minLength":
        return [(path, "must not be empty")]
    if v == "maxLength":
        if crd and field in _MAX_CHARS and field in LIMITS:
            what = "a quantity" if field in _QUANTITY_FIELDS else "a duration"
            return [(path, too_long(field, value, int(err.validator_value), what))]
        return [(path, f"must be at most {err.validator_value} characters long, is {len(value)}")]
    return [(path, err.message)]


def _unknown_field(extra: str, schema: dict[str, Any], path: PathKey) -> str:
    properties: dict[str, Any] = schema.get("properties", {})
    allowed = sorted(properties)
    valid = f"valid fields here are {', '.join(allowed)}" if allowed else "no fields are allowed here"
    guess = difflib.get_close_matches(extra, allowed, n=1)
    if guess:
        return f"unknown field {extra!r}: did you mean {guess[0]!r}? {valid[0].upper()}{valid[1:]}"
    # A field written one level too high (under-indented) belongs to a sibling object.
    owners = [
        name
        for name, child in properties.items()
        if isinstance(child, dict) and extra in child.get("properties", {})
    ]
    if owners:
        where = format_path((*path, owners[0], extra))
        return f"unknown field {extra!r}: it belongs under {owners[0]}, as {where}: indent it there; {valid}"
    return f"unknown field {extra!r}: {valid}"


def _expected(child: dict[str, Any]) -> str:
    """What a missing field should hold, from its CRD schema."""
    if "enum" in child:
        return f": set it to one of {', '.join(str(o) for o in child['enum'])}"
    if child.get("x-kubernetes-int-or-string"):
        return f": set it to {QUANTITY_EXAMPLES}"
    description = str(child.get("description", "")).strip()
    if description:
        first = description.split(". ")[0].rstrip(".")
        if len(first) > 1 and not first[1].isupper():
            first = first[0].lower() + first[1:]
        return f" ({_article(str(child.get('type', 'value')))}: {first})"
    return ""


def _bounds_message(field: str, schema: dict[str, Any], value: Any, validator: str, crd: bool) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    shown = show_number(value)
    # availability keeps "between 0 and 1" (below): its message explains percentages.
    if crd and field in LIMITS and field != "availability":
        if validator == "maximum":
            return too_large(field, value)
        if message := too_small(field, value):
            return message
        high = None
    if low is not None and high is not None:
        message = f"must be between {low} and {high}, got {shown}"
        if field == "availability" and isinstance(value, int | float) and 1 < value <= 100:
            message += f": availability is a fraction, so {value}% is {value / 100:g}"
        return message
    if low is not None:
        op = "greater than" if schema.get("exclusiveMinimum") else "at least"
        return f"must be {op} {low}, got {shown}"
    op = "less than" if schema.get("exclusiveMaximum") else "at most"
    return f"must be {op} {high}, got {shown}"


def _pattern_message(path: PathKey, value: Any, pattern: str) -> str:
    field = str(path[-1]) if path else ""
    if field in _QUANTITY_FIELDS:
        message = explain_bad_quantity(value)
        # What each tenant of a shared instance adds may be zero, unlike what an instance needs.
        return message.replace("greater than zero", "zero or more") if "perTenant" in path else message
    if field == "digest":
        return f"{value!r} is not a digest: expected sha256: followed by 64 lowercase hex digits"
    if field in _DURATION_FIELDS:
        return explain_bad_duration(value)
    if field == "signature":
        return "is not an ed25519 signature: expected the 64 signature bytes in base64 (88 characters ending in ==)"
    if field == "imageSignature":
        return "is not base64: expected the signature bytes in base64, as flyslice sign-image or cosign sign-blob print them"
    if field == "module":
        return f"{value!r} is not a module reference: expected builtin:<name> or file:/absolute/path.py"
    if pattern == "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$":
        return f"{value!r} is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit"
    return f"{value!r} does not match the pattern {pattern}"


def _list_uniqueness(
    schema: dict[str, Any], data: Any, path: PathKey, m: Manifest
) -> Iterator[tuple[PathKey, str]]:
    """Duplicates in lists the CRD declares as sets or maps; the API server refuses them too."""
    if isinstance(data, dict):
        for name, child in schema.get("properties", {}).items():
            if name in data and isinstance(child, dict):
                yield from _list_uniqueness(child, data[name], (*path, name), m)
        return
    if not isinstance(data, list):
        return
    raw_items = schema.get("items")
    items: dict[str, Any] = raw_items if isinstance(raw_items, dict) else {}
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys", [])
    first: dict[str, int] = {}
    for i, item in enumerate(data):
        if list_type == "set":
            ident = repr(item)
            label = f"{item!r}"
        elif list_type == "map" and isinstance(item, dict) and all(k in item for k in keys):
            ident = repr(tuple(item[k] for k in keys))
            label = ", ".join(f"{k} {item[k]!r}" for k in keys)
        else:
            ident = ""
        if ident and ident in first:
            j = first[ident]
            where = f"{format_path((*path, j))}, line {m.line_of((*path, j))}"
            yield (
                (*path, i, *keys[:1]) if list_type == "map" else (*path, i),
                f"duplicate entry {label}: already listed at {where}; each may appear only once",
            )
        elif ident:
            first[ident] = i
        yield from _list_uniqueness(items, item, (*path, i), m)


def _number_example(value: str) -> str:
    digits = "".join(ch for ch in value if ch.isdigit() or ch == ".")
    if digits and value.strip().endswith("%"):
        try:
            return f"{float(digits) / 100:g} (a fraction, not a percentage)"
        except ValueError:
            pass
    return digits or "10"


def _article(t: str) -> str:
    return {
        "object": "a mapping",
        "array": "a list",
        "integer": "an integer",
        "number": "a number",
        "string": "a string",
        "boolean": "true or false",
    }.get(t, t)


def describe_value(value: Any) -> str:
    """A value as the user wrote it in YAML, with its type, for 'got ...' in messages."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float):
        return f"number {show_number(value)}"
    # YAML turns unquoted 2024-01-01 into a date and 2024-01-01T10:00:00 into a datetime.
    return f"{type(value).__name__} {value!s}"
