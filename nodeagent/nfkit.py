"""Small helpers NF authors share: MQTT-style topic filters and dotted field paths."""

from __future__ import annotations

from typing import Any

from flyslice.nodeagent.message import Message

_MISSING = object()


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT filter semantics: ``+`` matches one level, a trailing ``#`` any number (including none)."""
    p_parts = pattern.split("/")
    t_parts = topic.split("/")
    for i, p in enumerate(p_parts):
        if p == "#":
            return True
        if i >= len(t_parts):
            return False
        if p != "+" and p != t_parts[i]:
            return False
    return len(p_parts) == len(t_parts)


def get_field(msg: Message, path: str, default: Any = None) -> Any:
    """``payload.temp`` / ``topic`` / ``temp`` (a bare name is looked up in the payload)."""
    parts = path.split(".")
    if parts[0] not in ("payload", "topic", "slice", "trace"):
        parts = ["payload", *parts]
    value: Any = msg
    for p in parts:
        if isinstance(value, dict):
            value = value.get(p, _MISSING)
            if value is _MISSING:
                return default
        else:
            return default
    return value


def number(value: Any) -> float | None:
    """A finite float, or None for anything that is not a plain number (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if f == f and f not in (float("inf"), float("-inf")) else None
