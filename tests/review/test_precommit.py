"""`.pre-commit-hooks.yaml`: each hook's entry and default args, run as pre-commit runs them, in a real
manifest repository with a real `origin/main`."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.harness import WILDFIRE, ManifestRepo

REPO = Path(__file__).resolve().parents[2]
HOOKS: dict[str, dict[str, Any]] = {
    h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
}


def run_hook(hook_id: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """As pre-commit does with ``pass_filenames: false``: entry, then args, in the repository root."""
    hook = HOOKS[hook_id]
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    argv = [*shlex.split(hook["entry"]), *hook.get("args", [])]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def manifests(tmp_path: Path) -> ManifestRepo:
    """A manifest repository with the wildfire example on main, pushed to a real origin."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(origin)], check=True)
    repo = ManifestRepo(tmp_path / "work")
    repo.copy_example(WILDFIRE)
    repo.commit("wildfire")
    repo.repo.git.remote("add", "origin", str(origin))
    repo.repo.git.push("-q", "origin", "main")
    repo.repo.git.fetch("-q", "origin")
    return repo


def test_hooks_are_declared_for_one_line_adoption() -> None:
    assert set(HOOKS) == {"flyslice-validate", "flyslice-diff"}
    for hook in HOOKS.values():
        assert hook["entry"].split()[0] == "flyslice" and hook["name"] and hook["description"]
        assert hook["files"] == r"\.(ya?ml)$"


def test_validate_hook_passes_valid_manifests_and_fails_invalid_ones(manifests: ManifestRepo) -> None:
    ok = run_hook("flyslice-validate", manifests.root)
    assert ok.returncode == 0, ok.stderr
    slice_file = manifests.root / "slice.yaml"
    slice_file.write_text(slice_file.read_text().replace("availability: 0.90", "availability: 90%"))
    bad = run_hook("flyslice-validate", manifests.root)
    assert bad.returncode == 1
    assert "slice.yaml:11: Slice/wildfire: spec.qos.availability" in bad.stderr


def test_diff_hook_reports_a_change_without_failing_and_fails_on_errors(manifests: ManifestRepo) -> None:
    same = run_hook("flyslice-diff", manifests.root)
    assert same.returncode == 0 and "no change to placement" in same.stdout, same.stderr
    nodes = manifests.root / "nodes.yaml"
    nodes.write_text(nodes.read_text().replace("runtimes: [vnf, fnf]", "runtimes: [vnf]"))
    slice_file = manifests.root / "slice.yaml"
    slice_file.write_text(slice_file.read_text().replace("maxLatencyMs: 10", "maxLatencyMs: 20"))
    changed = run_hook("flyslice-diff", manifests.root)
    assert changed.returncode == 0, changed.stderr
    assert "sp-fog: moved node fog-1 flavor fnf → vnf" in changed.stdout
    slice_file.write_text(slice_file.read_text().replace("availability: 0.90", "availability: 90%"))
    broken = run_hook("flyslice-diff", manifests.root)
    assert broken.returncode == 2 and "spec.qos.availability" in broken.stderr
