"""How large (and how small) every number in a manifest may be: one table, used by every check.

A YAML file can hold ``.nan``, ``.inf``, integers of thousands of digits and quantities such as
``1e999999``; unchecked, they crash or stall the arithmetic downstream (Decimal overflow, ``float()``
of a huge int, a solver fed NaN). Each bound here is far above anything real and far below what would
make that arithmetic slow, inexact or overflowing.

The CRDs carry the same bounds (``minimum``/``maximum`` on numbers, ``maxLength`` and CEL rules on
quantity and duration strings) so that ``kubectl apply`` and ``flyslice validate`` refuse the same
objects; ``tests/operator/test_limits.py`` checks every CRD against this table and the CEL rules
against :func:`quantity_rule` and :func:`duration_rule`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from decimal import Decimal

#: Longest quantity ("500m", "1.5Gi") or duration ("1d12h") string; real ones are under 20.
MAX_QUANTITY_CHARS = 64
MAX_DURATION_CHARS = 64
#: Quantity exponents ("1e3", "5e-1") with more significant digits than this are refused outright:
#: Kubernetes' quantity parser, which the API server runs for the CRDs' CEL rules, would otherwise
#: build numbers of that many digits.
MAX_EXPONENT_DIGITS = 3
#: Integers with more digits are read as a :class:`LongNumber`, never by ``int()`` (which refuses
#: more than 4300 digits, and takes quadratic time without that limit).
MAX_NUMBER_DIGITS = 1000
#: The largest magnitude JSON (and so the API server) can carry: a float64.
LARGEST_JSON_NUMBER = sys.float_info.max

MAX_CPU_CORES = 10**6
#: 2^49 bytes (512Ti): the ILP counts memory in bytes, and HiGHS refuses coefficients of 1e15 or more.
MAX_MEMORY_BYTES = 2**49
ONE_DAY_MS = 86_400_000
MAX_BANDWIDTH_MBPS = 10**7
#: Costs are relative (1 is the usual price). The objective weighs a placed NF at cost x (its CPU and
#: memory shares of the largest host), a rejected slice at 1000 (docs/solver.md): far above 1000,
#: the solver would turn away small slices that fit, only because their hosts are expensive.
MAX_COST = 1000
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_LIFETIME_S = 3650 * 86_400
MAX_INTERVAL_S = 7 * 86_400


class LongNumber(float):
    """An integer of more than ``MAX_NUMBER_DIGITS`` digits, as the YAML reader leaves it: an infinity
    (what it is to any arithmetic, and what every check refuses) that remembers its digits."""

    text: str

    def __new__(cls, text: str) -> LongNumber:
        number = super().__new__(cls, "-inf" if text.strip().startswith("-") else "inf")
        number.text = text
        return number

    def __getnewargs__(self) -> tuple[str]:  # type: ignore[override]
        # copy and pickle rebuild it from its text, not from the infinity it stands for.
        return (self.text,)


@dataclass(frozen=True)
class Limit:
    """The range of one field, and how to say that a value is outside it."""

    maximum: int | float
    #: The maximum as a user would write it, e.g. ``512Ti (2^49 bytes)``.
    shown: str
    #: What a larger value would mean, completing "memory '1e999999' ...".
    too_large: str
    minimum: int | float | None = None
    #: Set when the minimum itself is not a valid value (``exclusiveMinimum``).
    exclusive_minimum: bool = False
    #: What a smaller value would mean, like ``too_large``; ``None`` keeps "must be at least".
    too_small: str | None = None


#: By field name: fields of the same name mean the same thing in every kind.
LIMITS: dict[str, Limit] = {
    "cpu": Limit(MAX_CPU_CORES, "1M (a million cores)", "is more than any node could have", 0, True),
    "memory": Limit(MAX_MEMORY_BYTES, "512Ti (2^49 bytes)", "is larger than any node could have", 0, True),
    "availability": Limit(1, "1", "is more than certain", minimum=0),
    "cost": Limit(
        MAX_COST, f"{MAX_COST} (1 is the usual price)", "is more than any relative price", minimum=0
    ),
    "latencyMs": Limit(ONE_DAY_MS, f"{ONE_DAY_MS} (one day in ms)", "is longer than a day", minimum=0),
    "processingLatencyMs": Limit(
        ONE_DAY_MS, f"{ONE_DAY_MS} (one day in ms)", "is longer than a day", minimum=0
    ),
    "maxLatencyMs": Limit(
        ONE_DAY_MS, f"{ONE_DAY_MS} (one day in ms)", "is longer than a day", minimum=0, exclusive_minimum=True
    ),
    "bandwidthMbps": Limit(
        MAX_BANDWIDTH_MBPS, f"{MAX_BANDWIDTH_MBPS} (10 Tbit/s)", "is faster than any link", 0
    ),
    "priority": Limit(
        INT32_MAX, str(INT32_MAX), "does not fit in 32 bits", INT32_MIN, too_small="does not fit in 32 bits"
    ),
    # What one shared instance can process: a rate like bandwidthMbps, but zero would be no instance at all.
    "capacityMbps": Limit(
        MAX_BANDWIDTH_MBPS,
        f"{MAX_BANDWIDTH_MBPS} (10 Tbit/s)",
        "is faster than any instance",
        0,
        exclusive_minimum=True,
    ),
    "maxTenants": Limit(INT32_MAX, str(INT32_MAX), "does not fit in 32 bits", minimum=1),
    "lifetime": Limit(MAX_LIFETIME_S, "3650d (10 years)", "is longer than any slice may live"),
    "interval": Limit(MAX_INTERVAL_S, "7d (a week)", "is longer than flyslice waits between fetches"),
}
#: The quantity each quantity field's maximum is written as in the CRDs' CEL rules.
QUANTITY_MAXIMUM = {"cpu": "1M", "memory": "512Ti"}
#: Seconds per duration unit; ms first so that a parser tries it before m.
DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def show_number(value: object) -> str:
    """A number as short as it reads in YAML: ``.nan``, ``-.inf``, ``1e+400`` for a 401-digit integer."""
    if isinstance(value, LongNumber):
        digits = "".join(ch for ch in value.text if ch.isdigit()).lstrip("0") or "0"
        sign = "-" if value < 0 else ""
        return f"{sign}{_scientific(digits)}"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        sign = "-" if value < 0 else ""
        return f"{sign}{_scientific(_digits(abs(value)))}"
    if isinstance(value, str):
        return repr(shorten(value))
    return repr(value)


def _scientific(digits: str) -> str:
    mantissa = f"{digits[0]}.{digits[1:3]}".rstrip("0").rstrip(".")
    return f"{mantissa}e+{len(digits) - 1}"


def _digits(n: int) -> str:
    try:
        return str(n)
    except ValueError:  # beyond sys.get_int_max_str_digits(): approximate, it is only for a message
        exponent = int(n.bit_length() * math.log10(2))
        return "1" + "0" * exponent


def shorten(text: str, keep: int = 40) -> str:
    """``text`` cut in the middle when longer than ``keep`` characters, so that one error stays one line."""
    if len(text) <= keep:
        return text
    return f"{text[: keep - 10]}...{text[-8:]}"


def too_large(field: str, value: object) -> str:
    limit = LIMITS[field]
    return f"{field} {show_number(value)} {limit.too_large}; at most {limit.shown}"


def too_small(field: str, value: object) -> str | None:
    """The message for a value below the minimum, or ``None`` when the generic wording fits better."""
    limit = LIMITS[field]
    if limit.too_small is None or limit.minimum is None:
        return None
    return f"{field} {show_number(value)} {limit.too_small}; at least {limit.minimum}"


def too_long(field: str, text: str, max_chars: int, what: str) -> str:
    """A quantity or duration string (``what``) longer than the CRD's ``maxLength``."""
    return (
        f"{field} {show_number(text)} has {len(text)} characters, more than the {max_chars} "
        f"{what} may have; at most {LIMITS[field].shown}"
    )


def not_a_number(field: str, value: float, limited: bool = True) -> str:
    """A ``.nan``, an infinity or a number beyond float64 in ``field``.

    ``limited`` says whether ``field`` is one the CRDs bound (a status or config field of the same
    name is not); the message then says which values are valid.
    """
    name = field or "value"
    limit = LIMITS.get(field) if limited else None
    if isinstance(value, float) and math.isnan(value):
        if limit is not None and limit.minimum is not None:
            above = "above" if limit.exclusive_minimum else "from"
            return f"{name} .nan is not a number: write one {above} {limit.minimum} up to {limit.shown}"
        return (
            f"{name} .nan is not a number, and the API server cannot store it (JSON has no NaN): "
            "write a number"
        )
    if limit is not None:
        if value > 0:
            return too_large(field, value)
        op = "greater than" if limit.exclusive_minimum else "at least"
        return too_small(field, value) or f"must be {op} {limit.minimum}, got {show_number(value)}"
    return (
        f"{name} {show_number(value)} is beyond the largest number the API server can store "
        f"(about {LARGEST_JSON_NUMBER:.1e}): write a smaller one"
    )


def is_unstorable(value: object) -> bool:
    """NaN, infinite, or an integer no float64 can hold: what JSON and so Kubernetes cannot carry."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > LARGEST_JSON_NUMBER
    return False


def quantity_maximum(field: str) -> Decimal:
    return Decimal(LIMITS[field].maximum)


def quantity_rule(field: str) -> str:
    """The CEL rule of a quantity field (``x-kubernetes-int-or-string``) in the CRDs.

    The regex test runs first, and CEL's ``&&`` stops at it: ``quantity()`` must never see an
    exponent of thousands of digits (the API server would build that number).
    """
    return (
        f"type(self) == int ? self <= {int(LIMITS[field].maximum)} : "
        f"!self.matches('[eE][+-]?0*[1-9][0-9]{{{MAX_EXPONENT_DIGITS},}}') && isQuantity(self) "
        f"&& quantity(self).compareTo(quantity('{QUANTITY_MAXIMUM[field]}')) <= 0"
    )


def quantity_rule_message(field: str) -> str:
    return (
        f"{field} must be a quantity of at most {LIMITS[field].shown}, "
        f"with an exponent of at most {MAX_EXPONENT_DIGITS} digits"
    )


def duration_rule(field: str) -> str:
    """The CEL rule of a duration field in the CRDs: the sum of its parts, in ms, at most the limit.

    Doubles, not ints: a part of many digits must compare as too large, not overflow int64.
    """
    units = " : ".join(f"p.endsWith('{u}') ? {s * 1000:.1f}" for u, s in list(DURATION_UNITS_S.items())[:-1])
    day_ms = DURATION_UNITS_S["d"] * 1000
    return (
        "self.findAll('[0-9]+(ms|s|m|h|d)').map(p, double(p.find('^[0-9]+')) * "
        f"({units} : {day_ms:.1f})).sum() <= {LIMITS[field].maximum * 1000:.1f}"
    )


def duration_rule_message(field: str) -> str:
    return f"{field} must be at most {LIMITS[field].shown}"
