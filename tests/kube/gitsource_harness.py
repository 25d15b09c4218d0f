"""A real git repository holding the wildfire lab, and the GitSource that syncs it, for the tests of
in-cluster GitSources (test_operator_gitsource.py, test_operator_prune_guard.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubeenv
import yaml

from .operator_harness import wildfire_docs


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def write(repo: Path, name: str, docs: list[dict[str, Any]]) -> None:
    (repo / name).write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))


def wildfire_repo(
    root: Path, namespace: str, extra: dict[str, str] | None = None
) -> tuple[Path, list[dict[str, Any]]]:
    """``root/repo`` with nodes.yaml, catalog.yaml and slice.yaml of the wildfire lab (plus ``extra``
    files by name) in one commit on ``main``; the repository and the documents written."""
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    docs = wildfire_docs(namespace)
    write(repo, "nodes.yaml", [d for d in docs if d["kind"] == "EdgeNode"])
    write(repo, "catalog.yaml", [d for d in docs if d["kind"] in ("NFPackage", "NetworkService")])
    write(repo, "slice.yaml", [d for d in docs if d["kind"] == "Slice"])
    for name, text in (extra or {}).items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "lab")
    return repo, docs


def gitsource(repo: Path, name: str = "lab") -> dict[str, Any]:
    """A GitSource syncing ``repo``'s main branch every second, with pruning on."""
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "GitSource",
        "metadata": {"name": name},
        "spec": {"url": f"file://{repo}", "ref": {"branch": "main"}, "interval": "1s", "prune": True},
    }


def status(env: kubeenv.KubeEnv, ns: str, name: str = "lab") -> dict[str, Any]:
    found: dict[str, Any] = env.kubectl_json("-n", ns, "get", "gitsource", name).get("status", {})
    return found
