"""The placement MILP, built fast from term lists (see docs/solver.md for the formulation).

Variables
  ``x[s,n,h,f]`` binary   NF ``n`` of slice ``s`` runs on host ``h`` as flavour ``f`` (pruned options only)
  ``r[s]``       binary   slice ``s`` is rejected (each NF: sum of its x + r = 1)
  ``m[s,n]``     [0, 1]   already-running NF ``n`` moves: m >= 1 - r - x[current option]
  ``d[s,n,m]``   >= 0     latency between the hosts of consecutive path NFs ``n -> m``
  ``u[s,h]``     [0, 1]   slice ``s`` uses host ``h`` (availability)
  ``z[e,g,h]``   [0, 1]   service edge ``e`` runs from host ``g`` to host ``h`` (link bandwidth)
  ``n[p,h]``     integer  instances of sharing pool ``p`` opened on host ``h`` (see sharing_ilp.py)

NF sharing (docs/solver.md, "NF sharing"): options in a flavour with sharing put only their
per-tenant resources into the host rows; each instance opened puts the flavour's resources once
(``n`` times); sharing_ilp.py writes the instance rows, counted first and made exact per (pool, host)
when an answer does not pack. Options of flavours without sharing build the same model as before
sharing existed; so do options whose flavour takes one tenant per instance (``max_tenants=1``),
except that they pay the instance plus the tenant.

Consecutive-host latency uses triangle-inequality cuts instead of big-M or pair variables:
for a pivot host ``p``,

    d >= sum_h' dist(p, h') X_m[h'] - sum_g dist(p, g) X_n[g]

where ``X_n[g]`` is 1 when ``n`` runs on ``g``. If ``n`` is on ``g`` and ``m`` on ``h*`` the right side
is ``dist(p, h*) - dist(p, g) <= dist(g, h*)`` (triangle inequality), with equality for ``p = g``:
valid for every pivot and exact for the true host. The same cut with the roles swapped (pivot on
the destination side) is valid too, by symmetry. Pairs with few source candidates get every pivot up
front, pairs with few destination candidates every destination-side pivot; the others start from
the attachment as pivot and get the pivots their solutions violate (``violated_pairs``), which the
caller adds between solves.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import networkx as nx
import pulp

from .candidates import Option
from .distances import Distances
from .evaluation import reference_capacity, rejection_scale, resource_cost
from .matrix import MatrixModel, add_row_to
from .model import Assignment, Problem, Resources, SliceDemand, Topology
from .sharing import Group, Instance, Tenant, capacity_of, fits_load
from .sharing_ilp import Group as SharedGroup
from .sharing_ilp import TenantOption

Terms = dict[pulp.LpVariable, float]

#: Memory rows are written in MiB: bytes put coefficients of 1e8 and right-hand sides of 1e11 into
#: the matrix, which HiGHS flags as badly scaled (a risk to its tolerances; no speed change was
#: measured). A power of two keeps the division exact, so no capacity decision changes.
_MEMORY_UNIT = float(2**20)


@dataclass(frozen=True)
class Enforce:
    """Constraint families to enforce; diagnosis drops them one at a time."""

    capacity: bool = True
    latency: bool = True
    availability: bool = True
    bandwidth: bool = True


#: The model ``build`` writes into: PuLP's (portable: CBC or HiGHS through PuLP) or arrays for HiGHS.
Model: TypeAlias = pulp.LpProblem | MatrixModel


@dataclass
class Built:
    prob: Model
    #: The rejection variable of every modelled slice.
    reject: dict[str, pulp.LpVariable]
    x: dict[str, dict[str, list[tuple[Option, pulp.LpVariable]]]]
    names: _Names = field(default_factory=lambda: _Names())
    #: Cut every pivot up front instead of lazily (small models, diagnosis).
    exact_latency: bool = False
    #: Consecutive path NFs (slice key, src, dst) with a latency variable.
    pairs: dict[tuple[str, str, str], Pair] = field(default_factory=dict)
    #: (variable, slice key, NF id) of every move variable.
    move_vars: list[tuple[pulp.LpVariable, str, str]] = field(default_factory=list)
    #: (variable, slice key, host) of every host-use variable.
    use_vars: list[tuple[pulp.LpVariable, str, str]] = field(default_factory=list)
    #: (variable, slice key, src NF, dst NF, src host, dst host) of every edge-routing variable.
    route_vars: list[tuple[pulp.LpVariable, str, str, str, str, str]] = field(default_factory=list)
    #: The shared instances of every (pool, host) with a shareable option.
    shared: dict[Group, SharedGroup] = field(default_factory=dict)

    def tenancy(self) -> tuple[dict[Tenant, str], list[SharedGroup]]:
        """The instance (ledger label, see sharing.py) of every tenant of the solved answer, and the
        (pool, host) groups whose tenants do not pack into the instances the model counted."""
        out: dict[Tenant, str] = {}
        unpacked: list[SharedGroup] = []
        for g in self.shared.values():
            labels, packed = g.answer()
            out.update(labels)
            if not packed:
                unpacked.append(g)
        return out, unpacked

    def assignments(self) -> dict[str, dict[str, Assignment]]:
        """Admitted slices and where their NFs go, read from the solved variables."""
        out: dict[str, dict[str, Assignment]] = {}
        for key, r in self.reject.items():
            if (r.varValue or 0.0) > 0.5:
                continue
            chosen: dict[str, Assignment] = {}
            for nf_id, opts in self.x[key].items():
                best = max(opts, key=lambda ov: ov[1].varValue or 0.0)
                chosen[nf_id] = Assignment(best[0].host, best[0].flavor)
            out[key] = chosen
        return out

    def set_start(
        self,
        start: Mapping[str, Mapping[str, Assignment]],
        slices: Iterable[SliceDemand],
        dist: Distances,
        hints: Mapping[Tenant, str] | None = None,
    ) -> None:
        """Initial values from a known placement (a MIP start) whose shared NFs are packed as ``hints``
        (ledger labels) say; slices it cannot express start rejected."""
        placed: dict[str, Mapping[str, Assignment]] = {}
        for key, xs in self.x.items():
            chosen = start.get(key)
            if chosen is not None and all(
                nf_id in chosen
                and any((o.host, o.flavor) == (chosen[nf_id].host, chosen[nf_id].flavor) for o, _ in opts)
                for nf_id, opts in xs.items()
            ):
                placed[key] = chosen
        # A packing the model cannot express (more instances than it has, an instance it may not
        # join) starts its slices rejected; dropping them can only free bins, so this ends.
        while True:
            bad = {k for grp in self.shared.values() for k in grp.inexpressible(placed, hints or {})}
            if not bad:
                break
            for key in bad:
                placed.pop(key)
        for key, r in self.reject.items():
            chosen = placed.get(key)
            r.setInitialValue(0.0 if chosen is not None else 1.0)
            for nf_id, opts in self.x[key].items():
                for o, v in opts:
                    on = chosen is not None and (o.host, o.flavor) == (
                        chosen[nf_id].host,
                        chosen[nf_id].flavor,
                    )
                    v.setInitialValue(1.0 if on else 0.0)
        for (key, src, dst), pair in self.pairs.items():
            chosen = placed.get(key)
            pair.var.setInitialValue(dist.get(chosen[src].host, chosen[dst].host) if chosen else 0.0)
        for grp in self.shared.values():
            grp.set_start(placed, hints or {})
        running = {(s.key, n): s.current[n] for s in slices for n in s.current}
        for v, key, nf_id in self.move_vars:
            chosen = placed.get(key)
            v.setInitialValue(1.0 if chosen and chosen[nf_id] != running[(key, nf_id)] else 0.0)
        for v, key, host in self.use_vars:
            chosen = placed.get(key)
            v.setInitialValue(1.0 if chosen and any(c.host == host for c in chosen.values()) else 0.0)
        for v, key, src, dst, g, h in self.route_vars:
            chosen = placed.get(key)
            v.setInitialValue(1.0 if chosen and (chosen[src].host, chosen[dst].host) == (g, h) else 0.0)


class _Names:
    def __init__(self) -> None:
        self._n = itertools.count()

    def __call__(self, prefix: str) -> str:
        return f"{prefix}{next(self._n)}"


def _add(
    prob: Model,
    terms: Terms | list[tuple[pulp.LpVariable, float]],
    sense: int,
    rhs: float,
    name: str,
) -> None:
    add_row_to(prob, terms, sense, rhs, name)


def _acc(into: Terms, terms: Iterable[tuple[pulp.LpVariable, float]], scale: float = 1.0) -> None:
    for v, c in terms:
        into[v] = into.get(v, 0.0) + c * scale


def build(
    problem: Problem,
    slices: list[SliceDemand],
    options: Mapping[str, Mapping[str, list[Option]]],
    free: Mapping[str, Resources],
    link_free: Mapping[frozenset[str], float],
    dist: Distances,
    *,
    enforce: Enforce = Enforce(),
    force_admit: bool = False,
    migration_budget: int | None = None,
    exact_latency: bool = False,
    existing: Sequence[Instance] = (),
    exact_sharing: bool = False,
    direct: bool = False,
) -> Built:
    """The MILP over ``slices`` (each with pruned ``options``) against ``free`` host capacity.

    ``direct``: write the model as arrays for HiGHS (matrix.py) instead of a PuLP problem; the
    same variables, rows and objective either way.

    ``existing``: shared instances already running (of slices held fixed) that new tenants may join
    within their spare capacity and tenant slots; their own resources are in ``free`` already.
    ``exact_sharing``: write every (pool, host) of shared instances exactly from the start (small
    models, diagnosis) instead of counting instances first.
    """
    prob: Model = MatrixModel() if direct else pulp.LpProblem("flyslice_placement", pulp.LpMinimize)
    w = problem.weights
    topo = problem.topology
    ref = reference_capacity(topo)
    scale = rejection_scale(problem)
    objective: Terms = {}
    built = Built(prob, {}, {}, exact_latency=exact_latency)
    name = built.names
    cpu_rows: dict[str, list[tuple[pulp.LpVariable, float]]] = defaultdict(list)
    mem_rows: dict[str, list[tuple[pulp.LpVariable, float]]] = defaultdict(list)
    moved: list[pulp.LpVariable] = []
    tenants: dict[Group, list[TenantOption]] = {}

    for s in slices:
        # A binary always gets bounds [0, 1]; forcing admission needs an integer fixed at 0.
        r = prob.add_variable(
            name("r"), 0, 0 if force_admit else 1, pulp.LpInteger if force_admit else pulp.LpBinary
        )
        built.reject[s.key] = r
        objective[r] = w.rejection * scale[s.key]
        xs: dict[str, list[tuple[Option, pulp.LpVariable]]] = {}
        # by_host[nf][host] -> the NF's option variables on that host (X_n[host] is their sum).
        by_host: dict[str, dict[str, list[pulp.LpVariable]]] = {}
        for nf in s.nfs:
            opts = options[s.key][nf.id]
            row: list[tuple[pulp.LpVariable, float]] = [(r, 1.0)]
            pairs = []
            hosts: dict[str, list[pulp.LpVariable]] = defaultdict(list)
            for o in opts:
                v = prob.add_variable(name("x"), 0, 1, pulp.LpBinary)
                pairs.append((o, v))
                row.append((v, 1.0))
                hosts[o.host].append(v)
                # A tenant of a shared instance adds its per-tenant resources; the instances' own
                # are paid by their count (sharing_ilp.py).
                need = o.resources
                if o.sharing is not None and o.sharing.max_tenants == 1:
                    # One tenant per instance: the option pays a whole instance, like an unshared one.
                    need = o.alone
                    limit = capacity_of(problem.derated, o.sharing.pool, o.sharing.capacity_mbps, o.host)
                    if not fits_load(nf.load_mbps, limit):
                        v.upBound = 0
                elif o.sharing is not None:
                    need = o.sharing.per_tenant
                    tenants.setdefault((o.sharing.pool, o.host), []).append(
                        TenantOption(s.key, nf.id, o, v, nf.load_mbps)
                    )
                cpu_rows[o.host].append((v, float(need.cpu_millis)))
                mem_rows[o.host].append((v, need.memory_bytes / _MEMORY_UNIT))
                cost = w.resource * resource_cost(topo, o.host, need, ref)
                if cost:
                    objective[v] = objective.get(v, 0.0) + cost
            xs[nf.id] = pairs
            by_host[nf.id] = dict(hosts)
            _add(prob, row, pulp.LpConstraintEQ, 1.0, name("assign"))
            current = s.current.get(nf.id)
            if current is not None:
                # m >= 1 - r - x[current option]: staying costs nothing, rejection is not a move.
                m = prob.add_variable(name("m"), 0, 1)
                moved.append(m)
                built.move_vars.append((m, s.key, nf.id))
                objective[m] = w.migration
                keep: list[tuple[pulp.LpVariable, float]] = [(m, 1.0), (r, 1.0)]
                keep.extend(
                    (v, 1.0) for o, v in pairs if (o.host, o.flavor) == (current.host, current.flavor)
                )
                _add(prob, keep, pulp.LpConstraintGE, 1.0, name("move"))
        built.x[s.key] = xs

        if enforce.latency or w.latency:
            _latency(prob, built, s, by_host, xs, dist, enforce.latency, w.latency, objective, name)
        if enforce.availability:
            _availability(prob, built, s, by_host, topo, name)
        if enforce.bandwidth and link_free:
            _bandwidth_terms(built, s, by_host, dist, link_free, name)

    if enforce.bandwidth and link_free:
        _bandwidth_rows(prob, built, slices, link_free, dist, name)
    for (pool, host), members in tenants.items():
        declared = members[0].option.sharing
        assert declared is not None
        group = SharedGroup(
            prob,
            name,
            members,
            capacity_of(problem.derated, pool, declared.capacity_mbps, host),
            [i for i in existing if (i.pool, i.host) == (pool, host)],
            free[host] if enforce.capacity else None,
            enforce.capacity,
            exact_sharing,
        )
        built.shared[(pool, host)] = group
        base = members[0].option.resources
        if base.cpu_millis:
            cpu_rows[host].append((group.count, float(base.cpu_millis)))
        if base.memory_bytes:
            mem_rows[host].append((group.count, base.memory_bytes / _MEMORY_UNIT))
        cost = w.resource * resource_cost(topo, host, base, ref)
        if cost:
            objective[group.count] = cost
    if enforce.capacity:
        # A row cannot bind when its terms at their upper bounds fit (binaries: 1; instance counts: more).
        for host, row in cpu_rows.items():
            cap = free[host]
            if sum(c * _upper(v) for v, c in row) > cap.cpu_millis:
                _add(prob, row, pulp.LpConstraintLE, float(cap.cpu_millis), name("cpu"))
        for host, row in mem_rows.items():
            cap = free[host]
            if sum(c * _upper(v) for v, c in row) > cap.memory_bytes / _MEMORY_UNIT:
                _add(prob, row, pulp.LpConstraintLE, cap.memory_bytes / _MEMORY_UNIT, name("mem"))
    if moved and migration_budget is not None:
        _add(prob, [(m, 1.0) for m in moved], pulp.LpConstraintLE, float(migration_budget), name("migr"))
    if isinstance(prob, MatrixModel):
        prob.set_objective(objective)
    else:
        prob.setObjective(pulp.LpAffineExpression(objective))
    return built


def _upper(v: pulp.LpVariable) -> float:
    return 1.0 if v.upBound is None else float(v.upBound)


#: A pair found violated gets all its pivots when its source NF has at most this many hosts.
LAZY_EXACT_PIVOTS = 64
#: A consecutive pair whose smaller side has at most this many hosts gets every pivot at once (exact).
EXACT_PIVOTS = 12


@dataclass
class Pair:
    """The latency variable of consecutive path NFs ``src -> dst`` and the pivots cut so far."""

    var: pulp.LpVariable
    key: str
    src: str
    dst: str
    src_hosts: Mapping[str, list[pulp.LpVariable]]
    dst_hosts: Mapping[str, list[pulp.LpVariable]]
    pivots: set[str] = field(default_factory=set)
    #: Destination-side pivots cut so far (see ``add_pivot_cut(reverse=True)``).
    dst_pivots: set[str] = field(default_factory=set)


def add_pivot_cut(built: Built, pair: Pair, pivot: str, dist: Distances, reverse: bool = False) -> bool:
    """``d >= sum_h' dist(p, h') X_dst[h'] - sum_g dist(p, g) X_src[g]`` for pivot host ``p``.

    Valid for any ``p`` by the triangle inequality, exact when ``p`` is where ``src`` runs.
    ``reverse`` swaps the roles (``d >= dist(p, X_src) - dist(p, X_dst)``, exact when ``p`` is
    where ``dst`` runs): the metric is symmetric, so every pivot of the smaller side suffices.
    Returns False when the pivot was already cut.
    """
    seen = pair.dst_pivots if reverse else pair.pivots
    if pivot in seen:
        return False
    seen.add(pivot)
    far, near = (pair.src_hosts, pair.dst_hosts) if reverse else (pair.dst_hosts, pair.src_hosts)
    row: list[tuple[pulp.LpVariable, float]] = [(pair.var, 1.0)]
    for h, vs in far.items():
        d = dist.get(pivot, h)
        if d:
            row.extend((v, -d) for v in vs)
    for g, vs in near.items():
        d = dist.get(pivot, g)
        if d:
            row.extend((v, d) for v in vs)
    if len(row) > 1:
        _add(built.prob, row, pulp.LpConstraintGE, 0.0, built.names("lat"))
    return True


def violated_pairs(built: Built, found: Mapping[str, Mapping[str, Assignment]], dist: Distances) -> int:
    """Cut every pair whose latency variable sits below the true distance of ``found``; count them."""
    added = 0
    for (key, src, dst), pair in built.pairs.items():
        chosen = found.get(key)
        if chosen is None:
            continue
        true = dist.get(chosen[src].host, chosen[dst].host)
        if (pair.var.varValue or 0.0) < true - 1e-6:
            added += add_pivot_cut(built, pair, chosen[src].host, dist)
            # Equal-cost placements abound, so one pivot per round can chase ties for many
            # rounds: make the pair exact at once when that stays small.
            if len(pair.src_hosts) <= LAZY_EXACT_PIVOTS:
                for h in pair.src_hosts:
                    added += add_pivot_cut(built, pair, h, dist)
    return added


def _pair_latency(
    built: Built,
    key: str,
    src: str,
    dst: str,
    hs: Mapping[str, list[pulp.LpVariable]],
    hd: Mapping[str, list[pulp.LpVariable]],
    dist: Distances,
    attachment: str,
    cache: dict[tuple[str, str], list[tuple[pulp.LpVariable, float]]],
) -> list[tuple[pulp.LpVariable, float]]:
    """Linear terms that equal (at the optimum, once the needed pivots are cut) the latency between
    ``src``'s and ``dst``'s hosts."""
    found = cache.get((src, dst))
    if found is not None:
        pair = built.pairs.get((key, src, dst))
        if pair is not None and len(pair.pivots) > 0:
            add_pivot_cut(built, pair, attachment, dist)
        return found
    terms: list[tuple[pulp.LpVariable, float]]
    if len(hs) == 1 or len(hd) == 1:
        # One side is pinned to a host, so the distance is linear in the other side.
        terms = []
        if len(hs) == 1:
            (h,) = hs
            for h2, vs in hd.items():
                d = dist.get(h, h2)
                terms.extend((v, d) for v in vs if d)
        else:
            (h2,) = hd
            for h, vs in hs.items():
                d = dist.get(h, h2)
                terms.extend((v, d) for v in vs if d)
    else:
        dv = built.prob.add_variable(built.names("d"), 0, dist.cap)
        pair = Pair(dv, key, src, dst, hs, hd)
        built.pairs[(key, src, dst)] = pair
        if len(hs) <= EXACT_PIVOTS or built.exact_latency:
            for h in hs:
                add_pivot_cut(built, pair, h, dist)
        elif len(hd) <= EXACT_PIVOTS:
            # Few destination hosts (e.g. a cloud-tier store): their pivots make the pair exact.
            for h in hd:
                add_pivot_cut(built, pair, h, dist, reverse=True)
        else:
            # The attachment as pivot is exact whenever src lies on a shortest route from the
            # user to dst (chains that move away from the user); other cases are cut lazily.
            add_pivot_cut(built, pair, attachment, dist)
        terms = [(dv, 1.0)]
    cache[(src, dst)] = terms
    return terms


def _latency(
    prob: Model,
    built: Built,
    s: SliceDemand,
    by_host: Mapping[str, Mapping[str, list[pulp.LpVariable]]],
    xs: Mapping[str, list[tuple[Option, pulp.LpVariable]]],
    dist: Distances,
    enforce: bool,
    weight: float,
    objective: Terms,
    name: _Names,
) -> None:
    cache: dict[tuple[str, str], list[tuple[pulp.LpVariable, float]]] = {}
    for path in s.paths:
        if not path.nfs or not math.isfinite(path.budget_ms):
            continue
        terms: Terms = {}
        first = path.nfs[0]
        for h, vs in by_host[first].items():
            d = dist.get(path.attachment, h)
            if d:
                _acc(terms, ((v, d) for v in vs))
        for src, dst in itertools.pairwise(path.nfs):
            if src == dst:
                continue
            _acc(
                terms,
                _pair_latency(
                    built, s.key, src, dst, by_host[src], by_host[dst], dist, path.attachment, cache
                ),
            )
        for nf_id in path.nfs:
            _acc(terms, ((v, o.processing_ms) for o, v in xs[nf_id] if o.processing_ms))
        if enforce:
            _add(prob, terms, pulp.LpConstraintLE, path.budget_ms, name("budget"))
        if weight and path.budget_ms > 0:
            _acc(objective, terms.items(), weight / path.budget_ms)


def _availability(
    prob: Model,
    built: Built,
    s: SliceDemand,
    by_host: Mapping[str, Mapping[str, list[pulp.LpVariable]]],
    topo: Topology,
    name: _Names,
) -> None:
    if s.availability_target <= 0:
        return
    cost = {h: _downtime_weight(topo.host_by_name[h].availability) for per in by_host.values() for h in per}
    limit = _downtime_weight(min(s.availability_target, 1.0))
    # The slice uses at most one host per NF: if even the least available choice per NF meets
    # the target, the constraint cannot bind.
    worst = sum(max(cost[h] for h in per) for per in by_host.values() if per)
    if worst <= limit + 1e-12:
        return
    row: list[tuple[pulp.LpVariable, float]] = []
    for h in sorted({h for per in by_host.values() for h in per}):
        c = cost[h]
        if c <= 0:
            continue
        u = prob.add_variable(name("u"), 0, 1)
        built.use_vars.append((u, s.key, h))
        row.append((u, c))
        # One row per NF (X_n[h] <= u) keeps u continuous and the LP relaxation tight; an
        # aggregated row would need u binary.
        for per in by_host.values():
            vs = per.get(h)
            if vs:
                link: list[tuple[pulp.LpVariable, float]] = [(v, 1.0) for v in vs]
                link.append((u, -1.0))
                _add(prob, link, pulp.LpConstraintLE, 0.0, name("use"))
    _add(prob, row, pulp.LpConstraintLE, limit, name("avail"))


def _downtime_weight(availability: float) -> float:
    """``-log(availability)``: the series model's product becomes a sum."""
    return -math.log(max(availability, 1e-12))


def _bandwidth_terms(
    built: Built,
    s: SliceDemand,
    by_host: Mapping[str, Mapping[str, list[pulp.LpVariable]]],
    dist: Distances,
    link_free: Mapping[frozenset[str], float],
    name: _Names,
) -> None:
    graph = dist.topology.graph
    routes: dict[str, dict[str, list[str]]] = {}
    for e in s.edges:
        if e.bandwidth_mbps <= 0 or e.src not in by_host or e.dst not in by_host:
            continue
        for g, h in itertools.product(by_host[e.src], by_host[e.dst]):
            if g == h:
                continue
            if g not in routes:
                routes[g] = nx.single_source_dijkstra_path(graph, g, weight="latency_ms")
            path = routes[g].get(h)
            if path is None or not any(frozenset(p) in link_free for p in itertools.pairwise(path)):
                continue
            z = built.prob.add_variable(name("z"), 0, 1)
            built.route_vars.append((z, s.key, e.src, e.dst, g, h))


def _bandwidth_rows(
    prob: Model,
    built: Built,
    slices: list[SliceDemand],
    link_free: Mapping[frozenset[str], float],
    dist: Distances,
    name: _Names,
) -> None:
    """Link load of the routed edges stays within each declared link bandwidth."""
    graph_routes: dict[str, dict[str, list[str]]] = {}
    bw = {(s.key, e.src, e.dst): e.bandwidth_mbps for s in slices for e in s.edges}
    rows: dict[frozenset[str], list[tuple[pulp.LpVariable, float]]] = defaultdict(list)
    for z, key, src, dst, g, h in built.route_vars:
        xs = built.x[key]
        on_g = [v for o, v in xs[src] if o.host == g]
        on_h = [v for o, v in xs[dst] if o.host == h]
        # z >= X_src[g] + X_dst[h] - 1: the edge's traffic crosses g -> h when both ends are there.
        row: list[tuple[pulp.LpVariable, float]] = [(z, 1.0)]
        row.extend((v, -1.0) for v in on_g)
        row.extend((v, -1.0) for v in on_h)
        _add(prob, row, pulp.LpConstraintGE, -1.0, name("route"))
        if g not in graph_routes:
            graph_routes[g] = nx.single_source_dijkstra_path(dist.topology.graph, g, weight="latency_ms")
        for p in itertools.pairwise(graph_routes[g][h]):
            link = frozenset(p)
            if link in link_free:
                rows[link].append((z, bw[(key, src, dst)]))
    for link, row in rows.items():
        _add(prob, row, pulp.LpConstraintLE, link_free[link], name("bw"))


def refine_packing(groups: Iterable[SharedGroup]) -> int:
    """Make exact the groups whose answer did not pack (see sharing_ilp.py); count them."""
    made = 0
    for g in groups:
        if not g.exact:
            g.make_exact()
            made += 1
    return made
