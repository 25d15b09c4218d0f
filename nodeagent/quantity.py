"""Kubernetes memory quantities ("128Mi", "1G", "500k") to bytes, for fNF memory budgets."""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip
_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|)\s*$")


def parse_memory(value: str | int) -> int:
    if isinstance(value, int):
        return value
    m = _RE.match(value)
    if not m:
        raise ValueError(f"not a memory quantity: {value!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])
