"""The one error type every check reports: where (file, line, object, field) and what."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class ManifestError:
    file: str
    line: int
    #: ``Kind/name`` or ``Kind/namespace/name``; empty when the file itself is at fault.
    object: str
    #: Dotted JSON path of the field, e.g. ``spec.qos.maxLatencyMs`` or ``spec.links[1].node``.
    path: str
    message: str
    #: ``error`` stops the object from being applied; ``note`` only informs.
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        parts = [where]
        if self.object:
            parts.append(self.object)
        if self.path:
            parts.append(self.path)
        return ": ".join([*parts, self.message])

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "object": self.object,
            "path": self.path,
            "message": self.message,
            "severity": self.severity,
        }
