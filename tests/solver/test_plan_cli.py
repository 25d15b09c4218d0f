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
    assert doc["solver"]["guarantee"] == "Optimal"
    assert doc["solver"]["restrictions"] == []
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
    assert doc["solver"]["guarantee"] == "Optimal"
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


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="examples/wildfire is not in this checkout")
def test_the_table_shows_the_guarantee() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flyslice.operator.cli", "plan", str(EXAMPLE), "--solver", "cbc"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first.startswith("solver: ilp CBC status=Optimal") and first.endswith("guarantee=Optimal"), first
    assert "restricted:" not in out.stdout


@pytest.mark.skipif(not EXAMPLE.is_dir(), reason="examples/wildfire is not in this checkout")
def test_a_candidate_cap_is_labelled_in_every_plan_format() -> None:
    import dataclasses

    from flyslice.operator.intake.validation import validate_paths
    from flyslice.operator.planning.pipeline import plan
    from flyslice.operator.planning.plan_format import plan_document, render_table
    from flyslice.solver import Guarantee, SolveOptions

    catalog = validate_paths([str(EXAMPLE)]).catalog
    # Every NF of the example has a single option, so a cap of 1 cuts nothing: no label.
    uncut = plan(catalog, options=SolveOptions(solver="cbc", max_candidates=1))
    assert (uncut.placement.guarantee, uncut.placement.restrictions) == (Guarantee.OPTIMAL, ())
    # A placement the cap did restrict (tests/solver/test_guarantees.py makes real ones).
    restricted = dataclasses.replace(
        uncut,
        placement=dataclasses.replace(
            uncut.placement, guarantee=Guarantee.RESTRICTED, restrictions=("candidate cap k=1",)
        ),
    )
    doc = plan_document(restricted)
    assert doc["solver"]["guarantee"] == "Restricted"
    assert doc["solver"]["restrictions"] == ["candidate cap k=1"]
    # The document is what -o json / -o yaml print: both carry the fields.
    assert json.loads(json.dumps(doc))["solver"]["restrictions"] == ["candidate cap k=1"]
    assert yaml.safe_load(yaml.safe_dump(doc))["solver"]["guarantee"] == "Restricted"
    table = render_table(doc).splitlines()
    assert table[0].endswith("guarantee=Restricted")
    assert "  restricted: candidate cap k=1" in table
