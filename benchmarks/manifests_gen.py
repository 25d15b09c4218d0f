"""Generated manifests for the product-path benchmark: a seeded solver instance as YAML.

    python benchmarks/manifests_gen.py OUT_DIR HOSTS SLICES NFS [--topology tree] [--gw-scale 1]

writes ``nodes.yaml`` (EdgeNodes), ``packages.yaml`` (NFPackages), ``service.yaml`` (one
NetworkService) and ``slices.yaml`` (Slices) that describe the same placement problem as
``solver_instances.instance(...)``: the benchmark then times ``flyslice plan`` on them, i.e. the
product's own validation, expansion and solver configuration, not a library call with options the
product never passes. ``problem_of(dir)`` reads them back through the control plane's validation and
expansion (what ``flyslice plan`` does before solving).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from solver_instances import instance

from flyslice.solver import Flavor, FlavorDemand, Problem, SliceDemand

NAMESPACE = "bench"
SERVICE = "bench-chain"
#: A real builtin module and its digest (the broker of examples/wildfire): validation checks the
#: digest's form, and `flyslice plan` never loads the module.
_MODULE = "builtin:broker"
_DIGEST = "sha256:209dd1596ae2b0b00bd7f063d64f0a1856998998180e8dd81d045519c5c36335"
_IMAGE = "ghcr.io/flyslice/nf-runner:0.1.0"


def _cpu(millis: int) -> str:
    return f"{millis}m"


def _memory(nbytes: int) -> str:
    mib, rest = divmod(nbytes, 2**20)
    return f"{mib}Mi" if rest == 0 else str(nbytes)


def _nodes(problem: Problem) -> list[dict[str, Any]]:
    links: dict[str, list[dict[str, Any]]] = {}
    for lk in problem.topology.links:
        entry: dict[str, Any] = {"node": lk.b, "latencyMs": lk.latency_ms}
        if lk.bandwidth_mbps is not None:
            entry["bandwidthMbps"] = lk.bandwidth_mbps
        links.setdefault(lk.a, []).append(entry)
    out = []
    for h in problem.topology.hosts:
        spec: dict[str, Any] = {
            "tier": str(h.tier),
            "runtimes": sorted(str(r) for r in h.runtimes),
            "capacity": {"cpu": _cpu(h.capacity.cpu_millis), "memory": _memory(h.capacity.memory_bytes)},
            "availability": h.availability,
            "cost": h.cost,
        }
        if h.name in links:
            spec["links"] = links[h.name]
        out.append(_object("EdgeNode", h.name, spec, namespaced=False))
    return out


def _flavor(f: FlavorDemand) -> dict[str, Any]:
    out: dict[str, Any] = {
        "module": _MODULE,
        "digest": _DIGEST,
        "resources": {"cpu": _cpu(f.resources.cpu_millis), "memory": _memory(f.resources.memory_bytes)},
        "processingLatencyMs": f.processing_latency_ms,
    }
    if f.flavor is Flavor.VNF:
        out["image"] = _IMAGE
    return out


def _service_and_packages(first: SliceDemand) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every generated slice has the same chain of roles and packages: read them off the first."""
    roles: list[dict[str, Any]] = []
    packages: dict[str, dict[str, Any]] = {}
    for nf in first.nfs:
        role = nf.role
        if any(r["name"] == role for r in roles):
            continue  # a perAttachment role expanded for a second attachment
        entry: dict[str, Any] = {"name": role, "package": nf.package}
        entry["scope"] = "perAttachment" if nf.attachment else "perSlice"
        if nf.allowed_tiers is not None:
            entry["tiers"] = sorted(str(t) for t in nf.allowed_tiers)
        roles.append(entry)
        packages[nf.package] = _object(
            "NFPackage",
            nf.package,
            {"function": nf.package, "flavors": {str(f): _flavor(d) for f, d in nf.flavors.items()}},
        )
    edges = [{"from": a["name"], "to": b["name"]} for a, b in itertools.pairwise(roles)]
    spec = {"provides": ["bench"], "graph": {"roles": roles, "edges": edges}}
    return _object("NetworkService", SERVICE, spec), list(packages.values())


def _slice(s: SliceDemand) -> dict[str, Any]:
    attachments = sorted({p.attachment for p in s.paths}, key=[p.attachment for p in s.paths].index)
    budget = s.paths[0].budget_ms if s.paths else math.inf
    qos: dict[str, Any] = {"availability": s.availability_target}
    if math.isfinite(budget):
        qos["maxLatencyMs"] = budget
    spec: dict[str, Any] = {
        "networkServiceRef": {"name": SERVICE},
        "attachments": [{"node": a} for a in attachments],
        "qos": qos,
        "isolation": "required" if s.isolation_required else "none",
        "priority": s.priority,
    }
    return _object("Slice", s.key.split("/", 1)[1], spec)


def _object(kind: str, name: str, spec: dict[str, Any], namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return {"apiVersion": "flyslice.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def write(problem: Problem, out: Path) -> None:
    """Write ``problem`` (a generated instance: every slice the same chain) as manifests into ``out``."""
    if not problem.slices:
        raise ValueError("manifests_gen.write: the problem has no slice")
    service, packages = _service_and_packages(problem.slices[0])
    files = {
        "nodes.yaml": _nodes(problem),
        "packages.yaml": packages,
        "service.yaml": [service],
        "slices.yaml": [_slice(s) for s in problem.slices],
    }
    write_documents(out, files)


def generate(
    out: Path, hosts: int, slices: int, nfs: int, topology: str = "tree", gw_scale: float = 1.0, seed: int = 0
) -> Problem:
    """Generate the seeded instance, write it into ``out`` and return it."""
    problem = instance(hosts, slices, nfs, topology, seed=seed, gw_scale=gw_scale)
    write(problem, out)
    return problem


def write_documents(out: Path, files: dict[str, list[dict[str, Any]]]) -> None:
    """Write each file name's documents as one multi-document YAML file into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, docs in files.items():
        with open(out / name, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)


def forbid_sharing(src: Path, dst: Path) -> int:
    """Copy the manifests of ``src`` into ``dst`` with ``spec.sharing: forbidden`` on every Slice.

    The "without sharing" twin of a benchmark input: same nodes, packages (sharing blocks kept) and
    service, only the slices' policy changed, so the control plane hands the solver no pool. Returns
    the number of Slices changed.
    """
    changed = 0
    files: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(src.glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        for doc in docs:
            if doc.get("kind") == "Slice":
                doc["spec"]["sharing"] = "forbidden"
                changed += 1
        files[path.name] = docs
    if not changed:
        raise ValueError(f"manifests_gen.forbid_sharing: {src} has no Slice")
    write_documents(dst, files)
    return changed


def problem_of(paths: list[str]) -> Problem:
    """The problem ``flyslice plan PATHS`` solves: validation and expansion of the control plane."""
    from flyslice.operator.intake.validation import validate_paths
    from flyslice.operator.planning import expansion, service_choice

    result = validate_paths(paths)
    errors = [e for e in result.errors if e.severity == "error"]
    if errors:
        raise ValueError(f"{paths}: {errors[0]}")
    catalog = result.catalog
    demands = []
    for s in catalog.slices.values():
        service = service_choice.choose(catalog, s).service
        if service is None:
            raise ValueError(f"{paths}: {s.key} has no service")
        demands.append(expansion.slice_demand(catalog, s, service))
    return expansion.problem(catalog, demands)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("hosts", type=int)
    ap.add_argument("slices", type=int)
    ap.add_argument("nfs", type=int)
    ap.add_argument("--topology", default="tree")
    ap.add_argument("--gw-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    generate(args.out, args.hosts, args.slices, args.nfs, args.topology, args.gw_scale, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
