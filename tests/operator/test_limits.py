"""Numbers are bounded before they are used: one table of limits (operator/intake/limits.py), the
CRDs carrying the same bounds, and parsers whose work stays small whatever a YAML file holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from flyslice.crds import KINDS, openapi_schema
from flyslice.operator.intake.limits import (
    INT32_MAX,
    INT32_MIN,
    LIMITS,
    MAX_DURATION_CHARS,
    MAX_MEMORY_BYTES,
    MAX_QUANTITY_CHARS,
    duration_rule,
    duration_rule_message,
    quantity_rule,
    quantity_rule_message,
    show_number,
)
from flyslice.operator.intake.quantities import (
    QuantityError,
    cpu_millis,
    format_memory,
    memory_bytes,
    parse_duration,
    parse_quantity,
)

QUANTITY_FIELDS = ("cpu", "memory")


def _short_id(value: object) -> str:
    text = value if isinstance(value, str) else show_number(value)
    return text if len(text) <= 24 else text[:20] + "..."


DURATION_FIELDS = ("lifetime", "interval")


def _spec_fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(path, field name, schema) of every field under ``spec``: what users write (status is not)."""
    for name, child in node.get("properties", {}).items():
        yield f"{path}.{name}", name, child
        yield from _spec_fields(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _spec_fields(node["items"], f"{path}[]")


def _all_spec_fields() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        f for kind in KINDS for f in _spec_fields(openapi_schema(kind)["properties"]["spec"], f"{kind}.spec")
    ]


NUMBERS = [(p, n, s) for p, n, s in _all_spec_fields() if s.get("type") in ("number", "integer")]
QUANTITIES = [(p, n, s) for p, n, s in _all_spec_fields() if s.get("x-kubernetes-int-or-string")]
DURATIONS = [(p, n, s) for p, n, s in _all_spec_fields() if n in DURATION_FIELDS]


def test_the_crds_have_the_numeric_fields_this_test_knows() -> None:
    # A new numeric field must be added to LIMITS (and so get bounds in its CRD) before it ships.
    assert len(NUMBERS) == 15 and len(QUANTITIES) == 14 and len(DURATIONS) == 2


@pytest.mark.parametrize(("path", "name", "schema"), NUMBERS, ids=[p for p, _, _ in NUMBERS])
def test_every_number_in_a_spec_carries_the_limits_of_the_table(
    path: str, name: str, schema: dict[str, Any]
) -> None:
    limit = LIMITS[name]
    assert schema.get("maximum") == limit.maximum, path
    assert schema.get("minimum") == limit.minimum, path
    assert bool(schema.get("exclusiveMinimum")) == limit.exclusive_minimum, path
    if schema["type"] == "integer":
        # maxTenants starts at 1; every integer still fits in int32, as in Kubernetes.
        assert limit.minimum is not None and limit.minimum >= INT32_MIN and limit.maximum == INT32_MAX, (
            "integers are int32, as in Kubernetes"
        )


@pytest.mark.parametrize(("path", "name", "schema"), QUANTITIES, ids=[p for p, _, _ in QUANTITIES])
def test_every_quantity_in_a_spec_is_bounded_by_length_and_by_a_cel_rule(
    path: str, name: str, schema: dict[str, Any]
) -> None:
    assert schema["maxLength"] == MAX_QUANTITY_CHARS, path
    rules = [(r["rule"], r["message"]) for r in schema["x-kubernetes-validations"]]
    assert rules == [(quantity_rule(name), quantity_rule_message(name))], path
    assert LIMITS[name].shown.split(" ")[0] in schema["description"], "the description names the maximum"


@pytest.mark.parametrize(("path", "name", "schema"), DURATIONS, ids=[p for p, _, _ in DURATIONS])
def test_every_duration_is_bounded_by_length_and_by_a_cel_rule(
    path: str, name: str, schema: dict[str, Any]
) -> None:
    assert schema["maxLength"] == MAX_DURATION_CHARS, path
    rules = [(r["rule"], r["message"]) for r in schema["x-kubernetes-validations"]]
    assert (duration_rule(name), duration_rule_message(name)) in rules, path
    assert LIMITS[name].shown.split(" ")[0] in " ".join(schema["description"].split())


# -- the parsers: bounded work, exact limits ------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        (
            "1e9999999",
            "cpu",
            "cpu '1e9999999' is more than any node could have; at most 1M (a million cores)",
        ),
        (
            "1e999999",
            "memory",
            "memory '1e999999' is larger than any node could have; at most 512Ti (2^49 bytes)",
        ),
        (
            "1e5000",
            "memory",
            "memory '1e5000' is larger than any node could have; at most 512Ti (2^49 bytes)",
        ),
        ("1e999", "memory", "memory '1e999' is larger than any node could have; at most 512Ti (2^49 bytes)"),
        ("1000001", "cpu", "cpu '1000001' is more than any node could have; at most 1M (a million cores)"),
        (
            "1000000.001",
            "cpu",
            "cpu '1000000.001' is more than any node could have; at most 1M (a million cores)",
        ),
        ("513Ti", "memory", "memory '513Ti' is larger than any node could have; at most 512Ti (2^49 bytes)"),
        (
            MAX_MEMORY_BYTES + 1,
            "memory",
            "memory 562949953421313 is larger than any node could have; at most 512Ti (2^49 bytes)",
        ),
        (10**400, "cpu", "cpu 1e+400 is more than any node could have; at most 1M (a million cores)"),
        (float("nan"), "cpu", "cpu .nan is not a number: write one above 0 up to 1M (a million cores)"),
        (
            float("inf"),
            "memory",
            "memory .inf is larger than any node could have; at most 512Ti (2^49 bytes)",
        ),
        (
            "1e-1000",
            "cpu",
            "cpu '1e-1000' has an exponent below -999: use a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi",
        ),
        (
            "9" * 70,
            "memory",
            "memory '999999999999999999999999999999...99999999' has 70 characters, more than the 64 a quantity "
            "may have; at most 512Ti (2^49 bytes)",
        ),
    ],
    ids=_short_id,
)
def test_quantities_beyond_the_limits_are_refused_at_once(
    value: str | int | float, field: str, message: str
) -> None:
    start = time.perf_counter()
    with pytest.raises(QuantityError) as err:
        (cpu_millis if field == "cpu" else memory_bytes)(value)
    assert str(err.value) == message
    assert time.perf_counter() - start < 0.1


def test_quantities_at_the_limits_are_exact() -> None:
    assert cpu_millis("1M") == cpu_millis(1_000_000) == cpu_millis("1e6") == 10**9
    assert cpu_millis("999999.9999") == 10**9, "rounded up to whole millicores, still at the limit"
    assert memory_bytes("512Ti") == memory_bytes(MAX_MEMORY_BYTES) == 2**49
    # 34 significant digits: the default Decimal context (28) would round this down to the limit.
    with pytest.raises(QuantityError):
        cpu_millis("1000000.00000000000000000000000001")
    assert cpu_millis("1e-999") == 1 and memory_bytes("1e-999") == 1, "tiny, not zero: rounded up"
    assert parse_quantity("1e999") == Decimal("1e999"), "no field: no maximum, but still exact and fast"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        (
            "9" * 5000 + "h",
            "lifetime",
            "lifetime '999999999999999999999999999999...9999999h' has 5001 characters, more than the 64 a "
            "duration may have; at most 3650d (10 years)",
        ),
        ("3651d", "lifetime", "lifetime '3651d' is longer than any slice may live; at most 3650d (10 years)"),
        (
            "87601h",
            "lifetime",
            "lifetime '87601h' is longer than any slice may live; at most 3650d (10 years)",
        ),
        (
            "8d",
            "interval",
            "interval '8d' is longer than flyslice waits between fetches; at most 7d (a week)",
        ),
        (
            "604800001ms",
            "interval",
            "interval '604800001ms' is longer than flyslice waits between fetches; at most 7d (a week)",
        ),
    ],
    ids=_short_id,
)
def test_durations_beyond_the_limits_are_refused_at_once(value: str, field: str, message: str) -> None:
    with pytest.raises(QuantityError) as err:
        parse_duration(value, field)
    assert str(err.value) == message


def test_durations_at_the_limits_are_accepted() -> None:
    assert parse_duration("3650d", "lifetime") == parse_duration("87600h", "lifetime") == 3650 * 86400
    assert parse_duration("604800000ms", "interval") == 7 * 86400
    with pytest.raises(QuantityError, match="longer than 64 characters"):
        parse_duration("1" * 65 + "s")


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (10**400 + 1, "95367431640625" + "0" * 380 + ".0Mi"),
        (2**49 + 1, "536870912.0Mi"),
        (3 * 2**19 + 1, "1.5Mi"),
    ],
    ids=["googol-ish", "beyond-the-limit", "fraction"],
)
def test_format_memory_formats_any_integer_without_a_float(n: int, text: str) -> None:
    assert format_memory(n) == text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (float("nan"), ".nan"),
        (float("inf"), ".inf"),
        (float("-inf"), "-.inf"),
        (10**400, "1e+400"),
        (-(12345 * 10**20), "-1.23e+24"),
        (10**14, "100000000000000"),
        (1.5, "1.5"),
        ("x" * 50, "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxx'"),
    ],
)
def test_numbers_in_messages_read_as_in_yaml_and_stay_short(value: object, shown: str) -> None:
    assert show_number(value) == shown
