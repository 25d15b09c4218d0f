"""The validated model: typed, immutable views of the flyslice objects that passed every check.

Built only by :mod:`flyslice.operator.intake.validation`; everything downstream (service choice,
placement, actions) reads these types and never the raw YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ObjectKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped kinds


@dataclass(frozen=True)
class LinkSpec:
    node: str
    latency_ms: float
    bandwidth_mbps: float | None


@dataclass(frozen=True)
class EdgeNodeSpec:
    name: str
    tier: str
    runtimes: frozenset[str]
    cpu_millis: int
    memory_bytes: int
    availability: float
    cost: float
    links: tuple[LinkSpec, ...]
    kubernetes_node: str | None = None


@dataclass(frozen=True)
class SharingSpec:
    """A flavour's ``sharing`` block: one instance may serve several slices (tenants)."""

    capacity_mbps: float
    max_tenants: int | None = None
    per_tenant_cpu_millis: int = 0
    per_tenant_memory_bytes: int = 0
    #: One instance keeps a config per tenant, so tenants need not agree on config to share it.
    per_tenant_config: bool = False


@dataclass(frozen=True)
class FlavorSpec:
    flavor: str
    cpu_millis: int
    memory_bytes: int
    processing_latency_ms: float
    image: str | None = None
    module: str | None = None
    digest: str | None = None
    entrypoint: str = "NF"
    #: ed25519 signature over the module bytes (base64); travels to the agent, which verifies it.
    signature: str | None = None
    #: Cosign-compatible signature of the pinned image digest (base64); the agent that starts the
    #: VNF's pod verifies it (nodeagent/runtime/image_signatures.py).
    image_signature: str | None = None
    #: ``None``: every slice gets instances of its own in this flavour.
    sharing: SharingSpec | None = None


@dataclass(frozen=True)
class NFPackageSpec:
    namespace: str
    name: str
    function: str
    flavors: Mapping[str, FlavorSpec]
    stateful: bool = False
    #: The namespace's policy requires signed modules (--require-signed-packages); agents
    #: without trusted keys then refuse the instances instead of running them unverified.
    signature_required: bool = False
    config_schema: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RoleSpec:
    name: str
    package: str
    scope: str  # perAttachment | perSlice
    tiers: frozenset[str] | None
    flavors: frozenset[str] | None
    config: Mapping[str, Any]
    #: ``allowed`` or ``forbidden``: whether this role's NFs may run in instances shared with other slices.
    sharing: str = "allowed"


@dataclass(frozen=True)
class EdgeSpec:
    src: str
    dst: str
    bandwidth_mbps: float = 0.0


@dataclass(frozen=True)
class LatencyPathSpec:
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class NetworkServiceSpec:
    namespace: str
    name: str
    provides: frozenset[str]
    priority: int
    roles: tuple[RoleSpec, ...]
    edges: tuple[EdgeSpec, ...]
    latency_paths: tuple[LatencyPathSpec, ...] = ()

    def role(self, name: str) -> RoleSpec:
        return next(r for r in self.roles if r.name == name)


@dataclass(frozen=True)
class SliceSpec:
    namespace: str
    name: str
    max_latency_ms: float
    availability: float
    attachments: tuple[str, ...]
    services: frozenset[str] = frozenset()
    network_service_ref: str | None = None
    lifetime_s: float | None = None
    isolation_required: bool = False
    priority: int = 0
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    generation: int = 0
    #: Annotation ``flyslice.io/allow-teardown: "true"``: an intent that cannot be admitted may tear
    #: the running placement down (by default the last good placement keeps running).
    allow_teardown: bool = False
    #: ``spec.sharing`` as declared (``allowed`` when omitted); ``isolation_required`` forbids sharing
    #: whatever this says (validation refuses an explicit ``allowed`` with it).
    sharing: str = "allowed"

    @property
    def sharing_allowed(self) -> bool:
        """Whether this slice's NFs may run in instances shared with other slices."""
        return self.sharing != "forbidden" and not self.isolation_required

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Catalog:
    """Every valid object of one desired state."""

    nodes: Mapping[str, EdgeNodeSpec] = field(default_factory=dict)
    packages: Mapping[ObjectKey, NFPackageSpec] = field(default_factory=dict)
    services: Mapping[ObjectKey, NetworkServiceSpec] = field(default_factory=dict)
    slices: Mapping[ObjectKey, SliceSpec] = field(default_factory=dict)
    #: Raw objects of the other flyslice kinds that passed schema validation (GitSource, NFInstance).
    others: Mapping[tuple[str, str, str], Mapping[str, Any]] = field(default_factory=dict)


def candidates(catalog: Catalog, slice_: SliceSpec) -> list[NetworkServiceSpec]:
    """Services that satisfy the intent, best first.

    A service qualifies when it provides every requested service; the highest ``priority``
    wins, then the smallest graph (fewest NFs to run), then the name for determinism.
    """
    if slice_.network_service_ref:
        ref = catalog.services.get((slice_.namespace, slice_.network_service_ref))
        return [ref] if ref else []
    fitting = [
        s
        for (ns, _), s in catalog.services.items()
        if ns == slice_.namespace and slice_.services <= s.provides
    ]
    return sorted(fitting, key=lambda s: (-s.priority, len(s.roles), s.name))
