"""The versioned plan document (``flyslice plan -o json|yaml``) and its table view.

Format ``flyslice.io/plan/v1`` is documented in docs/plan-format.md; fields may be added,
never renamed or removed, within v1. Instances shared by several slices are listed once, under
``sharedInstances``, with their tenants; each tenant NF names its instance (``sharedInstance``).
"""

from __future__ import annotations

from typing import Any

from flyslice.operator.intake.errors import ManifestError
from flyslice.operator.intake.quantities import format_cpu, format_memory
from flyslice.operator.planning.pipeline import Plan

PLAN_FORMAT = "flyslice.io/plan/v1"


def plan_document(plan: Plan, errors: list[ManifestError] | None = None) -> dict[str, Any]:
    p = plan.placement
    slices = []
    for sp in plan.slices:
        demand = sp.demand
        instances = []
        if demand is not None and sp.placement.admitted:
            for nf in demand.nfs:
                a = sp.placement.assignments[nf.id]
                inst: dict[str, Any] = {"id": nf.id, "role": nf.role}
                if nf.attachment:
                    inst["attachment"] = nf.attachment
                inst.update({"package": nf.package, "node": a.host, "flavor": str(a.flavor)})
                shared = sp.placement.instance_of.get(nf.id)
                if shared is not None:
                    inst["sharedInstance"] = shared
                instances.append(inst)
        paths = []
        if demand is not None:
            for bp in demand.paths:
                latency = sp.placement.path_latency_ms.get(bp.name)
                paths.append(
                    {
                        "name": bp.name,
                        "latencyMs": None if latency is None else round(latency, 3),
                        "budgetMs": bp.budget_ms,
                    }
                )
        slices.append(
            {
                "name": sp.slice.name,
                "namespace": sp.slice.namespace,
                "admitted": sp.placement.admitted,
                "networkService": sp.service.name if sp.service else None,
                "instances": instances,
                "paths": paths,
                "availability": {"target": sp.slice.availability},
                "reasons": list(sp.placement.reasons),
            }
        )
    nodes = []
    for name, node in sorted(plan.catalog.nodes.items()):
        used = p.host_usage.get(name)
        nodes.append(
            {
                "name": name,
                "tier": node.tier,
                "cpu": {"usedMillis": used.cpu_millis if used else 0, "capacityMillis": node.cpu_millis},
                "memory": {"usedBytes": used.memory_bytes if used else 0, "capacityBytes": node.memory_bytes},
            }
        )
    doc: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "solver": {
            "method": p.method,
            "name": p.solver,
            "status": str(p.status),
            "seconds": round(p.seconds, 4),
            "buildSeconds": round(p.build_seconds, 4),
            "gap": p.gap,
            "guarantee": str(p.guarantee),
            "restrictions": list(p.restrictions),
            "objective": p.objective,
            "objectiveTerms": dict(p.objective_terms),
        },
        "slices": slices,
        "sharedInstances": [
            {
                "id": si.id,
                "pool": si.pool,
                "package": si.package,
                "node": si.host,
                "flavor": str(si.flavor),
                "tenants": [{"slice": key, "nf": nf} for key, nf in si.tenants],
                "loadMbps": round(si.load_mbps, 3),
                "capacityMbps": si.capacity_mbps,
            }
            for _, si in sorted(p.instances.items())
        ],
        "nodes": nodes,
    }
    if errors:
        doc["errors"] = [e.as_dict() for e in errors]
    return doc


def render_table(doc: dict[str, Any]) -> str:
    s = doc["solver"]
    label = " (baseline heuristic)" if s["method"] == "baseline" else ""
    gap = "n/a" if s["gap"] is None else f"{s['gap']:.2%}"
    lines = [
        f"solver: {s['method']}{label} {s['name']} status={s['status']} time={s['seconds']:.3f}s gap={gap} "
        f"guarantee={s['guarantee']}"
    ]
    # A heuristic restriction changes what the gap and the rejections mean: say it on its own line.
    lines.extend(f"  restricted: {r}" for r in s["restrictions"])
    for sl in doc["slices"]:
        worst = max((p["latencyMs"] for p in sl["paths"] if p["latencyMs"] is not None), default=None)
        budget = sl["paths"][0]["budgetMs"] if sl["paths"] else None
        state = "admitted" if sl["admitted"] else "NOT ADMITTED"
        lat = f"{worst:g}/{budget:g} ms" if worst is not None and budget is not None else "-"
        lines.append("")
        lines.append(
            f"slice {sl['namespace']}/{sl['name']}: {state}, service {sl['networkService'] or '-'}, "
            f"worst path latency {lat}"
        )
        for reason in sl["reasons"]:
            lines.append(f"  reason: {reason}")
        if sl["instances"]:
            # The column appears only for a slice with shared NFs: unshared plans read as before.
            shared = any("sharedInstance" in i for i in sl["instances"])
            lines.extend(
                _table(
                    ["ROLE", "ATTACHMENT", "PACKAGE", "NODE", "FLAVOR"] + ["SHARED INSTANCE"] * shared,
                    [
                        [i["role"], i.get("attachment", "-"), i["package"], i["node"], i["flavor"]]
                        + [i.get("sharedInstance", "-")] * shared
                        for i in sl["instances"]
                    ],
                )
            )
        if sl["paths"]:
            lines.extend(
                _table(
                    ["PATH", "LATENCY(ms)", "BUDGET(ms)"],
                    [
                        [
                            p["name"],
                            "-" if p["latencyMs"] is None else f"{p['latencyMs']:g}",
                            f"{p['budgetMs']:g}",
                        ]
                        for p in sl["paths"]
                    ],
                )
            )
    shared_instances = doc.get("sharedInstances") or []
    if shared_instances:
        lines.append("")
        lines.append(f"shared instances: {len(shared_instances)}")
        lines.extend(
            _table(
                ["SHARED INSTANCE", "NODE", "FLAVOR", "TENANTS", "LOAD/CAPACITY(Mbps)", "TENANT NFS"],
                [
                    [
                        si["id"],
                        si["node"],
                        si["flavor"],
                        str(len(si["tenants"])),
                        f"{si['loadMbps']:g}/{si['capacityMbps']:g}",
                        ", ".join(f"{t['slice']}:{t['nf']}" for t in si["tenants"]),
                    ]
                    for si in shared_instances
                ],
            )
        )
    lines.append("")
    lines.extend(
        _table(
            ["NODE", "TIER", "CPU", "MEMORY"],
            [
                [
                    n["name"],
                    n["tier"],
                    f"{format_cpu(n['cpu']['usedMillis'])}/{format_cpu(n['cpu']['capacityMillis'])}",
                    f"{format_memory(n['memory']['usedBytes'])}/{format_memory(n['memory']['capacityBytes'])}",
                ]
                for n in doc["nodes"]
            ],
        )
    )
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
