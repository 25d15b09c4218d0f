"""Kubernetes quantities ("500m", "1.5", "128Mi") and durations ("7h", "1d12h").

Hand-written because the kubernetes client's ``parse_quantity`` returns Decimals without
saying which part of the string was wrong, and there is no maintained Go-style duration
parser that accepts days; both are a few lines and fully tested.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

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
    r"^(?P<num>[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class QuantityError(ValueError):
    pass


def parse_quantity(value: str | int | float) -> Decimal:
    """A non-negative Kubernetes quantity as a Decimal in base units."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        if value < 0:
            raise QuantityError(f"{value!r} is negative")
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise QuantityError(f"{value!r} is not a Kubernetes quantity (examples: 500m, 2, 128Mi, 1Gi)")
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise QuantityError(f"{value!r} is not a number") from exc
    suffix = match["suffix"] or ""
    factor = Decimal(_BINARY[suffix]) if suffix in _BINARY else _DECIMAL[suffix]
    return number * factor


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity in millicores, rounded up as Kubernetes does."""
    millis = parse_quantity(value) * 1000
    return int(millis.to_integral_value(rounding="ROUND_CEILING"))


def memory_bytes(value: str | int | float) -> int:
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


def format_memory(n: int) -> str:
    for suffix, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    if n >= 2**20:
        return f"{n / 2**20:.1f}Mi"
    return str(n)


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def parse_duration(value: str) -> float:
    """Seconds in a duration such as ``7h``, ``90s`` or ``1d12h``."""
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise QuantityError(f"{value!r} is not a duration (examples: 30s, 5m, 7h, 1d12h)")
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
