"""The solver runs inside ``flyslice plan`` on the wildfire example (the operator's YAML)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "wildfire"


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="examples/wildfire is not in this checkout")
@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_flyslice_plan_places_the_wildfire_example_with_the_ilp(solver: str) -> None:
    doc = _plan(solver, "json")
    assert doc["solver"]["method"] == "ilp"
    assert doc["solver"]["status"] == "Optimal"
    assert doc["solver"]["name"] == {"cbc": "CBC", "highs": "HiGHS"}[solver]
    (slice_,) = doc["slices"]
    assert slice_["admitted"]
    where = {i["id"]: (i["node"], i["flavor"]) for i in slice_["instances"]}
    assert where["sp-gw@gw-2"] == ("gw-2", "fnf")
    assert where["sp-fog"] == ("fog-1", "fnf")
    assert where["db"] == ("cloud", "vnf")


def _installed_solvers() -> list[str]:
    from flyslice.solver.backends import highs_available

    return ["cbc", *(["highs"] if highs_available() else [])]


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="examples/wildfire is not in this checkout")
@pytest.mark.parametrize("solver", _installed_solvers())
def test_plan_yaml_parses_with_every_installed_solver(solver: str) -> None:
    # Whatever a solver library prints (HiGHS's banner) must not land in machine-readable output.
    doc = _plan(solver, "yaml")
    assert doc["format"] == "flyslice.io/plan/v1"
    assert doc["solver"]["name"] == {"cbc": "CBC", "highs": "HiGHS"}[solver]


def _plan(solver: str, fmt: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "flyslice.operator.cli", "plan", str(EXAMPLE), "-o", fmt, "--solver", solver],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if fmt == "json" else yaml.safe_load(out.stdout)
