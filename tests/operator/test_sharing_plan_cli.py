"""End to end through ``flyslice plan`` (issue 15): the agencies that allow it share the towers' brokers.

This is the whole path a user runs: the CLI reads examples/shared-gateways, validates it, expands the
sharing policy into pools, the ILP places the NFs and opens shared instances, and the plan document
lists them. It needs the solver's part of NF sharing (solver/: shared instances in the ILP).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shared-gateways"
SHARERS = ["default/air-quality", "default/fire-watch"]
TOWERS = ("tower-1", "tower-2")


def _plan(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "flyslice.operator.cli", "plan", str(path), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _assert_towers_share_one_broker(doc: dict[str, Any]) -> None:
    table = json.dumps(doc["sharedInstances"], indent=1)
    assert all(s["admitted"] for s in doc["slices"]), [s["reasons"] for s in doc["slices"]]
    on_towers = [si for si in doc["sharedInstances"] if si["node"] in TOWERS]
    assert sorted(si["node"] for si in on_towers) == list(TOWERS), table
    for si in on_towers:
        tower = si["node"]
        assert (si["package"], si["flavor"]) == ("tower-broker", "fnf"), table
        assert si["pool"].startswith("default/tower-broker/fnf/"), table
        assert si["tenants"] == [{"slice": key, "nf": f"broker-gw@{tower}"} for key in SHARERS], table
        assert si["loadMbps"] == 4.0 and si["capacityMbps"] == 40.0, table
    rows = {(sl["namespace"] + "/" + sl["name"], i["id"]): i for sl in doc["slices"] for i in sl["instances"]}
    by_tower = {si["node"]: si["id"] for si in on_towers}
    for key in SHARERS:
        for tower in TOWERS:
            assert rows[(key, f"broker-gw@{tower}")]["sharedInstance"] == by_tower[tower]
    for tower in TOWERS:
        assert "sharedInstance" not in rows[("default/ranger-tracking", f"broker-gw@{tower}")]
    # One broker paid once plus 5m per tenant, the rangers' own broker and three filters.
    used = {n["name"]: n["cpu"]["usedMillis"] for n in doc["nodes"]}
    assert [used[t] for t in TOWERS] == [410, 410]


def test_flyslice_plan_shares_the_tower_brokers(tmp_path: Path) -> None:
    _assert_towers_share_one_broker(_plan(EXAMPLE))
    # With towers of 420m, three unshared slices (450m per tower) cannot all fit; shared (410m) they do.
    tight = tmp_path / "shared-gateways"
    shutil.copytree(EXAMPLE, tight, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    nodes = list(yaml.safe_load_all((tight / "nodes.yaml").read_text()))
    for node in nodes:
        if node["metadata"]["name"] in TOWERS:
            node["spec"]["capacity"]["cpu"] = "420m"
    (tight / "nodes.yaml").write_text(yaml.safe_dump_all(nodes, sort_keys=False))
    _assert_towers_share_one_broker(_plan(tight))
