"""An independent check of a published optimum (benchmarks/published_sfc.py): the optimum of
``100 x cores + hops`` found without flyslice and without the published numbers, with the argument
that proves it, or ``proven: False`` and why not."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from published_sfc import CORE_WEIGHT, Instance, hop_distances


def independent_optimum(inst: Instance) -> dict[str, Any]:
    """The optimum of ``100 x cores + hops``, found without flyslice or the published numbers, when a
    short argument proves it.

    Needs every request to run the same chain of distinct types, and one instance of each type to
    carry all traffic. A branch and bound over the placements of one instance per type on the
    compute nodes (cores, RAM and HDD respected; lower bounds from the chain's suffixes without
    capacities) finds the fewest hops ``H``; ``U = 100 x C + H`` (C: the cores of one instance per
    type). Any other placement either keeps some type ``t`` at a single node ``x``, which every
    request then passes (hops >= ``min_x sum_r d(in_r, x) + d(x, out_r)``, cores >= C), or runs two
    or more instances of every type (cores >= 2C, hops >= ``sum_r min_x d(in_r, x) + d(x, out_r)``).
    When both bounds reach ``U``, ``U`` is the optimum. Delay bounds are checked on the placement found.
    """
    chains = {r.chain for r in inst.requests}
    if len(chains) != 1:
        return {"value": None, "proven": False, "note": "requests run different chains: not attempted"}
    chain = next(iter(chains))
    if len(set(chain)) != len(chain):
        return {"value": None, "proven": False, "note": "a type appears twice in the chain: not attempted"}
    load = sum(r.bandwidth for r in inst.requests)
    if len(chain) == 1 and load > inst.vnfs[chain[0]].capacity:
        return _one_type_optimum(inst, chain[0])
    for t in chain:
        if load > inst.vnfs[t].capacity:
            return {
                "value": None,
                "proven": False,
                "note": f"one {t} instance cannot carry the load: not attempted",
            }
    d = hop_distances(inst)
    hosts = list(inst.compute_nodes)
    n_req = len(inst.requests)
    far = float(10**9)

    def hop(a: str, b: str) -> float:
        return float(d[a].get(b, far))

    into = [sum(hop(r.ingress, x.name) for r in inst.requests) for x in hosts]
    out = [sum(hop(x.name, r.egress) for r in inst.requests) for x in hosts]
    step = [[n_req * hop(a.name, b.name) for b in hosts] for a in hosts]
    k = len(chain)
    # suffix[i][x]: fewest hops from the instance of chain[i] on host x to every egress, capacities aside.
    suffix = [out[:] for _ in range(k)]
    for i in range(k - 2, -1, -1):
        suffix[i] = [min(step[x][y] + suffix[i + 1][y] for y in range(len(hosts))) for x in range(len(hosts))]
    free = [[x.cores, x.ram, x.hdd] for x in hosts]
    needs = [(inst.vnfs[t].cores, inst.vnfs[t].ram, inst.vnfs[t].hdd) for t in chain]
    best: list[Any] = [math.inf, ()]

    def fits(x: int, i: int) -> bool:
        return all(f >= n - 1e-9 for f, n in zip(free[x], needs[i], strict=True))

    def take(x: int, i: int, sign: float) -> None:
        free[x] = [f - sign * n for f, n in zip(free[x], needs[i], strict=True)]

    def search(i: int, x: int, partial: float, where: tuple[int, ...]) -> None:
        if i == k - 1:
            if partial + out[x] < best[0]:
                best[0], best[1] = partial + out[x], where
            return
        for y in sorted(range(len(hosts)), key=lambda y: step[x][y] + suffix[i + 1][y]):
            if partial + step[x][y] + suffix[i + 1][y] >= best[0]:
                break
            if fits(y, i + 1):
                take(y, i + 1, 1)
                search(i + 1, y, partial + step[x][y], (*where, y))
                take(y, i + 1, -1)

    for x in sorted(range(len(hosts)), key=lambda x: into[x] + suffix[0][x]):
        if into[x] + suffix[0][x] >= best[0]:
            break
        if fits(x, 0):
            take(x, 0, 1)
            search(0, x, into[x], (x,))
            take(x, 0, -1)
    if not math.isfinite(best[0]):
        return {"value": None, "proven": False, "note": "no placement of one instance per type fits"}
    hops = float(best[0])
    c_min = sum(inst.vnfs[t].cores for t in chain)
    value = CORE_WEIGHT * c_min + hops
    placed = {t: hosts[x].name for t, x in zip(chain, best[1], strict=True)}
    for r in inst.requests:
        seq = [r.ingress, *(placed[t] for t in r.chain), r.egress]
        lat = sum(hop(a, b) for a, b in itertools.pairwise(seq)) * inst.links[0].delay
        lat += sum(inst.vnfs[t].delay for t in r.chain)
        if lat > r.max_delay + 1e-9:
            return {
                "value": value,
                "proven": False,
                "note": f"the best placement breaks the delay bound of {r}",
            }
    through = [sum(hop(r.ingress, x.name) + hop(x.name, r.egress) for r in inst.requests) for x in hosts]
    single = min(min(through[j] for j, x in enumerate(hosts) if x.cores >= inst.vnfs[t].cores) for t in chain)
    bound_single = CORE_WEIGHT * c_min + single
    per_request = sum(
        min(hop(r.ingress, x.name) + hop(x.name, r.egress) for x in hosts) for r in inst.requests
    )
    bound_multi = CORE_WEIGHT * 2 * c_min + per_request
    proven = min(bound_single, bound_multi) >= value - 1e-9
    return {
        "value": value,
        "cores": c_min,
        "hops": hops,
        "placement": placed,
        "proven": proven,
        "note": (
            f"one instance per type: {c_min:g} cores, {hops:g} hops; other placements >= "
            f"{min(bound_single, bound_multi):g}" + ("" if proven else " (below: not proven)")
        ),
    }


def _one_type_optimum(inst: Instance, t: str, max_assignments: int = 2_000_000) -> dict[str, Any]:
    """Chains of one type whose load needs ``m > 1`` instances: every placement of ``m`` instances
    (node capacities respected) and every assignment of requests to them (instance capacity
    respected) is enumerated; any placement of more instances costs at least
    ``100 x (m+1) x cores + sum_r min_x d(in_r, x) + d(x, out_r)``."""
    vnf = inst.vnfs[t]
    load = sum(r.bandwidth for r in inst.requests)
    m = math.ceil(load / vnf.capacity - 1e-12)
    n_req = len(inst.requests)
    if m**n_req > max_assignments:
        return {"value": None, "proven": False, "note": f"{m}^{n_req} assignments: too many to enumerate"}
    d = hop_distances(inst)
    hosts = list(inst.compute_nodes)
    far = float(10**9)
    via = np.array(
        [[d[r.ingress].get(x.name, far) + d[x.name].get(r.egress, far) for x in hosts] for r in inst.requests]
    )
    # A request may only use an instance within its delay bound (links all of one delay, see scale()).
    late = np.array(
        [
            [h * inst.links[0].delay + vnf.delay > r.max_delay + 1e-9 for h in row]
            for r, row in zip(inst.requests, via, strict=True)
        ]
    )
    via = np.where(late, np.inf, via)
    bw = np.array([r.bandwidth for r in inst.requests])
    assign = np.indices((m,) * n_req).reshape(n_req, -1)  # assign[r] -> instance index
    loads = np.stack([(bw[:, None] * (assign == i)).sum(axis=0) for i in range(m)])
    ok = (loads <= vnf.capacity + 1e-9).all(axis=0)
    best: tuple[float, tuple[int, ...]] = (math.inf, ())
    for where in itertools.combinations_with_replacement(range(len(hosts)), m):
        per_host = [where.count(x) for x in range(len(hosts))]
        if any(
            c * vnf.cores > hosts[x].cores + 1e-9
            or c * vnf.ram > hosts[x].ram + 1e-9
            or c * vnf.hdd > hosts[x].hdd + 1e-9
            for x, c in enumerate(per_host)
        ):
            continue
        hops = via[np.arange(n_req)[:, None], np.array(where)[assign]].sum(axis=0)
        hops = np.where(ok, hops, np.inf)
        i = int(np.argmin(hops))
        if hops[i] < best[0]:
            best = (float(hops[i]), where)
    if not math.isfinite(best[0]):
        return {"value": None, "proven": False, "note": f"no placement of {m} {t} instances fits"}
    hops_best = best[0]
    value = CORE_WEIGHT * m * vnf.cores + hops_best
    bound_more = CORE_WEIGHT * (m + 1) * vnf.cores + float(via.min(axis=1).sum())
    proven = bound_more >= value - 1e-9
    return {
        "value": value,
        "cores": m * vnf.cores,
        "hops": hops_best,
        "placement": {f"{t}#{i}": hosts[x].name for i, x in enumerate(best[1])},
        "proven": proven,
        "note": (
            f"{m} {t} instances (fewest for the load): {m * vnf.cores:g} cores, {hops_best:g} hops "
            f"(delay bounds kept); more instances >= {bound_more:g}"
            + ("" if proven else " (below: not proven)")
        ),
    }
