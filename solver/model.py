"""The placement problem and its result, as immutable typed data.

This module is the contract between the control plane (which builds a
:class:`Problem` from validated manifests) and the placement algorithms
(ILP, baseline). It holds no algorithm and imports nothing but the standard
library and networkx.

Units are fixed so no conversion happens inside the solver:
CPU in millicores, memory in bytes, latency in milliseconds, bandwidth in Mbit/s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

import networkx as nx


class Flavor(StrEnum):
    """How an NF is instantiated: a container/pod, or a module inside the node agent."""

    VNF = "vnf"
    FNF = "fnf"


class Tier(StrEnum):
    CLOUD = "cloud"
    FOG = "fog"
    GATEWAY = "gateway"


@dataclass(frozen=True, order=True)
class Resources:
    cpu_millis: int = 0
    memory_bytes: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis + other.cpu_millis, self.memory_bytes + other.memory_bytes)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_millis - other.cpu_millis, self.memory_bytes - other.memory_bytes)

    def fits_in(self, capacity: Resources) -> bool:
        return self.cpu_millis <= capacity.cpu_millis and self.memory_bytes <= capacity.memory_bytes


@dataclass(frozen=True)
class Host:
    name: str
    tier: Tier
    runtimes: frozenset[Flavor]
    capacity: Resources
    availability: float = 1.0
    #: Relative price of one unit of this host's resources; cloud is usually cheapest
    #: per unit, gateways the dearest. Used by the resource term of the objective.
    cost: float = 1.0


@dataclass(frozen=True)
class Link:
    """An undirected link between two hosts."""

    a: str
    b: str
    latency_ms: float
    bandwidth_mbps: float | None = None


@dataclass(frozen=True)
class Topology:
    hosts: tuple[Host, ...]
    links: tuple[Link, ...]

    @cached_property
    def host_by_name(self) -> Mapping[str, Host]:
        return {h.name: h for h in self.hosts}

    @cached_property
    def graph(self) -> nx.Graph:
        g = nx.Graph()
        for h in self.hosts:
            g.add_node(h.name, host=h)
        for link in self.links:
            g.add_edge(link.a, link.b, latency_ms=link.latency_ms, bandwidth_mbps=link.bandwidth_mbps)
        return g

    @cached_property
    def latency_ms(self) -> Mapping[str, Mapping[str, float]]:
        """All-pairs shortest-path latency; unreachable pairs are absent."""
        return {
            src: dict(dists)
            for src, dists in nx.all_pairs_dijkstra_path_length(self.graph, weight="latency_ms")
        }

    def distance_ms(self, a: str, b: str) -> float | None:
        """Shortest-path latency between two hosts, ``None`` when not connected."""
        return self.latency_ms.get(a, {}).get(b)


@dataclass(frozen=True)
class Sharing:
    """How instances of a flavour may serve several slices (tenants) at once; see docs/sharing.md.

    The flavour's ``resources`` are paid once per instance, ``per_tenant`` once per tenant served.
    """

    #: NFs whose flavours have the same pool may share instances. The control plane builds it from
    #: package, flavour and effective configuration, so the solver never sees sharing policy.
    pool: str
    #: Traffic one instance can process, in the unit of :attr:`NFDemand.load_mbps`.
    capacity_mbps: float
    #: At most this many tenants per instance; ``None``: only the capacity binds.
    max_tenants: int | None = None
    per_tenant: Resources = Resources()


@dataclass(frozen=True)
class FlavorDemand:
    """What one NF needs when instantiated with a given flavour."""

    flavor: Flavor
    resources: Resources
    processing_latency_ms: float = 0.0
    #: ``None``: the NF needs an instance of its own in this flavour.
    sharing: Sharing | None = None


@dataclass(frozen=True)
class NFDemand:
    """One NF instance to place (a service-graph role, expanded per attachment when scoped so)."""

    #: Unique within its slice, e.g. ``"broker-gw@gw-1"`` or ``"db"``.
    id: str
    role: str
    package: str
    flavors: Mapping[Flavor, FlavorDemand]
    #: The attachment node this instance serves, for ``perAttachment`` roles.
    attachment: str | None = None
    #: Tiers the role may be placed on; ``None`` means any tier.
    allowed_tiers: frozenset[Tier] | None = None
    #: Load this NF adds to a shared instance (Mbit/s): its incoming edge bandwidth, else its outgoing.
    load_mbps: float = 0.0


@dataclass(frozen=True)
class BudgetedPath:
    """A path whose end-to-end latency must stay within ``budget_ms``.

    It starts at ``attachment`` (the host where the slice's devices connect) and runs
    through ``nfs`` in order. Its latency is the shortest-path link latency between
    consecutive hosts plus the processing latency of each NF in its chosen flavour.
    """

    name: str
    attachment: str
    nfs: tuple[str, ...]
    budget_ms: float


@dataclass(frozen=True)
class Edge:
    """A directed edge of the expanded service graph, carrying ``bandwidth_mbps`` of traffic."""

    src: str
    dst: str
    bandwidth_mbps: float = 0.0


@dataclass(frozen=True)
class Assignment:
    host: str
    flavor: Flavor


@dataclass(frozen=True)
class SliceDemand:
    #: ``namespace/name`` of the Slice.
    key: str
    nfs: tuple[NFDemand, ...]
    edges: tuple[Edge, ...] = ()
    paths: tuple[BudgetedPath, ...] = ()
    availability_target: float = 0.0
    #: ``isolation: required`` forbids fNFs (no isolation between in-agent modules).
    isolation_required: bool = False
    #: Higher is admitted first when not everything fits.
    priority: int = 0
    #: Where the NFs of this slice run now (by NF id); moving them costs migration.
    current: Mapping[str, Assignment] = field(default_factory=dict)
    #: The :attr:`SharedInstance.id` each currently running shared NF is a tenant of (by NF id).
    current_instance: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def nf_by_id(self) -> Mapping[str, NFDemand]:
        return {nf.id: nf for nf in self.nfs}


@dataclass(frozen=True)
class Weights:
    """Weights of the objective's terms (see docs/solver.md).

    * ``resource``: host cost x normalised CPU+memory an NF takes there
    * ``latency``: predicted latency of every budgeted path, per ms, relative to its budget
    * ``migration``: per already-running NF moved to another host or flavour
    * ``rejection``: per rejected slice, scaled by priority; dominates all other terms
    """

    resource: float = 1.0
    latency: float = 1.0
    migration: float = 10.0
    rejection: float = 1000.0


@dataclass(frozen=True)
class Problem:
    topology: Topology
    slices: tuple[SliceDemand, ...]
    #: Resources already used on a host by things outside this problem (fixed).
    background: Mapping[str, Resources] = field(default_factory=dict)
    weights: Weights = field(default_factory=Weights)
    #: ``(pool, host) -> capacity`` replacing the declared :attr:`Sharing.capacity_mbps` of that pool's
    #: instances on that host: observed overload, so that the solver opens another instance (scale-out).
    derated: Mapping[tuple[str, str], float] = field(default_factory=dict)


class SolverStatus(StrEnum):
    """The solver's verdict, kept for compatibility; :class:`Guarantee` says what it is worth.

    ``OPTIMAL`` and ``INFEASIBLE`` are only used with ``Guarantee.OPTIMAL`` (a proof for the full
    model); every other placement is ``FEASIBLE`` (some solver or heuristic answer) or
    ``NOT_SOLVED`` (the solver had no answer in time; the baseline's placement is returned).
    """

    OPTIMAL = "Optimal"
    #: A solution was found but not proven optimal for the full model (time or gap limit, restriction).
    FEASIBLE = "Feasible"
    #: Proven optimal for the full model, with some slice rejected (not everything fits).
    INFEASIBLE = "Infeasible"
    #: The time limit ran out before any solution was found; says nothing about feasibility.
    NOT_SOLVED = "NotSolved"


class Guarantee(StrEnum):
    """What the returned placement is proven to be worth. Every placement passes the same checks
    (capacity, budgets, availability, bandwidth); this is only about how good it is."""

    #: Proven optimal for the full model within ``SolveOptions.gap_rel`` (``Placement.gap``).
    OPTIMAL = "Optimal"
    #: Not proven optimal, but ``Placement.gap`` is proven against the full model's lower bound.
    FEASIBLE_WITH_GAP = "FeasibleWithGap"
    #: Solved on a restricted model (named in ``Placement.restrictions``); ``Placement.gap``, when
    #: given, is relative to that restricted model only.
    RESTRICTED = "Restricted"
    #: No proven bound: the solver had no answer (or no bound) in time.
    HEURISTIC = "Heuristic"


@dataclass(frozen=True)
class SharedInstance:
    """One running instance of a shareable flavour and the tenants it serves."""

    #: ``f"{pool}@{host}#{n}"``; an instance that keeps any of its current tenants keeps its id.
    id: str
    pool: str
    host: str
    flavor: Flavor
    package: str
    #: ``(slice key, NF id)`` of every tenant, sorted.
    tenants: tuple[tuple[str, str], ...]
    load_mbps: float
    #: The effective capacity (after :attr:`Problem.derated`).
    capacity_mbps: float


@dataclass(frozen=True)
class SlicePlacement:
    key: str
    admitted: bool
    assignments: Mapping[str, Assignment] = field(default_factory=dict)
    #: Predicted latency per budgeted path name.
    path_latency_ms: Mapping[str, float] = field(default_factory=dict)
    #: Why the slice was not admitted, in words a user can act on.
    reasons: tuple[str, ...] = ()
    #: NF id -> :attr:`SharedInstance.id`, for every NF placed in a flavour with sharing.
    instance_of: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Placement:
    slices: Mapping[str, SlicePlacement]
    host_usage: Mapping[str, Resources]
    status: SolverStatus
    #: ``"ilp"`` or ``"baseline"``.
    method: str
    solver: str = ""
    objective: float | None = None
    objective_terms: Mapping[str, float] = field(default_factory=dict)
    #: Proven relative optimality gap; 0 when optimal, ``None`` when unknown.
    gap: float | None = None
    seconds: float = 0.0
    build_seconds: float = 0.0
    #: What the placement is proven to be worth; see :class:`Guarantee`.
    guarantee: Guarantee = Guarantee.HEURISTIC
    #: With ``Guarantee.RESTRICTED``: each restriction of the solved model, in words, e.g.
    #: ``"candidate cap k=6"``; empty otherwise.
    restrictions: tuple[str, ...] = ()
    #: Every shared instance by id (see :class:`SharedInstance`).
    instances: Mapping[str, SharedInstance] = field(default_factory=dict)
