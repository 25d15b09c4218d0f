"""Desired-state sources for ``Agent.run`` other than the Kubernetes API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from flyslice.nodeagent.agent import SourceUnavailable
from flyslice.nodeagent.spec import InstanceSpec, SpecError


class FileSource:
    """A JSON or YAML file holding a list of instance specs or NFInstance objects (or
    ``{"instances": [...]}``). A missing or unparsable file counts as an unreachable control plane;
    a single invalid entry is reported in ``errors`` and skipped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.errors: list[str] = []

    def __call__(self) -> list[InstanceSpec]:
        try:
            data: Any = (
                yaml.safe_load(self.path.read_text())
                if self.path.suffix in (".yaml", ".yml")
                else json.loads(self.path.read_text())
            )
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise SourceUnavailable(f"{self.path}: {exc}") from exc
        items = data.get("instances", []) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise SourceUnavailable(f"{self.path}: expected a list of instances")
        out, self.errors = [], []
        for i, item in enumerate(items):
            try:
                if isinstance(item, dict) and "spec" in item and "metadata" in item:
                    out.append(InstanceSpec.from_object(item))
                else:
                    out.append(InstanceSpec.from_dict(item, where=f"{self.path} [{i}]"))
            except SpecError as exc:
                self.errors.append(str(exc))
        return out
