"""Consolidation of shared instances: a local search on a placement (docs/solver.md, "NF sharing").

The greedy baseline opens an instance wherever the NF at hand lands first, and the MIP solver's
incumbent within a time limit may keep several half-empty instances of one pool. A move here closes
one open instance and re-assigns each of its tenants to another open instance of the same pool (on
any host; same pool means same package and flavour), nearest host first, within the instances'
capacity and tenant limits. Another moves one instance, all its tenants together, to a host where its
pool has none (the greedy opens instances where the first tenant's user is, not where the chain is
shortest for all of them). Host resources, latency budgets, availability and bandwidth are not
modelled here: the caller's ``evaluate`` re-checks the moved placement with the same checker as every
solver answer and returns its true objective; a move is kept only when no slice is dropped, the
caller's own conditions hold (``evaluate`` returns ``None`` otherwise, e.g. a migration budget) and
the true objective decreases. Stops at the first pass without an improving move, or at ``deadline``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from .candidates import flavor_allowed, tier_allowed
from .distances import Distances
from .model import Assignment, Problem
from .sharing import Instance, Tenant, fits_load, label, pack

Admitted = dict[str, dict[str, Assignment]]
#: (admitted, hints) -> (slices kept, their packing, true objective), or None when not acceptable.
Evaluate = Callable[[Admitted, dict[Tenant, str]], tuple[Admitted, dict[Tenant, str], float] | None]


def consolidate(
    problem: Problem,
    admitted: Mapping[str, Mapping[str, Assignment]],
    hints: Mapping[Tenant, str],
    value: float,
    evaluate: Evaluate,
    dist: Distances,
    deadline: float,
) -> tuple[Admitted, dict[Tenant, str], float]:
    """``admitted`` with instances closed while that lowers the true objective (module docstring)."""
    best: Admitted = {k: dict(a) for k, a in admitted.items()}
    best_hints = dict(hints)
    improved = True
    while improved and time.perf_counter() < deadline:
        improved = False
        ledger = pack(problem, best, best_hints)
        by_pool: dict[str, list[Instance]] = {}
        for inst in ledger.instances.values():
            if inst.tenants:
                by_pool.setdefault(inst.pool, []).append(inst)
        # The emptiest instances first: they are the cheapest to close.
        closable = sorted(
            (i for insts in by_pool.values() if len(insts) > 1 for i in insts),
            key=lambda i: (len(i.tenants), i.load, i.label),
        )
        moves = _moves(problem, best, best_hints, closable, ledger.instances.values(), by_pool, dist)
        for moved in moves:
            if time.perf_counter() >= deadline:
                break
            if moved is None:
                continue
            got = evaluate(*moved)
            if got is None:
                continue
            kept, packed, new_value = got
            if len(kept) == len(best) and new_value < value - 1e-9:
                best, best_hints, value = kept, packed, new_value
                improved = True
                break  # the ledger changed: pack again
    return best, best_hints, value


def _moves(
    problem: Problem,
    admitted: Admitted,
    hints: Mapping[Tenant, str],
    closable: list[Instance],
    instances: Iterable[Instance],
    by_pool: Mapping[str, list[Instance]],
    dist: Distances,
) -> Iterator[tuple[Admitted, dict[Tenant, str]] | None]:
    """The moves, lazily: closing an instance first (it saves a whole instance), then relocations."""
    for victim in closable:
        yield _moved(admitted, hints, victim, by_pool[victim.pool], dist)
    for inst in sorted(instances, key=lambda i: (-len(i.tenants), i.label)):
        if inst.tenants:
            for host in _hosts(problem, inst, by_pool[inst.pool]):
                yield _relocated(admitted, hints, inst, host)


def _moved(
    admitted: Admitted,
    hints: Mapping[Tenant, str],
    victim: Instance,
    pool: list[Instance],
    dist: Distances,
) -> tuple[Admitted, dict[Tenant, str]] | None:
    """``admitted`` with ``victim``'s tenants in other instances of its pool (nearest host first,
    first fit, heaviest tenant first); ``None`` when they do not all fit by capacity and tenants."""
    row = dist.row(victim.host)
    targets = sorted(
        (i for i in pool if i is not victim),
        key=lambda i: (row.get(i.host, dist.cap), i.label),
    )
    extra: dict[str, tuple[float, int]] = {}
    out = dict(admitted)
    new_hints = dict(hints)
    for tenant, load in sorted(
        zip(victim.tenants, victim.loads, strict=True), key=lambda tl: (-tl[1], tl[0])
    ):
        target = None
        for inst in targets:
            pl, pt = extra.get(inst.label, (0.0, 0))
            if inst.max_tenants is not None and len(inst.tenants) + pt + 1 > inst.max_tenants:
                continue
            if fits_load(inst.load + pl + load, inst.capacity):
                target = inst
                break
        if target is None:
            return None
        pl, pt = extra.get(target.label, (0.0, 0))
        extra[target.label] = (pl + load, pt + 1)
        key, nf_id = tenant
        out[key] = {**out[key], nf_id: Assignment(target.host, target.flavor)}
        new_hints[tenant] = target.label
    return out, new_hints


def _hosts(problem: Problem, inst: Instance, pool: list[Instance]) -> list[str]:
    """Hosts ``inst`` may move to whole: no instance of its pool there yet (that is a merge), and its
    flavour allowed there for every tenant (runtime, isolation, tier)."""
    taken = {i.host for i in pool}
    by_key = {s.key: s for s in problem.slices}
    out = []
    for host in problem.topology.hosts:
        if host.name in taken:
            continue
        if all(
            flavor_allowed(by_key[k], host, inst.flavor) and tier_allowed(by_key[k].nf_by_id[n], host)
            for k, n in inst.tenants
        ):
            out.append(host.name)
    return out


def _relocated(
    admitted: Admitted, hints: Mapping[Tenant, str], inst: Instance, host: str
) -> tuple[Admitted, dict[Tenant, str]]:
    """``admitted`` with every tenant of ``inst`` moved, together, to one new instance on ``host``."""
    out = dict(admitted)
    new_hints = dict(hints)
    lbl = label(inst.pool, host, "moved")
    for key, nf_id in inst.tenants:
        out[key] = {**out[key], nf_id: Assignment(host, inst.flavor)}
        new_hints[(key, nf_id)] = lbl
    return out, new_hints
