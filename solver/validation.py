"""Per-slice input checks: a malformed slice is refused with a reason naming the field,
and never blocks the other slices."""

from __future__ import annotations

import math

from .model import Problem, SliceDemand


def slice_errors(problem: Problem, s: SliceDemand) -> list[str]:
    hosts = problem.topology.host_by_name
    errors: list[str] = []
    seen: set[str] = set()
    for nf in s.nfs:
        if nf.id in seen:
            errors.append(f"slice {s.key}: nfs: duplicate NF id {nf.id!r}")
        seen.add(nf.id)
        if not nf.flavors:
            errors.append(f"slice {s.key}: NF {nf.id!r} (package {nf.package}) declares no flavour")
        for flavor, demand in nf.flavors.items():
            if demand.flavor != flavor:
                errors.append(
                    f"slice {s.key}: NF {nf.id!r}: flavors[{flavor}] holds a {demand.flavor} demand"
                )
            r = demand.resources
            if r.cpu_millis < 0 or r.memory_bytes < 0 or demand.processing_latency_ms < 0:
                errors.append(f"slice {s.key}: NF {nf.id!r}: flavors[{flavor}] has a negative demand")
    for p in s.paths:
        if p.attachment not in hosts:
            errors.append(f"slice {s.key}: path {p.name!r}: attachment {p.attachment!r} is not a known host")
        for nf_id in p.nfs:
            if nf_id not in s.nf_by_id:
                errors.append(f"slice {s.key}: path {p.name!r}: unknown NF {nf_id!r}")
        if math.isnan(p.budget_ms) or p.budget_ms < 0:
            errors.append(f"slice {s.key}: path {p.name!r}: budget_ms must be >= 0, got {p.budget_ms!r}")
    for e in s.edges:
        for end in (e.src, e.dst):
            if end not in s.nf_by_id:
                errors.append(f"slice {s.key}: edge {e.src}->{e.dst}: unknown NF {end!r}")
    if not 0 <= s.availability_target <= 1:
        errors.append(f"slice {s.key}: availability_target must be in [0, 1], got {s.availability_target!r}")
    return errors


def current_is_usable(problem: Problem, s: SliceDemand) -> bool:
    """Every NF has a current assignment on a known host with a declared flavour."""
    hosts = problem.topology.host_by_name
    return bool(s.nfs) and all(
        nf.id in s.current and s.current[nf.id].host in hosts and s.current[nf.id].flavor in nf.flavors
        for nf in s.nfs
    )
