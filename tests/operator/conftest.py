"""Helpers for control-plane tests: catalogs built from the real example manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.manifests import load_text
from flyslice.operator.intake.validation import validate

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"


def wildfire_docs() -> list[dict]:
    docs: list[dict] = []
    for f in sorted(WILDFIRE.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def catalog_from(docs: list[dict]) -> Catalog:
    text = yaml.safe_dump_all(docs, sort_keys=False)
    manifests, errors = load_text(text, "test.yaml")
    assert not errors, errors
    result = validate(manifests)
    assert result.ok, [str(e) for e in result.errors]
    return result.catalog


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture
def wildfire() -> list[dict]:
    return wildfire_docs()
