"""The product-path benchmark measures what it says: its generated manifests are the seeded solver
instance, and ``flyslice plan`` on them runs the product's default solver configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import manifests_gen  # noqa: E402
import product_path  # noqa: E402

from flyslice.solver import Problem, SolveOptions  # noqa: E402


def _normal(problem: Problem) -> dict[str, object]:
    """What the solver reads of a problem, with the order of edges and flavours left out."""
    return {
        "hosts": sorted(problem.topology.hosts, key=lambda h: h.name),
        "links": sorted(
            (tuple(sorted((lk.a, lk.b))), lk.latency_ms, lk.bandwidth_mbps) for lk in problem.topology.links
        ),
        "slices": {
            s.key: (
                [
                    (nf.id, nf.role, nf.package, sorted(nf.flavors.items()), nf.attachment, nf.allowed_tiers)
                    for nf in s.nfs
                ],
                sorted((e.src, e.dst, e.bandwidth_mbps) for e in s.edges),
                s.paths,
                s.availability_target,
                s.isolation_required,
                s.priority,
            )
            for s in problem.slices
        },
    }


@pytest.mark.parametrize("topology", ["tree", "mesh"])
def test_generated_manifests_are_the_seeded_instance(tmp_path: Path, topology: str) -> None:
    generated = manifests_gen.generate(tmp_path, 40, 12, 4, topology, gw_scale=0.5)
    read_back = manifests_gen.problem_of([str(tmp_path)])
    assert _normal(read_back) == _normal(generated)


def test_flyslice_plan_on_generated_manifests_uses_the_default_solver(tmp_path: Path) -> None:
    manifests_gen.generate(tmp_path, 30, 8, 3)
    doc, wall = product_path.flyslice_plan([str(tmp_path)], time_limit_s=20)
    expected = {"highs": "HiGHS", "cbc": "CBC"}[SolveOptions().solver]
    assert doc["solver"]["name"] == expected
    assert doc["solver"]["method"] == "ilp"
    assert len(doc["slices"]) == 8 and wall > doc["solver"]["seconds"]
