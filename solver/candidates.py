"""Pruning before the model: the (host, flavour) options each NF may take.

An option survives only if the host offers the flavour's runtime, the slice's isolation
allows the flavour, the host's tier is allowed, the NF fits in the host's free capacity,
and the host can lie on every budgeted path through the NF within its budget (a lower
bound from the triangle inequality plus, where cheap, a forward/backward pass over the
path). The ILP is exact on the options that remain, because everything pruned here is
infeasible anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .distances import Distances
from .model import Flavor, Host, NFDemand, Resources, SliceDemand, Topology

#: Forward/backward refinement only where a path step has at most this many host pairs.
_PAIR_LIMIT = 2500


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


def static_options(slice_: SliceDemand, nf: NFDemand, topology: Topology) -> list[Option]:
    """Options allowed by runtime, isolation and tier alone."""
    out = []
    for host in topology.hosts:
        if not tier_allowed(nf, host):
            continue
        for flavor, demand in nf.flavors.items():
            if flavor_allowed(slice_, host, flavor):
                out.append(Option(host.name, flavor, demand.resources, demand.processing_latency_ms))
    return out


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
    NFs on no path are absent.
    """
    slack: dict[str, dict[str, float]] = {}
    for path in slice_.paths:
        steps = [_min_proc(options[nf_id]) for nf_id in path.nfs]
        if not steps:
            continue
        if not all(steps):
            # Some NF of the path has nowhere to go, so the path cannot be placed at all.
            for i, nf_id in enumerate(path.nfs):
                slack.setdefault(nf_id, {}).update(dict.fromkeys(steps[i], -math.inf))
            continue
        # Forward: smallest latency from the attachment to (and through) NF i on host h.
        fwd: list[dict[str, float]] = []
        prev: dict[str, float] = {path.attachment: 0.0}
        proc_before = 0.0
        for mp in steps:
            cur: dict[str, float] = {}
            exact = len(prev) * len(mp) <= _PAIR_LIMIT
            for h, p in mp.items():
                if exact:
                    best = min(e + dist.get(g, h) for g, e in prev.items())
                else:
                    best = dist.get(path.attachment, h) + proc_before
                cur[h] = best + p
            fwd.append(cur)
            proc_before += min(mp.values(), default=0.0)
            prev = cur
        # Backward: smallest latency from NF i on host h (excluding its processing) to the end.
        last = steps[-1]
        bwd: list[dict[str, float]] = [dict.fromkeys(last, 0.0)]
        for i in range(len(steps) - 2, -1, -1):
            nxt = steps[i + 1]
            after = bwd[0]
            cur = {}
            exact = len(steps[i]) * len(nxt) <= _PAIR_LIMIT
            proc_after = sum(min(s.values(), default=0.0) for s in steps[i + 1 :])
            for h in steps[i]:
                if exact:
                    cur[h] = min((dist.get(h, g) + nxt[g] + after[g] for g in nxt), default=math.inf)
                else:
                    reach = min((dist.get(h, g) for g in last), default=math.inf)
                    cur[h] = reach + proc_after
            bwd.insert(0, cur)
        for i, nf_id in enumerate(path.nfs):
            per_host = slack.setdefault(nf_id, {})
            for h in steps[i]:
                s = path.budget_ms - (fwd[i][h] + bwd[i][h])
                per_host[h] = min(s, per_host.get(h, math.inf))
    return slack


def prune(
    slice_: SliceDemand,
    topology: Topology,
    free: Mapping[str, Resources],
    dist: Distances,
    max_candidates: int | None = None,
) -> dict[str, list[Option]]:
    """The surviving options of every NF of ``slice_`` (an empty list means it cannot be placed)."""
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
