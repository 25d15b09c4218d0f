"""Benchmark suite ``published``: flyslice against published SFC-placement optima (issue 15 item 4).

    python benchmarks/run.py published [--quick] [--json FILE]

Each case of published_sfc.py (instances of the MMB 2018 VNF-chain placement benchmark with their
published optimal frontier) is translated into manifests and planned by ``flyslice plan`` as users
run it (only ``--time-limit`` is passed: 10 s with ``--quick``, which also leaves out the largest
case; the product default otherwise). Per case: the published optimum of ``100 x cores + hops``, the
same optimum found independently (enumeration and bounds, no flyslice), flyslice's placement in
those units, its proven lower bound in those units, time, status, guarantee and gap.

The published files are not in this repository (no licence; fetched data is not committed): the
suite reads them from ``$FLYSLICE_PUBLISHED_SFC`` or ``../shared/published_sfc`` and reports
``skipped`` without them. ``failures`` lists contradictions: a flyslice placement cheaper than a
proven optimum, a proven bound above it, an egress role off its node, or an independent optimum
that disagrees with the published one.
"""

from __future__ import annotations

from typing import Any

import published_sfc

#: Slack for float noise in objective values of a few thousand.
TOLERANCE = 1e-6


def failures(row: dict[str, Any]) -> list[str]:
    """What in one case's row contradicts a proven fact (see the module docstring)."""
    out = []
    name = row["case"]
    best = row["independent_optimum"] if row["independent_optimum"] is not None else row["published_optimum"]
    if (
        row["independent_optimum"] is not None
        and abs(row["independent_optimum"] - row["published_optimum"]) > TOLERANCE
    ):
        out.append(
            f"{name}: independent optimum {row['independent_optimum']:g} != published {row['published_optimum']:g}"
        )
    if row["flyslice_value"] is not None and row["flyslice_value"] < best - TOLERANCE:
        out.append(f"{name}: flyslice placement {row['flyslice_value']:g} is below the optimum {best:g}")
    if row["proven_bound"] is not None and row["proven_bound"] > best + TOLERANCE:
        out.append(f"{name}: flyslice's proven bound {row['proven_bound']:g} is above the optimum {best:g}")
    if not row["egress_pinned"]:
        out.append(f"{name}: an egress role ran off its request's egress node")
    return out


def run(quick: bool) -> dict[str, Any]:
    root = published_sfc.data_dir()
    if not root.is_dir():
        return {"skipped": f"no published data at {root} (docs/benchmarks.md, 'Published optima')"}
    cases = [c for c in published_sfc.CASES if not (quick and c.name == "msgp")]
    rows = published_sfc.run(root, cases, 10.0 if quick else None)
    return {
        "source": published_sfc.SOURCE,
        "published": [{k: v for k, v in r.items() if k != "differences"} for r in rows],
        "differences": {r["case"]: r["differences"] for r in rows},
        "failures": [f for r in rows for f in failures(r)],
    }
