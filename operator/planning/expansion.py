"""Seed 000, step 2 input: expand each slice's chosen service into the solver's problem.

``perAttachment`` roles become one NF per attachment node (id ``role@node``); ``perSlice``
roles one NF (id ``role``). Edges and budgeted paths are expanded the same way.

NF sharing (issue 15): a flavour with a ``sharing`` block gets a :class:`Sharing` whose pool names
what its tenants must have in common (namespaced package, flavour, effective config), unless the
role, the slice or isolation forbids sharing; the solver sees pools, never policy.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import networkx as nx

from flyslice.operator.intake.catalog import (
    Catalog,
    EdgeNodeSpec,
    FlavorSpec,
    NetworkServiceSpec,
    NFPackageSpec,
    RoleSpec,
    SliceSpec,
)
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
    Sharing,
    SliceDemand,
    Tier,
    Topology,
    Weights,
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


def effective_config(role: RoleSpec, slice_: SliceSpec) -> dict[str, Any]:
    """The config a role's instances get in a slice: the slice's override merged over the role's."""
    return {**role.config, **slice_.config.get(role.name, {})}


def pool_key(package: NFPackageSpec, flavor: str, config: Mapping[str, Any] | None) -> str:
    """``<namespace>/<package>/<flavor>/<config sha256[:12]>`` (``any`` for ``config=None``).

    NFs with the same pool may run in one instance. The package is namespaced: two namespaces may hold
    different packages (other code, other digest) under one name, which must never share a process.
    """
    if config is None:
        digest = "any"
    else:
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return f"{package.namespace}/{package.name}/{flavor}/{digest}"


def _sharing(package: NFPackageSpec, spec: FlavorSpec, role: RoleSpec, slice_: SliceSpec) -> Sharing | None:
    """How this flavour may be shared by this role of this slice; ``None`` when it may not."""
    block = spec.sharing
    if block is None or role.sharing == "forbidden" or not slice_.sharing_allowed:
        return None
    config = None if block.per_tenant_config else effective_config(role, slice_)
    return Sharing(
        pool=pool_key(package, spec.flavor, config),
        capacity_mbps=block.capacity_mbps,
        max_tenants=block.max_tenants,
        per_tenant=Resources(block.per_tenant_cpu_millis, block.per_tenant_memory_bytes),
    )


def slice_demand(
    catalog: Catalog,
    slice_: SliceSpec,
    service: NetworkServiceSpec,
    current: Mapping[str, Assignment] | None = None,
    current_instance: Mapping[str, str] | None = None,
) -> SliceDemand:
    """``current``: where the slice's NFs run now; ``current_instance``: the shared instance each
    shared NF is a tenant of now (NF id -> instance id, from the NFInstances' spec.sharedInstance)."""
    edges = _edges(service, slice_)
    loads = _loads(edges)
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
                _sharing(package, package.flavors[f], role, slice_),
            )
            for f in sorted(allowed)
        }
        tiers = frozenset(Tier(t) for t in role.tiers) if role.tiers is not None else None
        for att in _attachments_of(role, slice_):
            nid = nf_id(role, att)
            nfs.append(
                NFDemand(nid, role.name, package.name, flavors, att, tiers, load_mbps=loads.get(nid, 0.0))
            )
    ids = {nf.id for nf in nfs}
    return SliceDemand(
        key=slice_.key,
        nfs=tuple(nfs),
        edges=tuple(edges),
        paths=tuple(_paths(service, slice_)),
        availability_target=slice_.availability,
        isolation_required=slice_.isolation_required,
        priority=slice_.priority,
        current=dict(current or {}),
        current_instance={k: v for k, v in (current_instance or {}).items() if k in ids},
    )


def _loads(edges: list[Edge]) -> dict[str, float]:
    """What each NF adds to a shared instance: the traffic entering it, or leaving it for a source NF."""
    into: dict[str, float] = {}
    out_of: dict[str, float] = {}
    for e in edges:
        into[e.dst] = into.get(e.dst, 0.0) + e.bandwidth_mbps
        out_of[e.src] = out_of.get(e.src, 0.0) + e.bandwidth_mbps
    return {nf: into[nf] if nf in into else out_of[nf] for nf in {*into, *out_of}}


def problem(
    catalog: Catalog,
    demands: Iterable[SliceDemand],
    background: Mapping[str, Resources] | None = None,
    derated: Mapping[tuple[str, str], float] | None = None,
    weights: Weights | None = None,
) -> Problem:
    """``derated``: (pool, node) -> capacity of one instance there, lowered by a scale-out (scale_out.py);
    ``weights``: the objective's (``SolveOptions.weights``, ``--weights``), else the defaults."""
    return Problem(
        topology(catalog),
        tuple(demands),
        dict(background or {}),
        weights=weights or Weights(),
        derated=dict(derated or {}),
    )


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
