"""Kubernetes quantities and durations: parsing, rounding, formatting and the error messages."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.utils import parse_quantity as kubernetes_parse_quantity

from flyslice.crds import openapi_schema
from flyslice.operator.intake.quantities import (
    QuantityError,
    cpu_millis,
    explain_bad_duration,
    explain_bad_quantity,
    format_cpu,
    format_memory,
    memory_bytes,
    parse_duration,
    parse_quantity,
)

CRD_QUANTITY = re.compile(
    openapi_schema("EdgeNode")["properties"]["spec"]["properties"]["capacity"]["properties"]["cpu"]["pattern"]
)
CRD_DURATION = re.compile(openapi_schema("Slice")["properties"]["spec"]["properties"]["lifetime"]["pattern"])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        (2, Decimal(2)),
        (0.25, Decimal("0.25")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1.5", Decimal("1.5")),
        (".5", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("100u", Decimal("0.0001")),
        ("+1", Decimal(1)),
        (" 64Mi ", Decimal(64 * 2**20)),
    ],
)
def test_parse_quantity(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_cpu_rounds_up_to_whole_millicores_and_memory_to_whole_bytes() -> None:
    assert cpu_millis("1500m") == 1500
    assert cpu_millis("1.5") == 1500
    assert cpu_millis("100u") == 1
    assert cpu_millis(2) == 2000
    assert memory_bytes("1.5Gi") == 3 * 2**29
    assert memory_bytes("0.5") == 1
    assert memory_bytes("1k") == 1000


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "12Q",
            "'12Q' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi: unknown suffix 'Q'; use Ki, Mi, "
            "Gi, Ti, Pi, Ei (powers of 1024) or n, u, m, k, M, G, T, P, E (powers of 1000)",
        ),
        (
            "-1",
            "'-1' is negative: use a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi, greater than zero",
        ),
        (-1, "-1 is negative: use a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi, greater than zero"),
        ("1.5.3Gi", "'1.5.3Gi' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi"),
        (
            "512 MB",
            "'512 MB' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi: did you mean '512Mi'?",
        ),
        ("2GB", "'2GB' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi: did you mean '2Gi'?"),
        (
            "4 cores",
            "'4 cores' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi: did you mean '4'?",
        ),
        (
            "1 Gi",
            "'1 Gi' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi: remove the space, '1Gi'",
        ),
        ("", "'' is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi"),
        (True, "boolean true is not a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi"),
    ],
)
def test_bad_quantities_say_what_would_be_valid(value: object, message: str) -> None:
    with pytest.raises(QuantityError) as err:
        parse_quantity(value)  # type: ignore[arg-type]
    assert str(err.value) == message
    assert explain_bad_quantity(value) == message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7h", 25200), ("90s", 90), ("500ms", 0.5), ("1d12h", 129600), ("1h30m", 5400), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert CRD_DURATION.match(text), "the CRD must accept what the parser accepts"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7 hours", "'7 hours' is not a duration such as 30s, 5m, 7h or 1d12h: did you mean '7h'?"),
        ("30min", "'30min' is not a duration such as 30s, 5m, 7h or 1d12h: did you mean '30m'?"),
        ("2days", "'2days' is not a duration such as 30s, 5m, 7h or 1d12h: did you mean '2d'?"),
        ("7", "'7' is not a duration such as 30s, 5m, 7h or 1d12h: add a unit (ms, s, m, h or d), e.g. '7h'"),
        (
            "1.5h",
            "'1.5h' is not a duration such as 30s, 5m, 7h or 1d12h (units: ms, s, m, h, d; no spaces or fractions)",
        ),
        (
            "",
            "'' is not a duration such as 30s, 5m, 7h or 1d12h (units: ms, s, m, h, d; no spaces or fractions)",
        ),
        (
            "h7",
            "'h7' is not a duration such as 30s, 5m, 7h or 1d12h (units: ms, s, m, h, d; no spaces or fractions)",
        ),
        (
            "-1h",
            "'-1h' is not a duration such as 30s, 5m, 7h or 1d12h (units: ms, s, m, h, d; no spaces or fractions)",
        ),
    ],
)
def test_bad_durations_say_what_would_be_valid(text: str, message: str) -> None:
    with pytest.raises(QuantityError) as err:
        parse_duration(text)
    assert str(err.value) == message
    assert explain_bad_duration(text) == message


def test_formatting() -> None:
    assert format_memory(512 * 2**20) == "512Mi"
    assert format_memory(2**30) == "1Gi"
    assert format_memory(3 * 2**10) == "3Ki"
    assert format_memory(1536 * 2**10 + 1) == "1.5Mi"
    assert format_memory(100) == "100"
    assert format_cpu(2000) == "2"
    assert format_cpu(1500) == "1500m"


# -- properties: agreement with the kubernetes client and with the CRD pattern ------------

_number = st.from_regex(r"\A([0-9]{1,6}(\.[0-9]{0,3})?|\.[0-9]{1,3})\Z")
_suffix = st.sampled_from(
    ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E"]
)


@given(_number, _suffix)
def test_quantities_agree_with_the_kubernetes_client(number: str, suffix: str) -> None:
    text = number + suffix
    assert parse_quantity(text) == kubernetes_parse_quantity(text)
    assert CRD_QUANTITY.match(text)


@given(st.integers(min_value=0, max_value=2**20))
def test_memory_in_whole_mebibytes_round_trips(mebibytes: int) -> None:
    n = mebibytes * 2**20
    assert memory_bytes(format_memory(n)) == n


@given(st.integers(min_value=0, max_value=10**7))
def test_cpu_round_trips(millis: int) -> None:
    assert cpu_millis(format_cpu(millis)) == millis


@given(st.one_of(st.text(max_size=12), st.from_regex(r"\A[0-9.+-]{1,5}[a-zA-Z\u0660-\u0669 ]{0,3}\Z")))
def test_parsers_accept_exactly_what_the_crd_accepts_and_fail_only_with_quantity_error(text: str) -> None:
    try:
        parse_quantity(text)
    except QuantityError as exc:
        assert repr(text) in str(exc) or repr(text.strip()) in str(exc)
    else:
        assert CRD_QUANTITY.match(text.strip())
    try:
        parse_duration(text)
    except QuantityError as exc:
        assert repr(text.strip()) in str(exc)
    else:
        assert CRD_DURATION.match(text.strip())
