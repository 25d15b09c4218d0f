"""`flyslice diff` as a user runs it: real git repositories, real processes, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import WILDFIRE, ManifestRepo
from tests.observe.conftest import UpProcess


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["flyslice", "diff", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path} has no {old!r}"
    path.write_text(text.replace(old, new))


@pytest.fixture
def repo(tmp_path: Path) -> ManifestRepo:
    r = ManifestRepo(tmp_path / "manifests")
    (r.root / "slices").mkdir()
    for f in WILDFIRE.glob("*.yaml"):
        (r.root / "slices" / f.name).write_text(f.read_text())
    r.commit("wildfire")
    return r


def test_two_revisions_without_a_placement_change_exit_0(repo: ManifestRepo) -> None:
    edit(repo.root / "slices" / "slice.yaml", "# The fire brigade", "# Reviewed. The fire brigade")
    repo.commit("comment only")
    out = run("HEAD~1", "HEAD", "--path", "slices", "-o", "json", cwd=repo.root)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["format"] == "flyslice.io/diff/v1"
    assert (doc["changed"], doc["slices"], doc["nodes"]) == (False, [], [])


def test_moves_and_headroom_between_revisions_exit_1_in_every_format(repo: ManifestRepo) -> None:
    # The fog node stops running fNFs and the budget loosens: its two NFs become VNFs on the same node.
    edit(repo.root / "slices" / "nodes.yaml", "runtimes: [vnf, fnf]", "runtimes: [vnf]")
    edit(repo.root / "slices" / "slice.yaml", "maxLatencyMs: 10", "maxLatencyMs: 20")
    repo.commit("fog without fNFs")
    out = run("main~1", "main", "--repo", str(repo.root), "--path", "slices", "-o", "json")
    assert out.returncode == 1, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    (s,) = doc["slices"]
    assert (s["slice"], s["change"], s["budgetMs"]) == ("default/wildfire", "changed", [10, 20])
    assert s["latencyMs"][0] == pytest.approx(9.4) and s["latencyMs"][1] > s["latencyMs"][0]
    moved = {i["nf"]: (i["node"], i["flavor"]) for i in s["instances"]}
    assert moved == {
        "broker-fog": (["fog-1", "fog-1"], ["fnf", "vnf"]),
        "sp-fog": (["fog-1", "fog-1"], ["fnf", "vnf"]),
    }
    (fog,) = doc["nodes"]
    assert fog["name"] == "fog-1" and fog["cpuFreeMillis"][1] < fog["cpuFreeMillis"][0]

    md = run("main~1", "main", "--repo", str(repo.root), "--path", "slices", "-o", "markdown")
    assert md.returncode == 1
    assert "| `sp-fog` | moved | fog-1 | fnf → vnf |" in md.stdout
    assert md.stdout.startswith("### flyslice diff `main~1:slices` → `main:slices`")
    text = run("main~1", "main", "--repo", str(repo.root), "--path", "slices")
    assert text.returncode == 1 and "sp-fog: moved node fog-1 flavor fnf → vnf" in text.stdout


def test_a_revision_against_the_working_directory_shows_a_new_slice_admitted(repo: ManifestRepo) -> None:
    slices = repo.root / "slices"
    second = (slices / "slice.yaml").read_text().replace("name: wildfire", "name: second-brigade")
    (slices / "second.yaml").write_text(second)  # not committed: the pull request being written
    out = run("HEAD", str(slices), "--path", "slices", "-o", "json", cwd=repo.root)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    (s,) = doc["slices"]
    assert (s["slice"], s["change"]) == ("default/second-brigade", "admitted")
    assert len(s["instances"]) == 9 and {i["change"] for i in s["instances"]} == {"added"}
    # The admitted slice did not move the one already running.
    assert not any(x["slice"] == "default/wildfire" for x in doc["slices"])


def test_errors_exit_2_with_one_line_naming_what(repo: ManifestRepo, tmp_path: Path) -> None:
    out = run("no-such-branch", "HEAD", "--repo", str(repo.root), "--path", "slices")
    assert out.returncode == 2
    assert out.stderr.startswith("flyslice diff: 'no-such-branch' is neither a directory nor a revision")
    assert len(out.stderr.strip().splitlines()) == 1

    out = run("HEAD", "HEAD", "--repo", str(repo.root), "--path", "nowhere")
    assert out.returncode == 2 and "--path 'nowhere' is not in that revision" in out.stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in (repo.root / "slices").glob("*.yaml"):
        (broken / f.name).write_text(f.read_text())
    edit(broken / "slice.yaml", "availability: 0.90", "availability: 9")
    out = run("HEAD", str(broken), "--repo", str(repo.root), "--path", "slices")
    assert out.returncode == 2
    assert "slice.yaml:11: Slice/wildfire: spec.qos.availability" in out.stderr

    out = run("HEAD", "http://127.0.0.1:9", "--repo", str(repo.root), "--path", "slices")
    assert out.returncode == 2 and "is `flyslice up` running there?" in out.stderr


@pytest.mark.slow
def test_a_directory_against_a_running_up(repo: ManifestRepo, tmp_path: Path) -> None:
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    for f in (repo.root / "slices").glob("*.yaml"):
        (live_dir / f.name).write_text(f.read_text())
    up = UpProcess(live_dir, tmp_path / "state")
    try:
        up.wait_ready()
        same = run(up.base, str(repo.root / "slices"), "-o", "json")
        assert same.returncode == 0, same.stdout + same.stderr
        edit(repo.root / "slices" / "nodes.yaml", "runtimes: [vnf, fnf]", "runtimes: [vnf]")
        edit(repo.root / "slices" / "slice.yaml", "maxLatencyMs: 10", "maxLatencyMs: 20")
        changed = run(up.base, str(repo.root / "slices"), "-o", "json")
        assert changed.returncode == 1, changed.stderr
        doc = json.loads(changed.stdout)
        (s,) = doc["slices"]
        assert {i["nf"] for i in s["instances"]} == {"broker-fog", "sp-fog"}
        # Headroom is known for the live side too: the console document carries capacities.
        assert [n["name"] for n in doc["nodes"]] == ["fog-1"]
    finally:
        assert up.stop() == 0
