"""A lower bound on the placement model's objective that needs no LP: each slice at its cheapest.

Every modelled slice is either rejected, paying its rejection weight, or admitted, paying at least
the cheapest resource cost of one of its options per NF, and for each budgeted path at least the
latency term of its fastest options: the least processing latency of each NF on it plus the
shortest link latency from the attachment to a host of its first NF (the migration term is never
negative). So the sum over the slices of the smaller of the two bounds the objective of every
feasible placement from below, whatever the capacities. It is valid for the full model
because the options it reads are pruned only of what no feasible placement uses (hosts out of
reach of a budget or without room) or what a kept option on the same host beats on every term
(candidates.drop_dominated); it is not computed from capped option lists (``max_candidates``).

It is weak when capacity forces rejections (it admits every slice that is cheaper to admit), so it
matters only where the solver has no bound of its own: on 1000 hosts x 500 slices HiGHS had not
finished the full model's root LP when the time ran out. ``place()`` keeps the larger of the two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .candidates import Option
from .distances import Distances
from .evaluation import reference_capacity, rejection_scale, resource_cost
from .model import Problem, SliceDemand


def cheapest_slices_bound(
    problem: Problem,
    slices: Sequence[SliceDemand],
    options: Mapping[str, Mapping[str, Sequence[Option]]],
    dist: Distances,
) -> float | None:
    """The bound on the model of ``slices`` over ``options``; ``None`` with NF sharing (an instance's
    cost is shared between tenants, so one tenant's share has no simple floor)."""
    w = problem.weights
    ref = reference_capacity(problem.topology)
    scale = rejection_scale(problem)
    total = 0.0
    for s in slices:
        admitted = 0.0
        for nf in s.nfs:
            opts = options[s.key][nf.id]
            if any(o.sharing is not None for o in opts):
                return None
            admitted += min(
                (w.resource * resource_cost(problem.topology, o.host, o.resources, ref) for o in opts),
                default=float("inf"),
            )
        if w.latency:
            admitted += sum(
                w.latency * _fastest(p.attachment, p.nfs, options[s.key], dist) / p.budget_ms for p in s.paths
            )
        total += min(w.rejection * scale[s.key], admitted)
    return total


def _fastest(
    attachment: str, nfs: Sequence[str], options: Mapping[str, Sequence[Option]], dist: Distances
) -> float:
    """A lower bound on a path's latency: the first hop at its shortest, every NF at its fastest."""
    if not nfs:
        return 0.0
    hops = (dist.true(attachment, o.host) for o in options[nfs[0]])
    first = min((d for d in hops if d is not None), default=0.0)
    return first + sum(min((o.processing_ms for o in options[n]), default=0.0) for n in nfs)
