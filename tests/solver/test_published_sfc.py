"""The published-optima benchmark (benchmarks/published_sfc.py) translates what the published files
say: counts, capacities, demands, delay bounds and the egress pins, through the product's own
validation and expansion; its weights make flyslice's resource term 100 per core in hop units; its
independent optimum is right on an instance small enough to solve by hand.

A tiny instance in the published format is written here (our own numbers); the cases of the real
published files are checked too when they are present ($FLYSLICE_PUBLISHED_SFC or
../shared/published_sfc; the repository does not carry them, see docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import manifests_gen  # noqa: E402
import published_check  # noqa: E402
import published_sfc as ps  # noqa: E402

from flyslice.solver import Flavor, Resources  # noqa: E402
from flyslice.solver.evaluation import reference_capacity, resource_cost  # noqa: E402

# src0 - a, src1 - a, a - b, b - dst0, b - dst1, b - c; every link of delay 2 (ms); a, b, c hold one
# core each (c is a decoy).
TOPOLOGY = """# Number of nodes, Number of links
7 6

# Node-ID Cores RAM HDD
src0 0 0 0
src1 0 0 0
a 1.0 1.0 1.0
b 1.0 1.0 1.0
c 1.0 1.0 1.0
dst0 0 0 0
dst1 0 0 0

# Node-ID Node-ID Bandwidth Delay
src0 a 100 2
src1 a 100 2
a b 100 2
b dst0 100 2
b dst1 100 2
b c 100 2
"""
VNF_LIB = """[vnfs]
# VNF Name, Cores, RAM, HDD, Delay, Capacity, Max Instances
v0,1.0,1.0,1.0,1.5,10.0,-1
V1,1.0,1.0,1.0,0.5,10.0,-1

[abbrev]

[pairs]
"""
REQUESTS = """# Ingress-ID, Egress-ID, Min-Bandwidth, Max-Delay, VNF, VNF, VNF, ...
src0,dst0,3,20,v0,v1
src0,dst0,3,20,v0,v1
src1,dst1,2,20,v0,v1
"""
# One instance per type, v0@a and v1@b: 3 hops per request, 9 in all: 200 + 9 = 209 (every other
# pair of hosts takes 5 hops per request). The first frontier point is made up, to check the minimum.
OPTIMAL = "cpu,hopcount\n4.0,8.0\n2.0,9.0\n"


def _write_tiny(root: Path) -> ps.Instance:
    folder = root / "tiny"
    folder.mkdir(parents=True)
    for name, text in {
        "topology": TOPOLOGY,
        "vnfLib": VNF_LIB,
        "requests": REQUESTS,
        "optimal": OPTIMAL,
    }.items():
        (folder / name).write_text(text, encoding="utf-8")
    return ps.load(root, ps.Case("tiny", "tiny"))


@pytest.fixture
def tiny(tmp_path: Path) -> ps.Instance:
    return _write_tiny(tmp_path / "data")


def _docs(inst: ps.Instance) -> dict[str, dict[str, dict[str, Any]]]:
    """Manifests by kind and name."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for docs in ps.manifests(inst).values():
        for d in docs:
            out.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    return out


def test_reading_counts_and_values(tiny: ps.Instance) -> None:
    assert [n.name for n in tiny.nodes] == ["src0", "src1", "a", "b", "c", "dst0", "dst1"]
    assert len(tiny.links) == 6 and {lk.delay for lk in tiny.links} == {2.0}
    assert sorted(tiny.vnfs) == ["v0", "v1"]  # matched case-insensitively, as their requests do
    assert tiny.vnfs["v1"].capacity == 10.0 and tiny.vnfs["v0"].delay == 1.5
    assert [(r.ingress, r.egress, r.bandwidth, r.max_delay, r.chain) for r in tiny.requests] == [
        ("src0", "dst0", 3.0, 20.0, ("v0", "v1")),
        ("src0", "dst0", 3.0, 20.0, ("v0", "v1")),
        ("src1", "dst1", 2.0, 20.0, ("v0", "v1")),
    ]
    assert tiny.frontier == ((4.0, 8.0), (2.0, 9.0))
    # min(400 + 8, 200 + 9): the weighted optimum over the frontier.
    assert ps.published_optimum(tiny) == (209.0, 2.0, 9.0)


def test_translation(tiny: ps.Instance) -> None:
    docs = _docs(tiny)
    nodes, packages = docs["EdgeNode"], docs["NFPackage"]
    assert len(nodes) == 7 and len(docs["Slice"]) == 3
    # Two chains ending at different egress nodes (same demand merged): two services.
    assert len(docs["NetworkService"]) == 2
    assert nodes["n-a"]["spec"]["capacity"] == {"cpu": "1000m", "memory": 2**20}
    assert nodes["n-a"]["spec"]["runtimes"] == ["vnf"]
    v0 = packages["vnf-v0"]["spec"]["flavors"]["vnf"]
    assert v0["resources"] == {"cpu": "1000m", "memory": 2**20}
    assert v0["sharing"] == {"capacityMbps": 10.0} and v0["processingLatencyMs"] == 1.5
    for i, r in enumerate(tiny.requests):
        sl = docs["Slice"][f"req-{i:03d}"]["spec"]
        assert sl["attachments"] == [{"node": f"n-{r.ingress}"}] and sl["qos"] == {
            "maxLatencyMs": r.max_delay
        }
        graph = docs["NetworkService"][sl["networkServiceRef"]["name"]]["spec"]["graph"]
        assert [ro["package"] for ro in graph["roles"]] == ["vnf-v0", "vnf-v1", f"egress-{r.egress}"]
        assert [e["bandwidthMbps"] for e in graph["edges"]] == [r.bandwidth] * 2
    # Links: every one, with its delay; none declares bandwidth (100 >= 8, the total demand).
    links = {(name, lk["node"]): lk for name, n in nodes.items() for lk in n["spec"].get("links", [])}
    assert len(links) == 6 and all(
        lk["latencyMs"] == 2.0 and "bandwidthMbps" not in lk for lk in links.values()
    )


def _millis(q: str | int) -> int:
    return int(q[:-1]) if isinstance(q, str) and q.endswith("m") else int(q) * 1000


def test_egress_role_fits_only_its_node(tiny: ps.Instance) -> None:
    docs = _docs(tiny)
    egress = [p for p in docs["NFPackage"] if p.startswith("egress-")]
    assert sorted(egress) == ["egress-dst0", "egress-dst1"]
    for name in egress:
        need = docs["NFPackage"][name]["spec"]["flavors"]["fnf"]["resources"]
        fits = [
            n
            for n, d in docs["EdgeNode"].items()
            if "fnf" in d["spec"]["runtimes"]
            and _millis(d["spec"]["capacity"]["cpu"]) >= _millis(need["cpu"])
            and int(d["spec"]["capacity"]["memory"]) >= int(need["memory"])
        ]
        assert fits == [f"n-{name.removeprefix('egress-')}"]
        assert docs["EdgeNode"][fits[0]]["spec"]["cost"] == 0
    # No VNF fits a node without cores (1m), nor an egress node.
    small = [n for n, d in docs["EdgeNode"].items() if _millis(d["spec"]["capacity"]["cpu"]) < 1000]
    assert sorted(small) == ["n-dst0", "n-dst1", "n-src0", "n-src1"]


def test_manifests_pass_validation_and_weights_give_100_per_core(tiny: ps.Instance, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    ps.write(tiny, out)
    problem = manifests_gen.problem_of([str(out)])  # the product's validation and expansion
    assert len(problem.slices) == 3
    ref = reference_capacity(problem.topology)
    sc = ps.scale(tiny)
    for s in problem.slices:
        for nf in s.nfs:
            if nf.package.startswith("vnf-"):
                need = nf.flavors[Flavor.VNF].resources
                assert need == Resources(1000, 2**20)
                # The resource term of one instance, in hop units (x budget / link delay): 100 per core.
                cost = resource_cost(problem.topology, "n-a", need, ref) * sc.budget / sc.link_delay
                assert cost == pytest.approx(100.0)
            else:
                # The egress role costs nothing wherever it runs.
                assert (
                    resource_cost(
                        problem.topology, f"n-{nf.package.removeprefix('egress-')}", Resources(1, 1), ref
                    )
                    == 0
                )
        assert {p.budget_ms for p in s.paths} == {20.0}


def test_independent_optimum_of_the_tiny_instance(tiny: ps.Instance) -> None:
    check = published_check.independent_optimum(tiny)
    assert check["proven"] and check["value"] == 209.0
    assert check["placement"] == {"v0": "a", "v1": "b"}
    # By hand, every placement of one instance per type on distinct hosts (one core each):
    d = ps.hop_distances(tiny)
    best = min(
        sum(d[r.ingress][x] + d[x][y] + d[y][r.egress] for r in tiny.requests)
        for x, y in itertools.permutations(["a", "b", "c"], 2)
    )
    assert check["hops"] == best == 9


def test_published_units_read_the_plan_document(tiny: ps.Instance, tmp_path: Path) -> None:
    """The placement's cores and hops are read from the plan document of the product's pipeline, and
    agree with the document's own path latencies; sharing or not, never below the proven optimum."""
    from flyslice.operator.intake.validation import validate_paths
    from flyslice.operator.planning.pipeline import plan
    from flyslice.operator.planning.plan_format import plan_document

    out = tmp_path / "manifests"
    ps.write(tiny, out)
    doc = plan_document(plan(validate_paths([str(out)]).catalog))
    got = ps.published_units(tiny, doc)
    assert got["admitted"] >= 1 and got["egress_pinned"]
    sc = ps.scale(tiny)
    by_name = {f"req-{i:03d}": r for i, r in enumerate(tiny.requests)}
    from_paths = sum(
        (p["latencyMs"] - sum(tiny.vnfs[t].delay for t in by_name[s["name"]].chain)) / sc.link_delay
        for s in doc["slices"]
        if s["admitted"]
        for p in s["paths"]
    )
    assert got["hops"] == pytest.approx(from_paths)
    if got["value"] is not None:
        assert got["value"] >= 209.0 - 1e-9


def test_format_errors_name_file_and_line(tmp_path: Path) -> None:
    inst_dir = tmp_path / "data"
    _write_tiny(inst_dir)
    bad = inst_dir / "tiny" / "requests"
    bad.write_text(REQUESTS + "src0,dst0,1,20,v0,nat\n", encoding="utf-8")
    with pytest.raises(ps.FormatError, match=re.escape(f"{bad}:5: VNF 'nat' is not in the VNF library")):
        ps.load(inst_dir, ps.Case("tiny", "tiny"))


# The real published files are not in this repository (no licence; fetched data is not committed),
# so the checks on them (independent optimum == published optimum, flyslice never below it, proven
# bounds never above it) run in `python benchmarks/run.py published`, where the data is present.
