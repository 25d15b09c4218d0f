"""Intake: reading manifests and checking them before anything acts on them.

Parses YAML with file and line for every object, validates it against the CRD schemas (jsonschema) and
their CEL rules, then against each other (references, graphs, quantities), and builds the catalog the
planner reads. Every finding names file, line, object and field (``ManifestError``).
"""
