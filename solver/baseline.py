"""GNF's placement rule as a baseline: every NF as close to the user as it fits, falling back
toward the cloud. Slices go in priority order; a slice whose greedy placement breaks a
budget or its availability target is rejected and its resources released."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

from .candidates import Option, fitting, static_options
from .distances import Distances
from .evaluation import slice_usage, violations
from .model import Assignment, Flavor, Host, Problem, Resources, SliceDemand, Tier

#: Toward the cloud: the fallback order when two hosts are equally close to the user.
_TIER_ORDER = {Tier.GATEWAY: 0, Tier.FOG: 1, Tier.CLOUD: 2}


def priority_order(slices: list[SliceDemand]) -> list[SliceDemand]:
    return sorted(slices, key=lambda s: (-s.priority, s.key))


def nf_order(s: SliceDemand) -> list[str]:
    """NFs in the order the user's traffic reaches them (path position), then the rest."""
    position: dict[str, int] = {}
    for p in s.paths:
        for i, nf_id in enumerate(p.nfs):
            position[nf_id] = min(i, position.get(nf_id, i))
    return sorted(s.nf_by_id, key=lambda n: (position.get(n, math.inf), n))


def user_anchors(s: SliceDemand) -> dict[str, list[str]]:
    """The attachment hosts each NF serves: its own, or those of the paths it lies on."""
    anchors: dict[str, list[str]] = {}
    for p in s.paths:
        for nf_id in p.nfs:
            anchors.setdefault(nf_id, [])
            if p.attachment not in anchors[nf_id]:
                anchors[nf_id].append(p.attachment)
    for nf in s.nfs:
        if nf.attachment is not None:
            anchors[nf.id] = [nf.attachment]
    return anchors


def _closeness(
    o: Option, users: list[str], hosts: Mapping[str, Host], dist: Distances
) -> tuple[float, int, int, float]:
    """Closest to the user first; then toward the cloud; then the lighter flavour; then the cheaper host."""
    far = sum(dist.get(u, o.host) for u in users)
    lighter = 0 if o.flavor is Flavor.FNF else 1
    return (far, _TIER_ORDER[hosts[o.host].tier], lighter, hosts[o.host].cost)


def greedy_slice(
    problem: Problem, s: SliceDemand, free: dict[str, Resources], dist: Distances
) -> tuple[dict[str, Assignment] | None, str]:
    """Place one slice greedily into ``free`` (updated in place when it is admitted)."""
    hosts = problem.topology.host_by_name
    anchors = user_anchors(s)
    left = dict(free)
    chosen: dict[str, Assignment] = {}
    for nf_id in nf_order(s):
        nf = s.nf_by_id[nf_id]
        opts = fitting(static_options(s, nf, problem.topology), left)
        if not opts:
            return None, f"baseline: no host with room and a suitable runtime for NF {nf_id}"

        users = anchors.get(nf_id, [])
        best = min(opts, key=partial(_closeness, users=users, hosts=hosts, dist=dist))
        chosen[nf_id] = Assignment(best.host, best.flavor)
        left[best.host] = left[best.host] - best.resources
    broken = violations(problem, s, chosen, free, dist)
    if broken:
        return None, "baseline: greedy placement rejected: " + "; ".join(broken)
    for host, used in slice_usage(s, chosen).items():
        free[host] = free[host] - used
    return chosen, ""


def greedy(
    problem: Problem, slices: list[SliceDemand], free: Mapping[str, Resources], dist: Distances
) -> tuple[dict[str, dict[str, Assignment]], dict[str, str]]:
    """Admitted slices' assignments and each rejected slice's reason."""
    left = dict(free)
    admitted: dict[str, dict[str, Assignment]] = {}
    rejected: dict[str, str] = {}
    for s in priority_order(slices):
        chosen, why = greedy_slice(problem, s, left, dist)
        if chosen is None:
            rejected[s.key] = why
        else:
            admitted[s.key] = chosen
    return admitted, rejected
