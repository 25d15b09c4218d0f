"""The web console's data: the status document plus the topology and service graphs it is drawn on.

The browser gets one JSON document (``GET /console/state``) and then the same document again over
server-sent events (``GET /console/events``) each time it changes; the page redraws from it, so what
the console shows is exactly what ``flyslice status -o json`` says, plus capacities and links.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.quantities import cpu_millis, memory_bytes

CONSOLE_FORMAT = "flyslice.io/console/v1"


class PlacedAction(Protocol):
    """An NFInstance action as the console needs it (``planning.actions.InstanceAction``)."""

    @property
    def node(self) -> str: ...

    @property
    def spec(self) -> Mapping[str, Any]: ...


def topology(catalog: Catalog, actions: Iterable[PlacedAction]) -> dict[str, Any]:
    """Nodes by tier with capacity and what flyslice placed on them, links, and each service's graph."""
    used: dict[str, list[int]] = {}
    for action in actions:
        res = action.spec.get("resources") or {}
        cpu_mem = used.setdefault(action.node, [0, 0])
        cpu_mem[0] += cpu_millis(res.get("cpu", 0))
        cpu_mem[1] += memory_bytes(res.get("memory", 0))
    nodes = []
    links: dict[tuple[str, str], dict[str, Any]] = {}
    for name, node in sorted(catalog.nodes.items()):
        cpu, mem = used.get(name, [0, 0])
        nodes.append(
            {
                "name": name,
                "tier": node.tier,
                "runtimes": sorted(node.runtimes),
                "cpu": {"usedMillis": cpu, "capacityMillis": node.cpu_millis},
                "memory": {"usedBytes": mem, "capacityBytes": node.memory_bytes},
            }
        )
        for lk in node.links:
            # Links are declared on either end (or both); the console draws each once.
            a, b = sorted((name, lk.node))
            links.setdefault(
                (a, b), {"a": a, "b": b, "latencyMs": lk.latency_ms, "bandwidthMbps": lk.bandwidth_mbps}
            )
    services = {
        f"{ns}/{name}": {
            "edges": [[e.src, e.dst] for e in svc.edges],
            "paths": {p.name: list(p.roles) for p in svc.latency_paths},
        }
        for (ns, name), svc in sorted(catalog.services.items())
    }
    return {"nodes": nodes, "links": [links[k] for k in sorted(links)], "services": services}


def console_document(status: Mapping[str, Any], topo: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the page draws. ``topo`` None (the operator): nodes come from the status document alone."""
    if topo is None:
        topo = {
            "nodes": [
                {"name": n.get("name"), "tier": n.get("tier", "unknown")}
                for n in status.get("nodes") or []
                if isinstance(n, Mapping)
            ],
            "links": [],
            "services": {},
        }
    return {"format": CONSOLE_FORMAT, "status": dict(status), "topology": dict(topo)}
