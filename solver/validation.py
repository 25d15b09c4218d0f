"""Input checks. A malformed slice is refused with a reason naming the field, and never blocks
the other slices; a number no placement can use (NaN, an infinity, an integer beyond a float)
anywhere in the problem is a caller's bug and raises ``ValueError`` before any model is built."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator

from .model import Problem, Resources, SliceDemand


def check_problem(problem: Problem) -> None:
    """Raise ``ValueError`` naming every non-finite number of ``problem`` (at most ten).

    The control plane's intake refuses such numbers in manifests; this guards the solver against
    any other caller, since PuLP and the MILP solvers fail obscurely (or loop) on NaN and infinity.
    """
    bad = [f"{where} is {_shown(value)}" for where, value in _numbers(problem) if not _finite(value)]
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise ValueError(
            "the placement problem holds numbers that are not finite: " + "; ".join(bad[:10]) + more
        )


def _shown(value: float) -> str:
    if isinstance(value, int):
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    return repr(value)


def _finite(value: float) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    # An int is finite, but one beyond a float64 overflows the solver's float arithmetic all the same.
    return abs(value) <= sys.float_info.max


def _numbers(problem: Problem) -> Iterator[tuple[str, float]]:
    for h in problem.topology.hosts:
        yield from _resources(f"host {h.name!r}: capacity", h.capacity)
        yield f"host {h.name!r}: availability", h.availability
        yield f"host {h.name!r}: cost", h.cost
    for lk in problem.topology.links:
        yield f"link {lk.a}-{lk.b}: latency_ms", lk.latency_ms
        if lk.bandwidth_mbps is not None:
            yield f"link {lk.a}-{lk.b}: bandwidth_mbps", lk.bandwidth_mbps
    for name, used in problem.background.items():
        yield from _resources(f"background of {name!r}", used)
    for term in ("resource", "latency", "migration", "rejection"):
        yield f"weights.{term}", getattr(problem.weights, term)
    for s in problem.slices:
        yield f"slice {s.key}: availability_target", s.availability_target
        yield f"slice {s.key}: priority", s.priority
        for nf in s.nfs:
            for flavor, demand in nf.flavors.items():
                where = f"slice {s.key}: NF {nf.id!r}: flavors[{flavor}]"
                yield from _resources(where, demand.resources)
                yield f"{where}: processing_latency_ms", demand.processing_latency_ms
        for p in s.paths:
            yield f"slice {s.key}: path {p.name!r}: budget_ms", p.budget_ms
        for e in s.edges:
            yield f"slice {s.key}: edge {e.src}->{e.dst}: bandwidth_mbps", e.bandwidth_mbps


def _resources(where: str, r: Resources) -> Iterator[tuple[str, float]]:
    yield f"{where}.cpu_millis", r.cpu_millis
    yield f"{where}.memory_bytes", r.memory_bytes


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
