"""GNF's placement rule as a baseline: every NF as close to the user as it fits, falling back
toward the cloud. Slices go in priority order; a slice whose greedy placement breaks a
budget or its availability target is rejected and its resources released.

With NF sharing, an NF in a flavour with sharing joins an open instance of its pool on the host at
hand when one has room (capacity and tenant slots), and opens one there only otherwise; the open
instances are those of the :class:`~.sharing.Ledger` passed in (running ones, earlier slices')."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping

from .candidates import eligible
from .distances import Distances
from .evaluation import link_load, violations
from .model import Assignment, Flavor, Host, Problem, Resources, SliceDemand, Tier
from .sharing import Ledger

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
    """Closest to the user first; then toward the cloud; then the lighter flavour; then the cheaper host.

    The definition of the greedy's order; :class:`Ranked` produces it without computing it per pair
    (tests/solver/test_fast_paths.py sorts by this function as the reference).
    """
    far = sum(dist.row(u).get(host.name, dist.cap) for u in users)
    lighter = 0 if flavor is Flavor.FNF else 1
    return (far, _TIER_ORDER[host.tier], lighter, host.cost)


class Ranked:
    """(host, flavour) pairs in :func:`_closeness` order (ties in ``eligible`` order, as a stable
    sort gives), produced lazily from a heap: the greedy reads each list only until the first pair
    with room, and on 1000 hosts sorting every list in full was most of its time."""

    def __init__(
        self, pairs: list[tuple[Host, Flavor]], keys: list[tuple[float, tuple[int, int, float, int]]]
    ):
        self._pairs = pairs
        self._heap = keys
        heapq.heapify(self._heap)
        self._ranked: list[tuple[Host, Flavor]] = []

    def __iter__(self) -> Iterator[tuple[Host, Flavor]]:
        i = 0
        while True:
            if i == len(self._ranked):
                if not self._heap:
                    return
                # The last element of a key is the pair's unique index, so no two keys tie.
                self._ranked.append(self._pairs[heapq.heappop(self._heap)[1][-1]])
            yield self._ranked[i]
            i += 1


#: Preference lists, shared by NFs with the same users and eligibility, and per eligibility the
#: static part of each pair's key (see :func:`_preference`).
Preferences = dict[tuple[object, ...], object]


def _preference(
    problem: Problem, s: SliceDemand, nf_id: str, users: tuple[str, ...], dist: Distances, cache: Preferences
) -> Ranked:
    nf = s.nf_by_id[nf_id]
    key = (users, nf.allowed_tiers, tuple(nf.flavors), s.isolation_required)
    found = cache.get(key)
    if isinstance(found, Ranked):
        return found
    pairs = eligible(problem.topology, s, nf)
    static_key = ("static", id(pairs))
    statics = cache.get(static_key)
    if not isinstance(statics, tuple):
        # (tier order, lighter, cost, index): the rest of _closeness, then the position in pairs.
        statics = cache[static_key] = (
            [h.name for h, _ in pairs],
            [(_TIER_ORDER[h.tier], 0 if f is Flavor.FNF else 1, h.cost, i) for i, (h, f) in enumerate(pairs)],
        )
    names, rest = statics
    rows = [dist.row(u) for u in users]
    cap = dist.cap
    # The far term exactly as _closeness sums it (same order of users, same start value).
    if len(rows) == 1:
        get = rows[0].get
        keys = [(0 + get(n, cap), r) for n, r in zip(names, rest, strict=True)]
    else:
        keys = [(sum(row.get(n, cap) for row in rows), r) for n, r in zip(names, rest, strict=True)]
    ranked = cache[key] = Ranked(pairs, keys)
    return ranked


def greedy_slice(
    problem: Problem,
    s: SliceDemand,
    free: dict[str, Resources],
    links: dict[frozenset[str], float],
    dist: Distances,
    cache: Preferences | None = None,
    ledger: Ledger | None = None,
) -> tuple[dict[str, Assignment] | None, str]:
    """Place one slice greedily into ``free``, ``links`` and the shared instances of ``ledger``
    (all updated in place when it is admitted)."""
    cache = {} if cache is None else cache
    draft = (Ledger(problem.derated) if ledger is None else ledger).draft(s, None, {})
    anchors = user_anchors(s)
    used: dict[str, Resources] = {}
    chosen: dict[str, Assignment] = {}
    for nf_id in nf_order(s):
        nf = s.nf_by_id[nf_id]
        users = tuple(anchors.get(nf_id, ()))
        pick = None
        for host, flavor in _preference(problem, s, nf_id, users, dist, cache):
            demand = nf.flavors[flavor]
            choice = None
            if demand.sharing is None:
                need = demand.resources
            else:
                # Join an open instance with room, else open one here (if the load fits one at all).
                choice = draft.need(nf, host.name, flavor)
                if choice is None:
                    continue
                need = choice.usage
            room = free[host.name]
            taken = used.get(host.name)
            # (taken + need).fits_in(room) without building Resources in this hot loop.
            cpu, mem = need.cpu_millis, need.memory_bytes
            if taken is not None:
                cpu += taken.cpu_millis
                mem += taken.memory_bytes
            if cpu <= room.cpu_millis and mem <= room.memory_bytes:
                pick = (host.name, flavor, need)
                if choice is not None:
                    draft.take(nf, host.name, flavor, choice)
                break
        if pick is None:
            return None, f"baseline: no host with room and a suitable runtime for NF {nf_id}"
        chosen[nf_id] = Assignment(pick[0], pick[1])
        used[pick[0]] = used.get(pick[0], Resources()) + pick[2]
    broken = violations(problem, s, chosen, free, dist, usage=used)
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
    draft.ledger.commit(draft)
    return chosen, ""


def greedy(
    problem: Problem,
    slices: list[SliceDemand],
    free: Mapping[str, Resources],
    link_free: Mapping[frozenset[str], float],
    dist: Distances,
    ledger: Ledger | None = None,
) -> tuple[dict[str, dict[str, Assignment]], dict[str, str]]:
    """Admitted slices' assignments and each rejected slice's reason.

    ``ledger``: the shared instances open before (running ones); the admitted slices' tenants are
    added to it (read their instances with ``ledger.labels()``).
    """
    left = dict(free)
    links = dict(link_free)
    admitted: dict[str, dict[str, Assignment]] = {}
    rejected: dict[str, str] = {}
    cache: Preferences = {}
    shared = Ledger(problem.derated) if ledger is None else ledger
    for s in priority_order(slices):
        chosen, why = greedy_slice(problem, s, left, links, dist, cache, shared)
        if chosen is None:
            rejected[s.key] = why
        else:
            admitted[s.key] = chosen
    return admitted, rejected
