"""Pruning before the model: the (host, flavour) options each NF may take.

An option survives only if the host offers the flavour's runtime, the slice's isolation
allows the flavour, the host's tier is allowed, the NF fits in the host's free capacity,
and the host can lie on every budgeted path through the NF within its budget (a lower
bound from the triangle inequality plus, where cheap, a forward/backward pass over the
path). The ILP is exact on the options that remain, because everything pruned here is
infeasible anyway, or dominated: a flavour of an NF on a host that needs at least the CPU, memory
and processing latency of another flavour on the same host (and is not where the NF runs now) can
be swapped for that one in any placement without breaking a rule or raising the objective
(``drop_dominated``), so the optimum's value is unchanged.

An option in a flavour with sharing fits when its load fits one instance of its pool on the host
(derated there, if so) and either a running instance there has room for it (incremental mode) and
the host has room for its per-tenant resources, or the host has room for a new instance (the
flavour's resources plus per-tenant); such options are never dropped as dominated (their host usage
depends on the packing).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from .distances import Distances, per_topology, remember
from .model import Flavor, Host, NFDemand, Resources, Sharing, SliceDemand, Topology
from .sharing import Shares, capacity_of, fits_load

#: Forward/backward refinement only where a path step has at most this many host pairs.
_PAIR_LIMIT = 400


@dataclass(frozen=True)
class Option:
    host: str
    flavor: Flavor
    #: The flavour's resources: with ``sharing``, those of one instance (paid once per instance).
    resources: Resources
    processing_ms: float
    #: The flavour's sharing (``None``: the NF gets an instance of its own).
    sharing: Sharing | None = None

    @property
    def alone(self) -> Resources:
        """Host usage of this NF as the only tenant of its instance (its own, when not shared)."""
        return self.resources + self.sharing.per_tenant if self.sharing else self.resources


def flavor_allowed(slice_: SliceDemand, host: Host, flavor: Flavor) -> bool:
    return flavor in host.runtimes and not (flavor is Flavor.FNF and slice_.isolation_required)


def tier_allowed(nf: NFDemand, host: Host) -> bool:
    return nf.allowed_tiers is None or host.tier in nf.allowed_tiers


_ELIGIBLE: dict[int, dict[tuple[object, ...], list[tuple[Host, Flavor]]]] = {}


def eligible(topology: Topology, slice_: SliceDemand, nf: NFDemand) -> list[tuple[Host, Flavor]]:
    """(host, flavour) pairs allowed by tier, runtime and isolation, cached per topology."""
    cache = per_topology(topology, _ELIGIBLE)
    if cache is None:
        cache = remember(topology, _ELIGIBLE, {})
    key = (nf.allowed_tiers, tuple(nf.flavors), slice_.isolation_required)
    found = cache.get(key)
    if found is None:
        found = [
            (host, flavor)
            for host in topology.hosts
            if tier_allowed(nf, host)
            for flavor in nf.flavors
            if flavor_allowed(slice_, host, flavor)
        ]
        cache[key] = found
    return found


_STATIC: dict[int, dict[tuple[object, ...], list[Option]]] = {}


def static_options(slice_: SliceDemand, nf: NFDemand, topology: Topology) -> list[Option]:
    """Options allowed by runtime, isolation and tier alone (a shared list: do not modify it).

    Cached per topology and NF demand: slices share packages, and building these lists for
    every NF of a 1000-host instance took a fifth of the pruning time.
    """
    cache = per_topology(topology, _STATIC)
    if cache is None:
        cache = remember(topology, _STATIC, {})
    key = (nf.allowed_tiers, tuple(nf.flavors.items()), slice_.isolation_required)
    found = cache.get(key)
    if found is None:
        demands = {f: (d.resources, d.processing_latency_ms, d.sharing) for f, d in nf.flavors.items()}
        found = cache[key] = [Option(h.name, f, *demands[f]) for h, f in eligible(topology, slice_, nf)]
    return found


def fitting(
    options: list[Option], free: Mapping[str, Resources], load: float = 0.0, shares: Shares | None = None
) -> list[Option]:
    """The options that fit in ``free`` (``load``: the NF's, for options with sharing)."""
    if all(o.sharing is None for o in options):
        return [o for o in options if o.resources.fits_in(free[o.host])]
    return [o for o in options if option_fits(o, free[o.host], load, shares)]


def option_fits(o: Option, room: Resources, load: float, shares: Shares | None) -> bool:
    sh = o.sharing
    if sh is None:
        return o.resources.fits_in(room)
    derated = shares.derated if shares is not None else {}
    if not fits_load(load, capacity_of(derated, sh.pool, sh.capacity_mbps, o.host)):
        return False
    if o.alone.fits_in(room):
        return True
    spare = shares.room.get((sh.pool, o.host)) if shares is not None else None
    return spare is not None and fits_load(load, spare) and sh.per_tenant.fits_in(room)


def _min_proc(options: list[Option]) -> dict[str, float]:
    best: dict[str, float] = {}
    for o in options:
        if o.processing_ms < best.get(o.host, math.inf):
            best[o.host] = o.processing_ms
    return best


class _Steps:
    """Per NF of a slice, the least processing latency of its options on each host, and that
    host set; computed once per NF (paths share NFs) and kept while the NF's options do not change.

    ``seed`` provides precomputed values (shared objects: never modified here).
    """

    def __init__(
        self,
        options: Mapping[str, list[Option]],
        seed: Mapping[str, tuple[dict[str, float], frozenset[str]]] | None = None,
    ) -> None:
        self.options = options
        self._least: dict[str, dict[str, float]] = {}
        self._hosts: dict[str, frozenset[str]] = {}
        for nf_id, (least, hosts) in (seed or {}).items():
            self._least[nf_id] = least
            self._hosts[nf_id] = hosts

    def least(self, nf_id: str) -> dict[str, float]:
        found = self._least.get(nf_id)
        if found is None:
            found = self._least[nf_id] = _min_proc(self.options[nf_id])
        return found

    def hosts(self, nf_id: str) -> frozenset[str]:
        found = self._hosts.get(nf_id)
        if found is None:
            found = self._hosts[nf_id] = frozenset(self.least(nf_id))
        return found

    def forget(self, nf_id: str) -> None:
        """``options[nf_id]`` changed."""
        self._least.pop(nf_id, None)
        self._hosts.pop(nf_id, None)


def path_slack(
    slice_: SliceDemand, options: Mapping[str, list[Option]], dist: Distances
) -> dict[str, dict[str, float]]:
    """For each NF on a budgeted path, each host's smallest slack (budget minus a latency lower bound).

    A negative slack means no placement of the path through that host meets the budget.
    NFs on no path are absent. The bound is the triangle inequality (attachment -> host ->
    nearest host of the path's last NF) plus the least processing of the other NFs, tightened by
    an exact forward/backward pass over path steps with few host pairs.
    """
    return _slack(slice_, _Steps(options), dist)


def _slack(slice_: SliceDemand, known: _Steps, dist: Distances) -> dict[str, dict[str, float]]:
    """:func:`path_slack` on the per-NF data of ``known``."""
    slack: dict[str, dict[str, float]] = {}
    cap = dist.cap
    for path in slice_.paths:
        steps = [known.least(nf_id) for nf_id in path.nfs]
        if not steps:
            continue
        if not all(steps):
            # Some NF of the path has nowhere to go, so the path cannot be placed at all.
            for i, nf_id in enumerate(path.nfs):
                slack.setdefault(nf_id, {}).update(dict.fromkeys(steps[i], -math.inf))
            continue
        k = len(steps)
        least = [min(mp.values()) for mp in steps]
        before = [sum(least[:i]) for i in range(k)]
        after = [sum(least[i + 1 :]) for i in range(k)]
        att_row = dist.row(path.attachment)
        to_last = dist.nearest(known.hosts(path.nfs[-1]))
        # Steps i, i+1 with few host pairs get the exact forward/backward pass.
        small = [len(steps[i]) * len(steps[i + 1]) <= _PAIR_LIMIT for i in range(k - 1)]
        # fwd[i][h]: latency from the attachment through NF i on h; bwd[i][h]: from h to the end.
        # Built as dicts only for steps an exact pass reads or refines; for the others (most steps
        # on large topologies) the slack is computed directly below, with the same sums.
        fwd: list[dict[str, float] | None] = []
        bwd: list[dict[str, float] | None] = []
        for i, mp in enumerate(steps):
            if not ((i > 0 and small[i - 1]) or (i < k - 1 and small[i])):
                fwd.append(None)
                bwd.append(None)
                continue
            fwd.append({h: att_row.get(h, cap) + before[i] + p for h, p in mp.items()})
            if i == k - 1:
                bwd.append(dict.fromkeys(mp, after[i]))
            else:
                bwd.append({h: to_last.get(h, cap) + after[i] for h in mp})
        for i in range(1, k):
            if small[i - 1]:
                prev, mp, here = fwd[i - 1], steps[i], fwd[i]
                assert prev is not None and here is not None
                rows = {g: dist.row(g) for g in prev}
                for h, p in mp.items():
                    exact = min(e + (0.0 if g == h else rows[g].get(h, cap)) for g, e in prev.items()) + p
                    here[h] = max(here[h], exact)
        for i in range(k - 2, -1, -1):
            if small[i]:
                nxt, later, there = steps[i + 1], bwd[i + 1], bwd[i]
                assert later is not None and there is not None
                rows = {g: dist.row(g) for g in nxt}
                for h in steps[i]:
                    exact = min(
                        (0.0 if g == h else rows[g].get(h, cap)) + p + later[g] for g, p in nxt.items()
                    )
                    there[h] = max(there[h], exact)
        budget = path.budget_ms
        for i, nf_id in enumerate(path.nfs):
            per_host = slack.setdefault(nf_id, {})
            f, b = fwd[i], bwd[i]
            if f is not None and b is not None:
                for h in steps[i]:
                    value = budget - (f[h] + b[h])
                    if value < per_host.get(h, math.inf):
                        per_host[h] = value
                continue
            ahead, behind, at = before[i], after[i], att_row.get
            if i == k - 1:
                for h, p in steps[i].items():
                    value = budget - ((at(h, cap) + ahead + p) + behind)
                    if value < per_host.get(h, math.inf):
                        per_host[h] = value
            else:
                last = to_last.get
                for h, p in steps[i].items():
                    value = budget - ((at(h, cap) + ahead + p) + (last(h, cap) + behind))
                    if value < per_host.get(h, math.inf):
                        per_host[h] = value
    return slack


def drop_dominated(slice_: SliceDemand, nf_id: str, options: list[Option]) -> list[Option]:
    """``options`` without the flavours dominated by another flavour on the same host.

    Option ``a`` is dominated by ``b`` on the same host when ``b`` needs no more CPU, memory or
    processing latency, and ``a`` is not where the NF runs now (leaving it would cost a move).
    Swapping ``a`` for ``b`` in a placement keeps every rule: the host, hence the routes, distances
    and availability, stay the same, and capacity and budgets only get more slack; the objective's
    resource and latency terms do not grow and no move is added. Of exactly equal flavours one
    stays (the current one, else the first by name).
    """
    current = slice_.current.get(nf_id)
    by_host: dict[str, list[Option]] = {}
    for o in options:
        if o.sharing is None:
            by_host.setdefault(o.host, []).append(o)
    if all(len(same) == 1 for same in by_host.values()):
        return options

    def is_current(o: Option) -> bool:
        return current is not None and (current.host, current.flavor) == (o.host, o.flavor)

    def beats(b: Option, a: Option) -> bool:
        no_worse = (
            b.resources.cpu_millis <= a.resources.cpu_millis
            and b.resources.memory_bytes <= a.resources.memory_bytes
            and b.processing_ms <= a.processing_ms
        )
        if not no_worse:
            return False
        if (b.resources, b.processing_ms) != (a.resources, a.processing_ms):
            return True
        return is_current(b) or (not is_current(a) and str(b.flavor) < str(a.flavor))

    return [
        a
        for a in options
        if a.sharing is not None
        or is_current(a)
        or not any(b is not a and beats(b, a) for b in by_host[a.host])
    ]


def prune(
    slice_: SliceDemand,
    topology: Topology,
    free: Mapping[str, Resources],
    dist: Distances,
    max_candidates: int | None = None,
    dominated: bool = False,
    shares: Shares | None = None,
) -> dict[str, list[Option]]:
    """The surviving options of every NF of ``slice_`` (an empty list means it cannot be placed).

    Dominated flavours (see :func:`drop_dominated`) are dropped unless ``dominated`` keeps them
    (tests compare both models). ``shares``: derated capacities and running instances with room.
    """
    shared = _SHARED[0] if _SHARED else None
    if shared is None or not shared.serves(topology, free, dist, shares):
        shared = Pruner(topology, free, dist, shares)
        _SHARED[:] = [shared]
    return shared.prune(slice_, max_candidates, dominated)


#: The last :class:`Pruner` :func:`prune` made: ``place()`` prunes every slice against the same
#: topology, distances and free capacity, and its slices share most of the work (see Pruner).
_SHARED: list[Pruner] = []


class Pruner:
    """:func:`prune` for many slices against the same topology, distances and free capacity.

    What does not depend on the slice is computed once per NF demand (tier, flavours, isolation)
    and shared: the options that fit, their least processing latency per host and that host set.
    The results are those of :func:`prune` for each slice (tests/solver/test_fast_paths.py).
    ``free`` is copied, so a caller changing its map afterwards does not change the answers; the
    topology and distances are held weakly (a shared pruner must not keep a problem alive).
    """

    def __init__(
        self,
        topology: Topology,
        free: Mapping[str, Resources],
        dist: Distances,
        shares: Shares | None = None,
    ) -> None:
        self._topology = weakref.ref(topology)
        self._dist = weakref.ref(dist)
        self.free = dict(free)
        self.shares = shares
        self._fit: dict[tuple[object, ...], tuple[list[Option], dict[str, float], frozenset[str]]] = {}

    def serves(
        self, topology: Topology, free: Mapping[str, Resources], dist: Distances, shares: Shares | None = None
    ) -> bool:
        """Whether this pruner answers for these inputs (same objects, equal free capacity)."""
        # Equal values are mostly the same objects, which dict equality checks first: cheap.
        return (
            self._topology() is topology
            and self._dist() is dist
            and self.free == free
            and self.shares == shares
        )

    def _fitting(
        self, topology: Topology, slice_: SliceDemand, nf: NFDemand
    ) -> tuple[list[Option], dict[str, float], frozenset[str]]:
        key: tuple[object, ...] = (nf.allowed_tiers, tuple(nf.flavors.items()), slice_.isolation_required)
        if any(d.sharing is not None for d in nf.flavors.values()):
            # Whether a shared option fits depends on the NF's load too.
            key = (*key, nf.load_mbps)
        found = self._fit.get(key)
        if found is None:
            opts = fitting(static_options(slice_, nf, topology), self.free, nf.load_mbps, self.shares)
            least = _min_proc(opts)
            found = self._fit[key] = (opts, least, frozenset(least))
        return found

    def prune(
        self, slice_: SliceDemand, max_candidates: int | None = None, dominated: bool = False
    ) -> dict[str, list[Option]]:
        """:func:`prune` of ``slice_`` (fresh lists: callers may change them)."""
        topology, dist = self._topology(), self._dist()
        if topology is None or dist is None:
            raise RuntimeError("Pruner used after its topology or distances were garbage-collected")
        fits = {nf.id: self._fitting(topology, slice_, nf) for nf in slice_.nfs}
        options = {nf_id: list(f[0]) for nf_id, f in fits.items()}
        known = _Steps(options, {nf_id: (f[1], f[2]) for nf_id, f in fits.items()})
        return _finish(slice_, topology, options, known, dist, max_candidates, dominated)


def _finish(
    slice_: SliceDemand,
    topology: Topology,
    options: dict[str, list[Option]],
    known: _Steps,
    dist: Distances,
    max_candidates: int | None,
    dominated: bool,
) -> dict[str, list[Option]]:
    """The latency pruning, dominance and cap of :func:`prune` on the fitting ``options``."""
    # Pruning one NF tightens the bounds of its neighbours, so repeat until nothing changes.
    for _ in range(3):
        slack = _slack(slice_, known, dist)
        changed = False
        for nf_id, per_host in slack.items():
            kept = [o for o in options[nf_id] if per_host.get(o.host, -1.0) >= -1e-9]
            if len(kept) != len(options[nf_id]):
                changed = True
                known.forget(nf_id)
            options[nf_id] = kept
        if not changed:
            break
    if not dominated:
        # After the latency pruning, which leaves far fewer options to compare (the least
        # processing per host, all the slack uses, is the same with or without dominated ones).
        options = {nf_id: drop_dominated(slice_, nf_id, opts) for nf_id, opts in options.items()}
    if max_candidates is not None:
        slack = path_slack(slice_, options, dist)
        for nf_id, opts in options.items():
            if len(opts) > max_candidates:
                options[nf_id] = _most_promising(slice_, nf_id, opts, slack.get(nf_id, {}), topology)[
                    :max_candidates
                ]
    return options


def _most_promising(
    slice_: SliceDemand, nf_id: str, opts: list[Option], slack: Mapping[str, float], topology: Topology
) -> list[Option]:
    current = slice_.current.get(nf_id)

    def key(o: Option) -> tuple[int, float, float]:
        is_current = current is not None and (current.host, current.flavor) == (o.host, o.flavor)
        # Keep where it runs now; then the most latency slack; then the cheapest.
        need = o.alone
        load = need.cpu_millis + need.memory_bytes / 2**20
        return (
            0 if is_current else 1,
            -round(slack.get(o.host, 0.0), 3),
            topology.host_by_name[o.host].cost * load,
        )

    return sorted(opts, key=key)
