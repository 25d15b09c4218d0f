"""Placement -> per-node actions: the NFInstance objects every node agent must run.

Pure: turns one slice's plan into NFInstance specs (the CRD's ``spec`` field names), with
stable names so that re-planning updates an instance in place instead of replacing it.

An NF placed in a shared instance (``SlicePlacement.instance_of``) is still one NFInstance of its
own slice, with its own config and next hops (its slice's instances); ``spec.sharedInstance`` names
the running instance it is a tenant of, which the node's agent runs once for all its tenants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flyslice.operator.intake.catalog import Catalog, NetworkServiceSpec, SliceSpec
from flyslice.operator.intake.quantities import cpu_millis, format_cpu, format_memory, memory_bytes
from flyslice.operator.planning.expansion import effective_config
from flyslice.solver.model import Resources, SliceDemand, SlicePlacement

MAX_NAME = 63


@dataclass(frozen=True)
class InstanceAction:
    """One NFInstance the control plane wants to exist."""

    namespace: str
    name: str
    spec: Mapping[str, Any]

    @property
    def node(self) -> str:
        return str(self.spec["node"])

    def as_object(self, owner_uid: str | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {
                "flyslice.io/slice": str(self.spec["slice"]),
                "flyslice.io/role": str(self.spec["role"]),
                "flyslice.io/node": self.node,
            },
        }
        return {
            "apiVersion": "flyslice.io/v1alpha1",
            "kind": "NFInstance",
            "metadata": meta,
            "spec": dict(self.spec),
        }


def instance_name(slice_name: str, nf_id: str) -> str:
    """``<slice>-<role>[-<attachment>]``, shortened with a hash suffix when over 63 characters."""
    base = f"{slice_name}-{nf_id.replace('@', '-')}".lower().replace("_", "-").replace(".", "-")
    if len(base) <= MAX_NAME:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{base[: MAX_NAME - 9].rstrip('-')}-{digest}"


def slice_actions(
    catalog: Catalog,
    slice_: SliceSpec,
    service: NetworkServiceSpec,
    demand: SliceDemand,
    placement: SlicePlacement,
) -> list[InstanceAction]:
    if not placement.admitted:
        return []
    names = {nf.id: instance_name(slice_.name, nf.id) for nf in demand.nfs}
    next_hops: dict[str, list[dict[str, str]]] = {nf.id: [] for nf in demand.nfs}
    for e in demand.edges:
        next_hops[e.src].append({"instance": names[e.dst], "node": placement.assignments[e.dst].host})
    out = []
    for nf in demand.nfs:
        a = placement.assignments[nf.id]
        package = catalog.packages[(service.namespace, nf.package)]
        flavor = package.flavors[str(a.flavor)]
        # The same merge the pool key hashes: tenants that share an instance run the same config.
        config = effective_config(service.role(nf.role), slice_)
        spec: dict[str, Any] = {
            "slice": slice_.name,
            "role": nf.role,
            "package": nf.package,
            "flavor": str(a.flavor),
            "node": a.host,
            "resources": {"cpu": format_cpu(flavor.cpu_millis), "memory": format_memory(flavor.memory_bytes)},
            "config": config,
            "nextHops": next_hops[nf.id],
        }
        if nf.attachment:
            spec["attachment"] = nf.attachment
        for key, value in (
            ("image", flavor.image),
            ("module", flavor.module),
            ("digest", flavor.digest),
            ("signature", flavor.signature),
            ("imageSignature", flavor.image_signature),
        ):
            if value:
                spec[key] = value
        if package.signature_required:
            spec["signatureRequired"] = True
        if flavor.module:
            spec["entrypoint"] = flavor.entrypoint
        shared = placement.instance_of.get(nf.id)
        if shared is not None:
            block = flavor.sharing
            spec["sharedInstance"] = {
                "name": shared,
                "perTenantConfig": bool(block and block.per_tenant_config),
                "perTenant": {
                    "cpu": format_cpu(block.per_tenant_cpu_millis if block else 0),
                    "memory": format_memory(block.per_tenant_memory_bytes if block else 0),
                },
            }
        out.append(InstanceAction(slice_.namespace, names[nf.id], spec))
    return out


def nf_id_of(spec: Mapping[str, Any]) -> str:
    """The solver's NF id of an NFInstance spec (``role`` or ``role@attachment``, see expansion)."""
    attachment = spec.get("attachment")
    return f"{spec['role']}@{attachment}" if attachment else str(spec["role"])


def shared_instances(actions: Iterable[InstanceAction]) -> dict[str, str]:
    """NF id -> the shared instance it runs in, for a slice's NFInstances (``SliceDemand.current_instance``)."""
    out: dict[str, str] = {}
    for a in actions:
        shared = a.spec.get("sharedInstance")
        if isinstance(shared, Mapping) and shared.get("name"):
            out[nf_id_of(a.spec)] = str(shared["name"])
    return out


def node_usage(
    actions: Iterable[InstanceAction],
    cpu: Callable[[Any], int] = cpu_millis,
    memory: Callable[[Any], int] = memory_bytes,
) -> dict[str, Resources]:
    """Resources the NFInstances reserve per node: a shared instance's own resources once however many
    tenants it has, plus ``perTenant`` for each; every other instance its resources.

    ``cpu`` and ``memory`` parse quantities (callers pass cached parsers: this runs every pass).
    """
    out: dict[str, Resources] = {}
    seen: set[tuple[str, str]] = set()
    for a in actions:
        res = a.spec.get("resources") or {}
        used = Resources(cpu(res.get("cpu", 0)), memory(res.get("memory", 0)))
        shared = a.spec.get("sharedInstance")
        if isinstance(shared, Mapping):
            per = shared.get("perTenant") or {}
            tenant = Resources(cpu(per.get("cpu", 0)), memory(per.get("memory", 0)))
            key = (a.node, str(shared.get("name", "")))
            used = tenant if key in seen else used + tenant
            seen.add(key)
        out[a.node] = out.get(a.node, Resources()) + used
    return out
