"""GNF's placement rule as a baseline: every NF as close to the user as it fits, falling back
toward the cloud. Slices go in priority order; a slice whose greedy placement breaks a
budget or its availability target is rejected and its resources released."""

from __future__ import annotations

import math
from collections.abc import Mapping

from .candidates import eligible
from .distances import Distances
from .evaluation import link_load, violations
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
    host: Host, flavor: Flavor, users: tuple[str, ...], dist: Distances
) -> tuple[float, int, int, float]:
    """Closest to the user first; then toward the cloud; then the lighter flavour; then the cheaper host."""
    far = sum(dist.row(u).get(host.name, dist.cap) for u in users)
    lighter = 0 if flavor is Flavor.FNF else 1
    return (far, _TIER_ORDER[host.tier], lighter, host.cost)


#: Sorted (host, flavour) preference lists, shared by NFs with the same users and eligibility.
Preferences = dict[tuple[object, ...], list[tuple[Host, Flavor]]]


def _preference(
    problem: Problem, s: SliceDemand, nf_id: str, users: tuple[str, ...], dist: Distances, cache: Preferences
) -> list[tuple[Host, Flavor]]:
    nf = s.nf_by_id[nf_id]
    key = (users, nf.allowed_tiers, tuple(nf.flavors), s.isolation_required)
    found = cache.get(key)
    if found is None:
        pairs = eligible(problem.topology, s, nf)
        found = cache[key] = sorted(pairs, key=lambda hf: _closeness(hf[0], hf[1], users, dist))
    return found


def greedy_slice(
    problem: Problem,
    s: SliceDemand,
    free: dict[str, Resources],
    links: dict[frozenset[str], float],
    dist: Distances,
    cache: Preferences | None = None,
) -> tuple[dict[str, Assignment] | None, str]:
    """Place one slice greedily into ``free`` and ``links`` (updated in place when it is admitted)."""
    cache = {} if cache is None else cache
    anchors = user_anchors(s)
    used: dict[str, Resources] = {}
    chosen: dict[str, Assignment] = {}
    for nf_id in nf_order(s):
        nf = s.nf_by_id[nf_id]
        users = tuple(anchors.get(nf_id, ()))
        pick = None
        for host, flavor in _preference(problem, s, nf_id, users, dist, cache):
            need = nf.flavors[flavor].resources
            if (used.get(host.name, Resources()) + need).fits_in(free[host.name]):
                pick = (host.name, flavor, need)
                break
        if pick is None:
            return None, f"baseline: no host with room and a suitable runtime for NF {nf_id}"
        chosen[nf_id] = Assignment(pick[0], pick[1])
        used[pick[0]] = used.get(pick[0], Resources()) + pick[2]
    broken = violations(problem, s, chosen, free, dist)
    load = link_load(problem, s, chosen, dist) if links else {}
    broken += [
        f"link {'-'.join(sorted(link))} lacks bandwidth ({mbps:g} Mbit/s needed, {links[link]:g} free)"
        for link, mbps in load.items()
        if link in links and mbps > links[link] + 1e-6
    ]
    if broken:
        return None, "baseline: greedy placement rejected: " + "; ".join(broken)
    for host_name, r in used.items():
        free[host_name] = free[host_name] - r
    for link, mbps in load.items():
        if link in links:
            links[link] -= mbps
    return chosen, ""


def greedy(
    problem: Problem,
    slices: list[SliceDemand],
    free: Mapping[str, Resources],
    link_free: Mapping[frozenset[str], float],
    dist: Distances,
) -> tuple[dict[str, dict[str, Assignment]], dict[str, str]]:
    """Admitted slices' assignments and each rejected slice's reason."""
    left = dict(free)
    links = dict(link_free)
    admitted: dict[str, dict[str, Assignment]] = {}
    rejected: dict[str, str] = {}
    cache: Preferences = {}
    for s in priority_order(slices):
        chosen, why = greedy_slice(problem, s, left, links, dist, cache)
        if chosen is None:
            rejected[s.key] = why
        else:
            admitted[s.key] = chosen
    return admitted, rejected
