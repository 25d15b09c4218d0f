"""The CLI and the API server validate with the same CRDs: whatever the server refuses as
invalid, `flyslice validate` refuses too (it may refuse more: cross-object checks, unknown
fields, quantity semantics). Checked over the whole invalid corpus and every example."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flyslice.crds import API_VERSION, GROUP, KINDS, VERSION, crd_documents, is_namespaced
from flyslice.operator.intake.manifests import Manifest, load_file
from flyslice.operator.intake.validation import validate

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]


def _objects(path: Path) -> list[Manifest]:
    manifests, _ = load_file(path)
    return [m for m in manifests if m.api_version == API_VERSION and m.kind in KINDS]


# Files from which no flyslice object loads (YAML-level errors) are the CLI's alone.
FILES = [
    f
    for f in sorted((REPO / "tests" / "invalid").glob("*.yaml"))
    + sorted((REPO / "examples").glob("*/*.yaml"))
    if _objects(f)
]


def _server_refusals(api: Any, objs: list[Manifest], namespace: str) -> dict[tuple[str, str], str]:
    """(kind, name) -> the server's reason, for the objects a server-side dry run finds invalid."""
    from kubernetes.client.exceptions import ApiException

    refused = {}
    for m in objs:
        body = json.loads(json.dumps(m.data, default=str))  # YAML dates travel as strings, as with kubectl
        plural = crd_documents()[m.kind]["spec"]["names"]["plural"]
        try:
            if is_namespaced(m.kind):
                if isinstance(body.get("metadata"), dict):
                    body["metadata"].pop("namespace", None)  # the corpus's namespaces do not exist here
                api.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body, dry_run="All")
            else:
                api.create_cluster_custom_object(GROUP, VERSION, plural, body, dry_run="All")
        except ApiException as exc:
            # 422: invalid. 409 (an EdgeNode of that name exists from another test) comes only after
            # validation passed, and 400 is a request the server cannot decode: neither counts.
            if exc.status == 422:
                refused[m.kind, m.name] = json.loads(exc.body).get("message", "")
    return refused


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_cli_refuses_whatever_the_server_refuses(
    custom_api: Any, crds_installed: list[str], dry_run_namespace: str, path: Path
) -> None:
    objs = _objects(path)
    refused = _server_refusals(custom_api, objs, dry_run_namespace)
    for m in objs:
        if (m.kind, m.name) not in refused:
            continue
        client = [e for e in validate([m]).errors if e.severity == "error" and e.object == m.ref]
        assert client, (
            f"the server refuses {m.ref} ({refused[m.kind, m.name]}) but flyslice validate accepts it"
        )
    if path.parent.parent.name == "examples":
        assert not refused, f"the server refuses an example: {refused}"
