"""Human-readable quantities for messages."""

from __future__ import annotations

from .model import Resources


def memory(n: int) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B"


def cpu(millis: int) -> str:
    return f"{millis}m"


def shortfall(host: str, free: Resources, need: Resources) -> str:
    """E.g. ``gw-2 has 12Mi memory free, needs 32Mi``."""
    parts = []
    if need.memory_bytes > free.memory_bytes:
        parts.append(f"{memory(max(free.memory_bytes, 0))} memory free, needs {memory(need.memory_bytes)}")
    if need.cpu_millis > free.cpu_millis:
        parts.append(f"{cpu(max(free.cpu_millis, 0))} CPU free, needs {cpu(need.cpu_millis)}")
    return f"{host} has " + " and ".join(parts) if parts else f"{host} has room"
