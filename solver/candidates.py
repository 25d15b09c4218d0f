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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .distances import Distances, per_topology, remember
from .model import Flavor, Host, NFDemand, Resources, SliceDemand, Topology

#: Forward/backward refinement only where a path step has at most this many host pairs.
_PAIR_LIMIT = 400


@dataclass(frozen=True)
class Option:
    host: str
    flavor: Flavor
    resources: Resources
    processing_ms: float


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
        demands = {f: (d.resources, d.processing_latency_ms) for f, d in nf.flavors.items()}
        found = cache[key] = [Option(h.name, f, *demands[f]) for h, f in eligible(topology, slice_, nf)]
    return found


def fitting(options: list[Option], free: Mapping[str, Resources]) -> list[Option]:
    return [o for o in options if o.resources.fits_in(free[o.host])]


def _min_proc(options: list[Option]) -> dict[str, float]:
    best: dict[str, float] = {}
    for o in options:
        if o.processing_ms < best.get(o.host, math.inf):
            best[o.host] = o.processing_ms
    return best


def path_slack(
    slice_: SliceDemand, options: Mapping[str, list[Option]], dist: Distances
) -> dict[str, dict[str, float]]:
    """For each NF on a budgeted path, each host's smallest slack (budget minus a latency lower bound).

    A negative slack means no placement of the path through that host meets the budget.
    NFs on no path are absent. The bound is the triangle inequality (attachment -> host ->
    nearest host of the path's last NF) plus the least processing of the other NFs, tightened by
    an exact forward/backward pass over path steps with few host pairs.
    """
    slack: dict[str, dict[str, float]] = {}
    cap = dist.cap
    for path in slice_.paths:
        steps = [_min_proc(options[nf_id]) for nf_id in path.nfs]
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
        to_last = dist.nearest(frozenset(steps[-1]))
        # fwd[i][h]: latency from the attachment through NF i on h; bwd[i][h]: from h to the end.
        fwd: list[dict[str, float]] = []
        bwd: list[dict[str, float]] = []
        for i, mp in enumerate(steps):
            fwd.append({h: att_row.get(h, cap) + before[i] + p for h, p in mp.items()})
            if i == k - 1:
                bwd.append(dict.fromkeys(mp, after[i]))
            else:
                bwd.append({h: to_last.get(h, cap) + after[i] for h in mp})
        for i in range(1, k):
            prev, mp = fwd[i - 1], steps[i]
            if len(prev) * len(mp) <= _PAIR_LIMIT:
                rows = {g: dist.row(g) for g in prev}
                for h, p in mp.items():
                    exact = min(e + (0.0 if g == h else rows[g].get(h, cap)) for g, e in prev.items()) + p
                    fwd[i][h] = max(fwd[i][h], exact)
        for i in range(k - 2, -1, -1):
            nxt, later = steps[i + 1], bwd[i + 1]
            if len(steps[i]) * len(nxt) <= _PAIR_LIMIT:
                rows = {g: dist.row(g) for g in nxt}
                for h in steps[i]:
                    exact = min(
                        (0.0 if g == h else rows[g].get(h, cap)) + p + later[g] for g, p in nxt.items()
                    )
                    bwd[i][h] = max(bwd[i][h], exact)
        for i, nf_id in enumerate(path.nfs):
            per_host = slack.setdefault(nf_id, {})
            f, b = fwd[i], bwd[i]
            for h in steps[i]:
                value = path.budget_ms - (f[h] + b[h])
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
        a for a in options if is_current(a) or not any(b is not a and beats(b, a) for b in by_host[a.host])
    ]


def prune(
    slice_: SliceDemand,
    topology: Topology,
    free: Mapping[str, Resources],
    dist: Distances,
    max_candidates: int | None = None,
    dominated: bool = False,
) -> dict[str, list[Option]]:
    """The surviving options of every NF of ``slice_`` (an empty list means it cannot be placed).

    Dominated flavours (see :func:`drop_dominated`) are dropped unless ``dominated`` keeps them
    (tests compare both models).
    """
    options = {nf.id: fitting(static_options(slice_, nf, topology), free) for nf in slice_.nfs}
    # Pruning one NF tightens the bounds of its neighbours, so repeat until nothing changes.
    for _ in range(3):
        slack = path_slack(slice_, options, dist)
        changed = False
        for nf_id, per_host in slack.items():
            kept = [o for o in options[nf_id] if per_host.get(o.host, -1.0) >= -1e-9]
            changed |= len(kept) != len(options[nf_id])
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
        load = o.resources.cpu_millis + o.resources.memory_bytes / 2**20
        return (
            0 if is_current else 1,
            -round(slack.get(o.host, 0.0), 3),
            topology.host_by_name[o.host].cost * load,
        )

    return sorted(opts, key=key)
