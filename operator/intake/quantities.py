"""Kubernetes quantities ("500m", "1.5", "128Mi") and durations ("7h", "1d12h").

Hand-written because the kubernetes client's ``parse_quantity`` returns Decimals without
saying which part of the string was wrong, and there is no maintained Go-style duration
parser that accepts days; both are a few lines and fully tested.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Context, Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext

from flyslice.operator.intake.limits import (
    DURATION_UNITS_S,
    LIMITS,
    MAX_DURATION_CHARS,
    MAX_EXPONENT_DIGITS,
    MAX_QUANTITY_CHARS,
    not_a_number,
    quantity_maximum,
    show_number,
    too_large,
    too_long,
)

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(
    r"^(?P<num>[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE](?P<exp>[+-]?[0-9]+))?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)
# [0-9], not \d: \d also matches other scripts' digits, which neither Kubernetes nor the CRD accept.
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_NUMBER_AND_UNIT = re.compile(r"^\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s*([A-Za-z]*)\s*$")
#: Units people write for memory that Kubernetes spells differently.
_SUFFIX_FIXES = {
    "KB": "Ki",
    "KiB": "Ki",
    "kb": "k",
    "K": "k",
    "MB": "Mi",
    "MiB": "Mi",
    "mb": "Mi",
    "mi": "Mi",
    "Mb": "Mi",
    "GB": "Gi",
    "GiB": "Gi",
    "gb": "Gi",
    "gi": "Gi",
    "Gb": "Gi",
    "g": "G",
    "TB": "Ti",
    "TiB": "Ti",
    "ti": "Ti",
    "B": "",
    "b": "",
    "cores": "",
    "core": "",
    "cpu": "",
    "cpus": "",
}
_DURATION_FIXES = {
    "sec": "s",
    "secs": "s",
    "second": "s",
    "seconds": "s",
    "min": "m",
    "mins": "m",
    "minute": "m",
    "minutes": "m",
    "hr": "h",
    "hrs": "h",
    "hour": "h",
    "hours": "h",
    "H": "h",
    "day": "d",
    "days": "d",
    "D": "d",
    "M": "m",
    "S": "s",
}
QUANTITY_EXAMPLES = "a Kubernetes quantity such as 500m, 2, 128Mi or 1Gi"
DURATION_EXAMPLES = "a duration such as 30s, 5m, 7h or 1d12h"


class QuantityError(ValueError):
    pass


#: Beyond any field's maximum, and small enough that Decimal(int) stays cheap.
LARGEST_QUANTITY = 10**30


#: Enough digits for any quantity of MAX_QUANTITY_CHARS characters times the largest suffix, so that
#: arithmetic on it is exact (the default context would round to 28 digits).
_EXACT = Context(prec=200, traps=[InvalidOperation, Overflow, DivisionByZero])


def parse_quantity(value: str | int | float, field: str | None = None) -> Decimal:
    """A non-negative Kubernetes quantity as a Decimal in base units.

    The work is bounded whatever the input: NaN, infinities, strings longer than
    ``MAX_QUANTITY_CHARS`` and exponents of more than ``MAX_EXPONENT_DIGITS`` significant digits
    are refused before any arithmetic. With ``field`` (``cpu`` or ``memory``), a value above that
    field's maximum is refused too, with the message naming the maximum.
    """
    if isinstance(value, bool):
        raise QuantityError(explain_bad_quantity(value))
    if isinstance(value, float) and not math.isfinite(value):
        raise QuantityError(not_a_number(field or "", value))
    if isinstance(value, int | float):
        if value < 0:
            raise QuantityError(explain_bad_quantity(value))
        if value > LARGEST_QUANTITY:
            raise QuantityError(_too_large(field, value))
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        return _within(number, field, value)
    if not isinstance(value, str):
        raise QuantityError(explain_bad_quantity(value))
    text = value.strip()
    if len(text) > MAX_QUANTITY_CHARS:
        if field is not None:
            raise QuantityError(too_long(field, text, MAX_QUANTITY_CHARS, "a quantity"))
        raise QuantityError(f"{show_number(text)} is longer than {MAX_QUANTITY_CHARS} characters")
    match = _QUANTITY.match(text)
    if not match:
        raise QuantityError(explain_bad_quantity(value))
    exponent = (match["exp"] or "").lstrip("+-").lstrip("0")
    if len(exponent) > MAX_EXPONENT_DIGITS:
        if (match["exp"] or "").startswith("-"):
            name = f"{field} " if field else ""
            raise QuantityError(
                f"{name}{show_number(text)} has an exponent below -{'9' * MAX_EXPONENT_DIGITS}: "
                f"use {QUANTITY_EXAMPLES}"
            )
        raise QuantityError(_too_large(field, text))
    suffix = match["suffix"] or ""
    factor = Decimal(_BINARY[suffix]) if suffix in _BINARY else _DECIMAL[suffix]
    with localcontext(_EXACT):
        number = Decimal(match["num"]) * factor
    return _within(number, field, value)


def _within(number: Decimal, field: str | None, value: object) -> Decimal:
    if field is not None and number > quantity_maximum(field):
        raise QuantityError(too_large(field, value))
    return number


def _too_large(field: str | None, value: object) -> str:
    if field is not None:
        return too_large(field, value)
    return f"{show_number(value)} is larger than any quantity flyslice accepts"


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity in millicores, rounded up as Kubernetes does; at most ``LIMITS['cpu']``."""
    with localcontext(_EXACT):
        millis = parse_quantity(value, "cpu") * 1000
        return int(millis.to_integral_value(rounding=ROUND_CEILING))


def memory_bytes(value: str | int | float) -> int:
    """Memory quantity in bytes, rounded up; at most ``LIMITS['memory']``."""
    with localcontext(_EXACT):
        return int(parse_quantity(value, "memory").to_integral_value(rounding=ROUND_CEILING))


def format_memory(n: int) -> str:
    for suffix, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    if n >= 2**20:
        # Integer arithmetic: any int, however large, formats without a float overflow.
        tenths = (n * 10 + 2**19) // 2**20
        return f"{tenths // 10}.{tenths % 10}Mi"
    return str(n)


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def parse_duration(value: str, field: str | None = None) -> float:
    """Seconds in a duration such as ``7h``, ``90s`` or ``1d12h``.

    Strings longer than ``MAX_DURATION_CHARS`` are refused before any number is read (a part of
    thousands of digits is beyond ``int()``); with ``field`` (``lifetime`` or ``interval``), so is a
    duration above that field's maximum.
    """
    text = value.strip()
    if len(text) > MAX_DURATION_CHARS:
        if field is not None:
            raise QuantityError(too_long(field, text, MAX_DURATION_CHARS, "a duration"))
        raise QuantityError(f"{show_number(text)} is longer than {MAX_DURATION_CHARS} characters")
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise QuantityError(explain_bad_duration(value))
    # Whole milliseconds, exactly; the CRD's CEL rule compares the same sum.
    millis = sum(int(n) * round(DURATION_UNITS_S[u] * 1000) for n, u in parts)
    if field is not None and millis > LIMITS[field].maximum * 1000:
        raise QuantityError(too_large(field, value))
    return millis / 1000


def explain_bad_quantity(value: object) -> str:
    """Why ``value`` is not a usable quantity, with the fix when the mistake is a common one."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()} is not {QUANTITY_EXAMPLES}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            return f"{value!r} is negative: use {QUANTITY_EXAMPLES}, greater than zero"
        return f"{value!r} is not {QUANTITY_EXAMPLES}"
    text = str(value)
    base = f"{show_number(text)} is not {QUANTITY_EXAMPLES}"
    found = _NUMBER_AND_UNIT.match(text)
    if not found:
        return base
    number, unit = found.groups()
    if number.startswith("-"):
        return f"{show_number(text)} is negative: use {QUANTITY_EXAMPLES}, greater than zero"
    if unit in _SUFFIX_FIXES:
        fixed = number + _SUFFIX_FIXES[unit]
        return f"{base}: did you mean {fixed!r}?"
    if unit in _BINARY or unit in _DECIMAL:
        return f"{base}: remove the space, {number + unit!r}"
    return (
        f"{base}: unknown suffix {unit!r}; use Ki, Mi, Gi, Ti, Pi, Ei (powers of 1024) "
        "or n, u, m, k, M, G, T, P, E (powers of 1000)"
    )


def explain_bad_duration(value: object) -> str:
    text = str(value).strip()
    base = f"{show_number(text)} is not {DURATION_EXAMPLES}"
    words = re.fullmatch(r"([0-9]+)\s*([A-Za-z]+)", text)
    if words and words[2] in _DURATION_FIXES:
        return f"{base}: did you mean {words[1] + _DURATION_FIXES[words[2]]!r}?"
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return f"{base}: add a unit (ms, s, m, h or d), e.g. {text + 'h'!r}"
    return f"{base} (units: ms, s, m, h, d; no spaces or fractions)"
