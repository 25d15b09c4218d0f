"""Intake: reading manifests and checking them before anything acts on them.

Parses YAML with file and line for every object, validates it against the CRD schemas (jsonschema) and
their CEL rules, then against each other (references, graphs, quantities), and builds the catalog the
planner reads. Every finding names file, line, object and field (``ManifestError``).
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.operator.intake.catalog import (
        Catalog,
        EdgeNodeSpec,
        NetworkServiceSpec,
        RoleSpec,
        SliceSpec,
        candidates,
    )
    from flyslice.operator.intake.errors import ManifestError
    from flyslice.operator.intake.manifests import Manifest, discover, load_paths
    from flyslice.operator.intake.quantities import cpu_millis, format_cpu, format_memory
    from flyslice.operator.intake.validation import ValidationResult, validate, validate_paths

__getattr__ = lazy_exports(
    __name__,
    {
        "catalog": ["Catalog", "EdgeNodeSpec", "NetworkServiceSpec", "RoleSpec", "SliceSpec", "candidates"],
        "errors": ["ManifestError"],
        "manifests": ["Manifest", "discover", "load_paths"],
        "quantities": ["cpu_millis", "format_cpu", "format_memory"],
        "validation": ["ValidationResult", "validate", "validate_paths"],
    },
)

__all__ = [
    "Catalog",
    "EdgeNodeSpec",
    "Manifest",
    "ManifestError",
    "NetworkServiceSpec",
    "RoleSpec",
    "SliceSpec",
    "ValidationResult",
    "candidates",
    "cpu_millis",
    "discover",
    "format_cpu",
    "format_memory",
    "load_paths",
    "validate",
    "validate_paths",
]
