"""Catalog -> service choice -> expanded problem -> placement: the pure planning pipeline.

Used by ``flyslice plan`` and by the reconcile core; it performs no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flyslice import solver
from flyslice.operator.intake.catalog import Catalog, NetworkServiceSpec, SliceSpec
from flyslice.operator.planning import expansion, service_choice
from flyslice.solver.model import Assignment, Placement, Resources, SliceDemand, SlicePlacement


@dataclass(frozen=True)
class SlicePlan:
    slice: SliceSpec
    service: NetworkServiceSpec | None
    demand: SliceDemand | None
    placement: SlicePlacement


@dataclass(frozen=True)
class Plan:
    catalog: Catalog
    slices: tuple[SlicePlan, ...]
    placement: Placement
    #: Slice keys whose intent could not even be expanded (no service), with the reason.
    unplaced: Mapping[str, str] = field(default_factory=dict)

    def slice_plan(self, key: str) -> SlicePlan:
        return next(p for p in self.slices if p.slice.key == key)


def plan(
    catalog: Catalog,
    *,
    method: str = "ilp",
    options: solver.SolveOptions | None = None,
    current: Mapping[str, Mapping[str, Assignment]] | None = None,
    background: Mapping[str, Resources] | None = None,
    current_instances: Mapping[str, Mapping[str, str]] | None = None,
    derated: Mapping[tuple[str, str], float] | None = None,
) -> Plan:
    """Place every slice of ``catalog``.

    ``current`` maps a slice key to where its NFs run now (so re-planning moves little);
    ``background`` is what other workloads already use on each host; ``current_instances`` maps a
    slice key to the shared instance each of its shared NFs runs in now (NF id -> instance id);
    ``derated`` lowers the capacity of a pool's instances on a node (``Problem.derated``: scale-out).
    """
    current = current or {}
    current_instances = current_instances or {}
    demands: list[SliceDemand] = []
    chosen: dict[str, tuple[SliceSpec, NetworkServiceSpec | None, str]] = {}
    for object_key in sorted(catalog.slices):
        s = catalog.slices[object_key]
        choice = service_choice.choose(catalog, s)
        reason = choice.reason
        if choice.service is not None:
            try:
                demands.append(
                    expansion.slice_demand(
                        catalog, s, choice.service, current.get(s.key), current_instances.get(s.key)
                    )
                )
            except expansion.ExpansionError as exc:
                reason = str(exc)
        chosen[s.key] = (s, choice.service, reason)
    problem = expansion.problem(catalog, demands, background, derated, options.weights if options else None)
    placement = solver.baseline(problem) if method == "baseline" else solver.place(problem, options)
    by_key = {d.key: d for d in demands}
    plans = []
    unplaced = {}
    for key, (s, service, reason) in chosen.items():
        demand = by_key.get(key)
        if demand is None:
            unplaced[key] = reason
            sp = SlicePlacement(key, admitted=False, reasons=(reason,))
        else:
            sp = placement.slices[key]
        plans.append(SlicePlan(s, service if demand else None, demand, sp))
    return Plan(catalog, tuple(plans), placement, unplaced)
