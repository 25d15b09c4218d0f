"""Placement -> per-node actions: the NFInstance objects every node agent must run.

Pure: turns one slice's plan into NFInstance specs (the CRD's ``spec`` field names), with
stable names so that re-planning updates an instance in place instead of replacing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flyslice.operator.intake.catalog import Catalog, NetworkServiceSpec, SliceSpec
from flyslice.operator.intake.quantities import format_cpu, format_memory
from flyslice.solver.model import SliceDemand, SlicePlacement

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
        role = service.role(nf.role)
        config = {**role.config, **slice_.config.get(nf.role, {})}
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
        out.append(InstanceAction(slice_.namespace, names[nf.id], spec))
    return out
