"""`flyslice.testing`: the one-line placement assertions, their failure messages, and the pytest plugin
as a manifest repository uses it (the examples' own tests, run by a real pytest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flyslice.testing import InvalidManifests, load_plan

REPO = Path(__file__).resolve().parents[2]
WILDFIRE = REPO / "examples" / "wildfire"


def test_assertions_pass_on_the_wildfire_placement() -> None:
    plan = load_plan(WILDFIRE)
    plan.assert_admitted("default/wildfire")
    plan.assert_nf("wildfire", "sp-gw", tier="gateway", flavor="fnf")
    plan.assert_nf("wildfire", "sp-cloud", node="cloud")
    plan.assert_latency_under("wildfire", 10, path="gw-1:broker-gw->db")
    plan.assert_headroom("cloud", cpu="14", memory="30Gi")


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda p: p.assert_rejected("wildfire"), "slice wildfire is admitted, expected it rejected"),
        (
            lambda p: p.assert_nf("wildfire", "db", tier="fog"),
            "slice wildfire: db runs with tier cloud on cloud",
        ),
        (lambda p: p.assert_nf("wildfire", "sp-gw", flavor="vnf"), "sp-gw@gw-1 runs with flavor fnf on gw-1"),
        (lambda p: p.assert_nf("wildfire", "nope"), "slice wildfire has no NF with role 'nope'"),
        (lambda p: p.assert_latency_under("wildfire", 5), "is predicted at 9.4 ms, not under 5 ms"),
        (lambda p: p.assert_headroom("gw-1", cpu="900m"), "node gw-1 keeps 850m CPU free, less than 900m"),
        (lambda p: p.assert_headroom("gw-1", memory="500Mi"), "node gw-1 keeps 488Mi memory free"),
        (
            lambda p: p.assert_admitted("other"),
            "no single slice 'other' in the plan (slices: default/wildfire)",
        ),
    ],
)
def test_a_failure_names_what_and_shows_the_plan_table(check, message: str) -> None:
    plan = load_plan(WILDFIRE)
    with pytest.raises(AssertionError) as failed:
        check(plan)
    text = str(failed.value)
    assert message in text
    assert "the plan:\nsolver: ilp" in text and "ROLE" in text and "NODE" in text


def test_invalid_manifests_fail_on_the_invalid_object(tmp_path: Path) -> None:
    for f in WILDFIRE.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    slice_file = tmp_path / "slice.yaml"
    slice_file.write_text(slice_file.read_text().replace("availability: 0.90", "availability: 9"))
    with pytest.raises(InvalidManifests, match=r"slice.yaml:11: Slice/wildfire: spec.qos.availability"):
        load_plan(tmp_path)


def test_the_examples_own_tests_pass_with_the_plugin() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "examples", "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "7 passed" in out.stdout  # wildfire 3, ddos 1, shared-gateways 3


def test_a_repository_test_that_fails_shows_the_plan(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["flyslice.testing"]\n')
    for f in WILDFIRE.glob("*.yaml"):
        (tmp_path / f.name).write_text(f.read_text())
    (tmp_path / "test_mine.py").write_text(
        "from pathlib import Path\n\n"
        "def test_db_at_the_fog(flyslice_plan):\n"
        "    flyslice_plan(Path(__file__).parent).assert_nf('wildfire', 'db', tier='fog')\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path),
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "db runs with tier cloud on cloud, expected fog" in out.stdout
    assert "db            -           storage           cloud  vnf" in out.stdout
