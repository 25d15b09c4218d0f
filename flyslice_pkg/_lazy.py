"""Lazy re-exports for the sub-packages' ``__init__`` modules.

A sub-package names the few things other packages use (``flyslice.operator.intake.validate``), but
importing one small module of it (``intake.errors``) must not load the rest: ``flyslice --help``
and the VNF runner start fast, and a module's own dependencies stay its own (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, Sequence[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving each exported name from its module on first use."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
