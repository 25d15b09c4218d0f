"""Seed 000, step 2 input: expand each slice's chosen service into the solver's problem.

``perAttachment`` roles become one NF per attachment node (id ``role@node``); ``perSlice``
roles one NF (id ``role``). Edges and budgeted paths are expanded the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

import networkx as nx

from flyslice.operator.intake.catalog import Catalog, EdgeNodeSpec, NetworkServiceSpec, RoleSpec, SliceSpec
from flyslice.solver.model import (
    Assignment,
    BudgetedPath,
    Edge,
    Flavor,
    FlavorDemand,
    Host,
    Link,
    NFDemand,
    Problem,
    Resources,
    SliceDemand,
    Tier,
    Topology,
)

#: Simple paths per attachment beyond which a service must name its latency paths.
MAX_PATHS_PER_ATTACHMENT = 64


class ExpansionError(ValueError):
    pass


def nf_id(role: RoleSpec, attachment: str | None) -> str:
    return f"{role.name}@{attachment}" if role.scope == "perAttachment" and attachment else role.name


#: The last few topologies built, by their nodes. The solver caches shortest-path rows per Topology
#: object, so passes that re-plan on unchanged nodes (every incremental admission) reuse the rows
#: earlier passes computed instead of running Dijkstra again.
_TOPOLOGIES: dict[tuple[EdgeNodeSpec, ...], Topology] = {}
_TOPOLOGIES_KEPT = 4


def topology(catalog: Catalog) -> Topology:
    nodes = tuple(sorted(catalog.nodes.values(), key=lambda n: n.name))
    found = _TOPOLOGIES.get(nodes)
    if found is not None:
        return found
    built = _topology(nodes)
    while len(_TOPOLOGIES) >= _TOPOLOGIES_KEPT:
        _TOPOLOGIES.pop(next(iter(_TOPOLOGIES)), None)
    _TOPOLOGIES[nodes] = built
    return built


def _topology(nodes: tuple[EdgeNodeSpec, ...]) -> Topology:
    hosts = tuple(
        Host(
            name=n.name,
            tier=Tier(n.tier),
            runtimes=frozenset(Flavor(r) for r in n.runtimes),
            capacity=Resources(n.cpu_millis, n.memory_bytes),
            availability=n.availability,
            cost=n.cost,
        )
        for n in nodes
    )
    names = {n.name for n in nodes}
    seen: set[frozenset[str]] = set()
    links: list[Link] = []
    for n in nodes:
        for lk in n.links:
            pair = frozenset((n.name, lk.node))
            if pair not in seen and lk.node in names:
                seen.add(pair)
                links.append(Link(n.name, lk.node, lk.latency_ms, lk.bandwidth_mbps))
    return Topology(hosts, tuple(links))


def slice_demand(
    catalog: Catalog,
    slice_: SliceSpec,
    service: NetworkServiceSpec,
    current: Mapping[str, Assignment] | None = None,
) -> SliceDemand:
    nfs: list[NFDemand] = []
    for role in service.roles:
        package = catalog.packages[(service.namespace, role.package)]
        allowed = set(package.flavors)
        if role.flavors is not None:
            allowed &= role.flavors
        flavors = {
            Flavor(f): FlavorDemand(
                Flavor(f),
                Resources(package.flavors[f].cpu_millis, package.flavors[f].memory_bytes),
                package.flavors[f].processing_latency_ms,
            )
            for f in sorted(allowed)
        }
        tiers = frozenset(Tier(t) for t in role.tiers) if role.tiers is not None else None
        for att in _attachments_of(role, slice_):
            nfs.append(NFDemand(nf_id(role, att), role.name, package.name, flavors, att, tiers))
    return SliceDemand(
        key=slice_.key,
        nfs=tuple(nfs),
        edges=tuple(_edges(service, slice_)),
        paths=tuple(_paths(service, slice_)),
        availability_target=slice_.availability,
        isolation_required=slice_.isolation_required,
        priority=slice_.priority,
        current=dict(current or {}),
    )


def problem(
    catalog: Catalog,
    demands: Iterable[SliceDemand],
    background: Mapping[str, Resources] | None = None,
) -> Problem:
    return Problem(topology(catalog), tuple(demands), dict(background or {}))


def _attachments_of(role: RoleSpec, slice_: SliceSpec) -> list[str | None]:
    return list(slice_.attachments) if role.scope == "perAttachment" else [None]


def _edges(service: NetworkServiceSpec, slice_: SliceSpec) -> list[Edge]:
    out: list[Edge] = []
    for e in service.edges:
        src, dst = service.role(e.src), service.role(e.dst)
        for att in slice_.attachments:
            # A perSlice end is shared by every attachment; emit each expanded edge once.
            pair = Edge(nf_id(src, att), nf_id(dst, att), e.bandwidth_mbps)
            if pair not in out:
                out.append(pair)
    return out


def _paths(service: NetworkServiceSpec, slice_: SliceSpec) -> list[BudgetedPath]:
    role_paths: list[tuple[str, tuple[str, ...]]] = []
    if service.latency_paths:
        role_paths = [(p.name, p.roles) for p in service.latency_paths]
    else:
        # Every slice of a service has the same role graph: its paths are enumerated once per graph.
        role_paths = list(
            _role_paths(tuple(r.name for r in service.roles), tuple((e.src, e.dst) for e in service.edges))
        )
        if len(role_paths) > MAX_PATHS_PER_ATTACHMENT:
            raise ExpansionError(
                f"NetworkService {service.name!r} has {len(role_paths)} source-to-sink paths; "
                f"name the budgeted ones in spec.latencyPaths (at most {MAX_PATHS_PER_ATTACHMENT})"
            )
    out = []
    by_name = {r.name: r for r in service.roles}
    for att in slice_.attachments:
        for name, roles in role_paths:
            ids = tuple(nf_id(by_name[r], att) for r in roles)
            out.append(BudgetedPath(f"{att}:{name}", att, ids, slice_.max_latency_ms))
    return out


@functools.lru_cache(maxsize=256)
def _role_paths(
    roles: tuple[str, ...], edges: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every source-to-sink path of a role graph, named ``src->dst`` (``#n`` when there are several)."""
    g = nx.DiGraph()
    g.add_nodes_from(roles)
    g.add_edges_from(edges)
    sources = [r for r in g if g.in_degree(r) == 0]
    sinks = [r for r in g if g.out_degree(r) == 0]
    out: list[tuple[str, tuple[str, ...]]] = []
    for s in sources:
        for t in sinks:
            found = [tuple(p) for p in nx.all_simple_paths(g, s, t)] if s != t else [(s,)]
            for i, p in enumerate(found):
                suffix = f"#{i + 1}" if len(found) > 1 else ""
                out.append((f"{s}->{t}{suffix}", p))
    return tuple(out)
