"""The cluster side's view from API objects (no server) and its errors before any request is made.

tests/kube/test_diff_cluster.py runs the same against a real API server and operator.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from flyslice.operator.intake.manifests import load_paths, manifests_from_objects
from flyslice.operator.intake.validation import validate
from flyslice.operator.review.cluster import cluster_view

WILDFIRE = Path(__file__).resolve().parents[2] / "examples" / "wildfire"


def catalog_objects() -> list[dict[str, Any]]:
    objs = []
    for f in sorted(WILDFIRE.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d["kind"] != "EdgeNode":
                d["metadata"]["namespace"] = "ns"
            if d:
                objs.append(d)
    return objs


def instance(nf: str, node: str, flavor: str, cpu: str = "500m", **meta: Any) -> dict[str, Any]:
    role, _, att = nf.partition("@")
    spec: dict[str, Any] = {"slice": "wildfire", "role": role, "node": node, "flavor": flavor}
    spec["resources"] = {"cpu": cpu, "memory": "64Mi"}
    if att:
        spec["attachment"] = att
    return {"metadata": {"namespace": "ns", "name": f"wildfire-{nf}", **meta}, "spec": spec}


def slice_obj(status: dict[str, Any] | None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "wildfire", **meta}, "status": status or {}}


def test_instances_come_from_nfinstances_then_status_and_usage_from_their_resources() -> None:
    catalog = validate(manifests_from_objects(catalog_objects())).catalog
    status = {
        "phase": "Deploying",
        "networkService": "iot-data-pipeline",
        "predictedLatencyMs": 9.4,
        "paths": [{"name": "p", "predictedLatencyMs": 9.4, "budgetMs": 10}],
        "placement": [{"role": "db", "node": "cloud", "flavor": "vnf"}],
    }
    gone = instance("sp-fog", "fog-1", "fnf", deletionTimestamp="2026-01-01T00:00:00Z")
    view = cluster_view(
        "cluster:ns", catalog, [slice_obj(status)], [instance("sp-gw@gw-1", "gw-1", "fnf"), gone]
    )
    s = view["slices"]["ns/wildfire"]
    # The NFInstances win over the status copy; one being deleted is no longer placed.
    assert s["instances"] == {"sp-gw@gw-1": {"node": "gw-1", "flavor": "fnf"}}
    assert (s["admitted"], s["latencyMs"], s["budgetMs"], s["service"]) == (
        True,
        9.4,
        10,
        "iot-data-pipeline",
    )
    assert (
        view["nodes"]["gw-1"]["cpuUsedMillis"] == 500 and view["nodes"]["gw-1"]["cpuCapacityMillis"] == 1000
    )
    assert view["nodes"]["fog-1"]["cpuUsedMillis"] == 0
    # Without NFInstances (not yet written, or not listable), the Slice status says where it runs.
    fallback = cluster_view("c", catalog, [slice_obj(status)], [])
    assert fallback["slices"]["ns/wildfire"]["instances"] == {"db": {"node": "cloud", "flavor": "vnf"}}


def test_slices_the_operator_has_not_placed_are_not_admitted() -> None:
    catalog = validate(manifests_from_objects(catalog_objects())).catalog
    for status in (None, {"phase": "Pending"}, {"phase": "Infeasible", "reasons": ["too far"]}):
        view = cluster_view("c", catalog, [slice_obj(status)], [instance("db", "cloud", "vnf")])
        s = view["slices"]["ns/wildfire"]
        assert (s["admitted"], s["instances"], s["latencyMs"]) == (False, {}, None)
        assert s["budgetMs"] == 10  # from the spec, as nothing was placed against a budget
        assert s["reasons"] == (status or {}).get("reasons", ["not placed by the operator yet"])
    deleting = cluster_view("c", catalog, [slice_obj({"phase": "Ready"}, deletionTimestamp="x")], [])
    assert deleting["slices"] == {}


def test_files_go_to_the_namespace_and_other_namespaces_are_refused() -> None:
    from flyslice.operator.review.cluster import in_namespace

    manifests, _ = load_paths([WILDFIRE])
    kept, errors = in_namespace(manifests, "brigade")
    assert errors == [] and len(kept) == len(manifests)
    assert {m.data["metadata"].get("namespace") for m in kept if m.kind == "EdgeNode"} == {None}
    assert {m.data["metadata"]["namespace"] for m in kept if m.kind != "EdgeNode"} == {"brigade"}
    kept, errors = in_namespace(manifests, "other")
    # The same objects, now in brigade, against `other`: every namespaced one refused, the nodes kept.
    assert [m.kind for m in kept] == ["EdgeNode"] * 4
    assert len(errors) == 5 and {e.path for e in errors} == {"metadata.namespace"}
    assert "Slice/brigade/wildfire" in {e.object for e in errors}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "flyslice.operator.cli", "diff", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_errors_before_reaching_a_cluster_exit_2_in_one_line(tmp_path: Path) -> None:
    cases = {
        ("cluster:Bad_NS", str(WILDFIRE)): "'Bad_NS' is not a namespace name",
        ("cluster:", "http://127.0.0.1:9"): "both sides are what runs",
        ("cluster:ns", str(WILDFIRE), "--kubeconfig", str(tmp_path / "missing")): (
            f"cluster:ns: no cluster credentials ({tmp_path / 'missing'}"
        ),
    }
    for args, message in cases.items():
        out = run(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr
