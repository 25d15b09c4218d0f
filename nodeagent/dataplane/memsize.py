"""Estimate the memory an fNF holds by walking the objects reachable from its attributes.

Python cannot meter one module's allocations inside a shared process cheaply, so the agent
samples this estimate (about once a second, on the fNF's own thread) against the instance's
memory budget. Memory held outside Python objects (e.g. inside SQLite) is not counted.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable
from typing import Any

_SCALARS = (int, float, str, bytes, bool, type(None), complex)


def deep_size(root: Any, limit: int | None = None, skip: Iterable[int] = ()) -> int:
    """Bytes reachable from ``root`` (each object once); stops early once over ``limit``."""
    seen: set[int] = set(skip)
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        oid = id(obj)
        # Code (functions, methods, classes, modules) is shared with other instances: not counted.
        if oid in seen or callable(obj) or isinstance(obj, types.ModuleType):
            continue
        seen.add(oid)
        total += sys.getsizeof(obj, 64)
        if limit is not None and total > limit:
            return total
        if isinstance(obj, _SCALARS):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.append(vars(obj))
        elif hasattr(obj, "__iter__") and type(obj).__module__ == "collections":
            stack.extend(list(obj))
    return total
