"""Validation against published numbers (issue 15 item 4): published SFC-placement instances with a
published optimum, translated into flyslice manifests and planned by ``flyslice plan``.

    python benchmarks/published_sfc.py [--data DIR] [--case NAME] [--time-limit S] [--write DIR]

Source: Grigorjew, Lange, Zinner, Tran-Gia, "Performance Benchmarking of Network Function Chain
Placement Algorithms", MMB 2018; instance files of GitHub lsinfo3/vnfcp-benchmarking at commit
8decd97a7f841c0d00597e9ec10e6ca7bf541509, folders ``res/msgp``, ``res/msgp2``, ``res/msgp3`` and
``res/eval-topo``. That repository has no licence file and the project does not commit fetched
data, so the files are not in this tree: ``--data`` (or ``FLYSLICE_PUBLISHED_SFC``) names a folder
holding them as ``<case>/{topology,vnfLib[2],requests,optimal[2]}`` (docs/benchmarks.md says how to
lay it out); by default ``../shared/published_sfc`` beside the repository.

Their model (``MinimizeCpu.java`` there): every request is a chain of VNF types from an ingress to
an egress node with a bandwidth demand and a delay bound; an instance of a type costs the type's
cores on a node and processes up to the type's capacity, summed over the requests it serves;
node cores/RAM/HDD and link bandwidth bind; delay is link delays plus each VNF's delay. Objective:
``100 x cores used + links used by all requests (hops)``. ``optimal`` holds the (cores, hops) Pareto
frontier the paper publishes as optimal, so the published optimum of that objective is
``min(100 x cores + hops)`` over the frontier.

Translation (one manifest set per case): a node with cores becomes an EdgeNode (fog, ``vnf``,
``cores x 1000m``, ``RAM x 1Mi``); a VNF type an NFPackage with a ``vnf`` flavour of its cores/RAM,
its delay as ``processingLatencyMs`` and ``sharing.capacityMbps`` = its capacity (one instance serves
many requests: what issue 15 adds); a request a Slice attached at its ingress whose NetworkService
is the chain ``v0 -> ... -> vk -> egress`` with the demand on every edge and ``maxLatencyMs`` = the
delay bound. flyslice has no egress node, so the egress is a role of its own that can only run on
the request's egress node: its package ``egress-<node>`` is an fNF (only egress nodes offer ``fnf``,
only they are tier ``cloud``) that needs ``j`` millicores and ``J+1-j`` bytes, where egress node
``j`` (of ``J``) offers exactly that, so it fits on no other node; its flavour is shared with a
capacity of 10 Tbit/s, so one instance there serves every request ending at that node. Egress nodes
cost 0, so the egress roles add nothing to the objective.

Weights: ``flyslice plan`` runs default weights (resource 1, latency 1 per budget, rejection 1000),
so the published weighting is set through the compute nodes' ``cost``: with every link of delay
``ld``, every request's bound ``B`` and RAM proportional to cores, the resource term of one instance
of ``c`` cores is ``cost x 2c / maxcores``; ``cost = 50 x maxcores x ld / B`` makes it ``100 c ld / B``,
while a request's latency term is ``(ld x hops + sum of its VNF delays) / B``. So with every request
admitted, ``objective x B / ld - sum of VNF delays / ld`` is the published objective, and the
rejection term (1000 per request) dominates as theirs (no rejection at all) requires.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "published_sfc"
DATA_ENV = "FLYSLICE_PUBLISHED_SFC"
SOURCE = "GitHub lsinfo3/vnfcp-benchmarking@8decd97a7f841c0d00597e9ec10e6ca7bf541509"
NAMESPACE = "published"
#: Weight of one core in the published objective (MinimizeCpu.java: ``100.0 * cpuRequired``).
CORE_WEIGHT = 100.0
#: sharing.capacityMbps of an egress role: the CRD's maximum, far above any demand here.
EGRESS_CAPACITY_MBPS = 10_000_000.0
_MODULE = "builtin:broker"
_DIGEST = "sha256:209dd1596ae2b0b00bd7f063d64f0a1856998998180e8dd81d045519c5c36335"
_IMAGE = "ghcr.io/flyslice/nf-runner:0.1.0"
_MIB = 2**20


class FormatError(ValueError):
    """A published file that does not read as the format of its source; the message names file and line."""


@dataclass(frozen=True)
class Node:
    name: str
    cores: float
    ram: float
    hdd: float


@dataclass(frozen=True)
class LinkSpec:
    a: str
    b: str
    bandwidth: float
    delay: float


@dataclass(frozen=True)
class VnfType:
    name: str
    cores: float
    ram: float
    hdd: float
    delay: float
    capacity: float
    #: -1: unlimited.
    max_instances: int


@dataclass(frozen=True)
class Request:
    ingress: str
    egress: str
    bandwidth: float
    max_delay: float
    chain: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """One published instance: a folder of the source and which VNF library and frontier it uses."""

    name: str
    folder: str
    vnf_lib: str = "vnfLib"
    optimal: str = "optimal"


CASES = (
    Case("msgp2", "msgp2"),
    Case("msgp3", "msgp3"),
    Case("eval-topo", "eval-topo"),
    Case("eval-topo-lib2", "eval-topo", "vnfLib2", "optimal2"),
    Case("msgp", "msgp"),
)


@dataclass(frozen=True)
class Instance:
    name: str
    nodes: tuple[Node, ...]
    links: tuple[LinkSpec, ...]
    vnfs: Mapping[str, VnfType]
    requests: tuple[Request, ...]
    #: The published (cores, hops) Pareto frontier.
    frontier: tuple[tuple[float, float], ...]
    files: Mapping[str, str] = field(default_factory=dict)

    @property
    def compute_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.cores > 0)

    @property
    def egress_nodes(self) -> tuple[str, ...]:
        """Egress nodes in first-use order: egress node ``j`` (1-based) gets the pin ``j``."""
        return tuple(dict.fromkeys(r.egress for r in self.requests))


# ---------------------------------------------------------------------------------------------
# Reading the published files


def _data_lines(path: Path) -> Iterable[tuple[int, str]]:
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield no, line


def _number(path: Path, no: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FormatError(f"{path}:{no}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise FormatError(f"{path}:{no}: {what} {text!r} is not finite")
    return value


def read_topology(path: Path) -> tuple[tuple[Node, ...], tuple[LinkSpec, ...]]:
    """``N L`` then N lines ``name cores ram hdd`` then L lines ``a b bandwidth delay``."""
    lines = list(_data_lines(path))
    if not lines:
        raise FormatError(f"{path}: empty")
    no, head = lines[0]
    parts = head.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise FormatError(f"{path}:{no}: expected 'NODES LINKS', got {head!r}")
    n_nodes, n_links = int(parts[0]), int(parts[1])
    if len(lines) != 1 + n_nodes + n_links:
        raise FormatError(
            f"{path}: header says {n_nodes} nodes and {n_links} links, found {len(lines) - 1} rows"
        )
    nodes = []
    for no, line in lines[1 : 1 + n_nodes]:
        f = line.split()
        if len(f) != 4:
            raise FormatError(f"{path}:{no}: expected 'NODE CORES RAM HDD', got {line!r}")
        nodes.append(
            Node(
                f[0], *(_number(path, no, x, w) for x, w in zip(f[1:], ("cores", "RAM", "HDD"), strict=True))
            )
        )
    names = {n.name for n in nodes}
    if len(names) != len(nodes):
        raise FormatError(f"{path}: a node name appears twice")
    links = []
    for no, line in lines[1 + n_nodes :]:
        f = line.split()
        if len(f) != 4 or f[0] not in names or f[1] not in names:
            raise FormatError(
                f"{path}:{no}: expected 'NODE NODE BANDWIDTH DELAY' between known nodes, got {line!r}"
            )
        links.append(
            LinkSpec(f[0], f[1], _number(path, no, f[2], "bandwidth"), _number(path, no, f[3], "delay"))
        )
    return tuple(nodes), tuple(links)


def read_vnf_lib(path: Path) -> dict[str, VnfType]:
    """The ``[vnfs]`` section: ``name, cores, ram, hdd, delay, capacity, max instances``; names are
    matched case-insensitively (their requests write ``ids`` for ``IDS``)."""
    out: dict[str, VnfType] = {}
    section = ""
    for no, line in _data_lines(path):
        if line.startswith("["):
            section = line
            continue
        if section != "[vnfs]":
            if section in ("[abbrev]", "[pairs]"):
                raise FormatError(f"{path}:{no}: {section} entries are not supported by this translation")
            continue
        f = [x.strip() for x in line.split(",")]
        if len(f) != 7:
            raise FormatError(f"{path}:{no}: expected 7 comma-separated fields, got {line!r}")
        cores, ram, hdd, delay, cap, max_inst = (
            _number(path, no, x, w)
            for x, w in zip(f[1:], ("cores", "RAM", "HDD", "delay", "capacity", "max instances"), strict=True)
        )
        out[f[0].lower()] = VnfType(f[0], cores, ram, hdd, delay, cap, int(max_inst))
    if not out:
        raise FormatError(f"{path}: no [vnfs] entry")
    return out


def read_requests(path: Path, vnfs: Mapping[str, VnfType], nodes: Iterable[str]) -> tuple[Request, ...]:
    known = set(nodes)
    out = []
    for no, line in _data_lines(path):
        f = [x.strip() for x in line.split(",")]
        if len(f) < 5:
            raise FormatError(
                f"{path}:{no}: expected 'INGRESS, EGRESS, BANDWIDTH, MAX-DELAY, VNF...', got {line!r}"
            )
        for end in f[:2]:
            if end not in known:
                raise FormatError(f"{path}:{no}: node {end!r} is not in the topology")
        for v in f[4:]:
            if v.lower() not in vnfs:
                raise FormatError(f"{path}:{no}: VNF {v!r} is not in the VNF library")
        bw = _number(path, no, f[2], "bandwidth")
        out.append(
            Request(f[0], f[1], bw, _number(path, no, f[3], "max delay"), tuple(v.lower() for v in f[4:]))
        )
    if not out:
        raise FormatError(f"{path}: no request")
    return tuple(out)


_POINT = re.compile(r"^\[?\s*([0-9.]+)\s*,\s*([0-9.]+)\s*\]?$")


def read_frontier(path: Path) -> tuple[tuple[float, float], ...]:
    """The (cores, hops) points: ``cpu,hopcount`` rows or ``[cpu, hops]`` lines; other lines (the
    placements listed under a point, a header) are skipped."""
    points = []
    for _, line in _data_lines(path):
        m = _POINT.match(line)
        if m:
            points.append((float(m.group(1)), float(m.group(2))))
    if not points:
        raise FormatError(f"{path}: no (cores, hops) point")
    return tuple(points)


def data_dir(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else DEFAULT_DATA


def load(root: Path, case: Case) -> Instance:
    folder = root / case.folder
    files = {
        "topology": folder / "topology",
        "vnfLib": folder / case.vnf_lib,
        "requests": folder / "requests",
        "optimal": folder / case.optimal,
    }
    for what, p in files.items():
        if not p.is_file():
            raise FileNotFoundError(f"{case.name}: {what} file {p} is missing")
    nodes, links = read_topology(files["topology"])
    vnfs = read_vnf_lib(files["vnfLib"])
    requests = read_requests(files["requests"], vnfs, (n.name for n in nodes))
    frontier = read_frontier(files["optimal"])
    return Instance(case.name, nodes, links, vnfs, requests, frontier, {k: str(v) for k, v in files.items()})


def published_optimum(inst: Instance) -> tuple[float, float, float]:
    """``(100 x cores + hops, cores, hops)`` at its minimum over the published frontier."""
    return min(((CORE_WEIGHT * c + h, c, h) for c, h in inst.frontier), key=lambda t: t[0])


# ---------------------------------------------------------------------------------------------
# Translation into flyslice manifests


@dataclass(frozen=True)
class Scale:
    """The figures that tie the flyslice objective to the published one (see the module docstring)."""

    link_delay: float
    budget: float
    max_cores: float
    compute_cost: float
    #: Sum over requests of their chains' VNF delays (the non-hop part of their latency).
    chain_delay: float


def scale(inst: Instance) -> Scale:
    delays = {lk.delay for lk in inst.links}
    if len(delays) != 1 or next(iter(delays)) <= 0:
        raise ValueError(
            f"{inst.name}: links have delays {sorted(delays)}; hops and latency agree only when all are equal"
        )
    budgets = {r.max_delay for r in inst.requests}
    if len(budgets) != 1:
        raise ValueError(
            f"{inst.name}: requests have delay bounds {sorted(budgets)}; one latency weight needs one bound"
        )
    max_cores = max(n.cores for n in inst.compute_nodes)
    max_ram = max(n.ram for n in inst.compute_nodes)
    for v in inst.vnfs.values():
        if not math.isclose(v.ram / max_ram, v.cores / max_cores, rel_tol=1e-9):
            raise ValueError(
                f"{inst.name}: VNF {v.name} has RAM/cores {v.ram}/{v.cores}, not the ratio of the largest node "
                f"({max_ram}/{max_cores}); the resource term would not be 100 x cores"
            )
    ld, budget = next(iter(delays)), next(iter(budgets))
    chain_delay = sum(inst.vnfs[t].delay for r in inst.requests for t in r.chain)
    return Scale(ld, budget, max_cores, CORE_WEIGHT / 2 * max_cores * ld / budget, chain_delay)


def _millis(cores: float, what: str) -> int:
    m = cores * 1000
    if not math.isclose(m, round(m)):
        raise ValueError(f"{what}: {cores} cores is not a whole number of millicores")
    return round(m)


def _bytes(ram: float, what: str) -> int:
    b = ram * _MIB
    if not math.isclose(b, round(b)):
        raise ValueError(f"{what}: RAM {ram} is not a whole number of bytes at 1 RAM unit = 1Mi")
    return round(b)


def _object(kind: str, name: str, spec: dict[str, Any], namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return {"apiVersion": "flyslice.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def k8s_name(name: str) -> str:
    """A DNS-1123 label for a published name (``Firewall`` -> ``firewall``, ``src3`` stays)."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not out:
        raise ValueError(f"name {name!r} has no letter or digit")
    return out


def _node_names(inst: Instance) -> dict[str, str]:
    names = {n.name: f"n-{k8s_name(n.name)}" for n in inst.nodes}
    if len(set(names.values())) != len(names):
        raise ValueError(f"{inst.name}: two node names map to the same EdgeNode name")
    return names


def manifests(inst: Instance) -> dict[str, list[dict[str, Any]]]:
    """The case as flyslice manifests, by file name (see the module docstring for the mapping)."""
    sc = scale(inst)
    names = _node_names(inst)
    egress = inst.egress_nodes
    pin = {e: j for j, e in enumerate(egress, 1)}
    min_vnf_millis = min(_millis(v.cores, f"VNF {v.name}") for v in inst.vnfs.values())
    if len(egress) >= min_vnf_millis:
        raise ValueError(f"{inst.name}: {len(egress)} egress nodes: their pins would fit a VNF")
    for v in inst.vnfs.values():
        if v.max_instances >= 0:
            raise ValueError(
                f"{inst.name}: VNF {v.name} limits instances to {v.max_instances}: flyslice has no such limit"
            )
    by_name = {n.name: n for n in inst.nodes}
    for e in egress:
        if by_name[e].cores > 0:
            raise ValueError(f"{inst.name}: egress node {e} has cores; its pin would replace them")

    neighbours: dict[str, list[dict[str, Any]]] = {}
    seen: set[frozenset[str]] = set()
    demand = sum(r.bandwidth for r in inst.requests)
    for lk in inst.links:
        pair = frozenset((lk.a, lk.b))
        if pair in seen or lk.a == lk.b:
            continue
        seen.add(pair)
        entry: dict[str, Any] = {"node": names[lk.b], "latencyMs": lk.delay}
        # A link every request together cannot fill is left without bandwidth: flyslice then adds no
        # routing variables for it (and routes along shortest paths only, unlike the published ILP).
        if lk.bandwidth < demand:
            entry["bandwidthMbps"] = lk.bandwidth
        neighbours.setdefault(lk.a, []).append(entry)

    nodes = []
    for n in inst.nodes:
        spec: dict[str, Any]
        if n.name in pin:
            j = pin[n.name]
            spec = {
                "tier": "cloud",
                "runtimes": ["fnf"],
                "capacity": {"cpu": f"{j}m", "memory": len(egress) + 1 - j},
                "cost": 0,
            }
        elif n.cores > 0:
            spec = {
                "tier": "fog",
                "runtimes": ["vnf"],
                "capacity": {
                    "cpu": f"{_millis(n.cores, n.name)}m",
                    "memory": _bytes(n.ram, n.name),
                },
                "cost": sc.compute_cost,
            }
        else:
            # A node without cores (an ingress, a switch): flyslice needs some capacity, and 1m/1 byte
            # fits no VNF (>= 1 core) while ``vnf`` alone keeps the egress fNFs away.
            spec = {"tier": "gateway", "runtimes": ["vnf"], "capacity": {"cpu": "1m", "memory": 1}, "cost": 0}
        if n.name in neighbours:
            spec["links"] = neighbours[n.name]
        nodes.append(_object("EdgeNode", names[n.name], spec, namespaced=False))

    packages = []
    for key, v in inst.vnfs.items():
        flavor = {
            "image": _IMAGE,
            "resources": {"cpu": f"{_millis(v.cores, v.name)}m", "memory": _bytes(v.ram, v.name)},
            "processingLatencyMs": v.delay,
            "sharing": {"capacityMbps": v.capacity},
        }
        packages.append(
            _object("NFPackage", f"vnf-{k8s_name(key)}", {"function": key, "flavors": {"vnf": flavor}})
        )
    for e, j in pin.items():
        flavor = {
            "module": _MODULE,
            "digest": _DIGEST,
            "resources": {"cpu": f"{j}m", "memory": len(egress) + 1 - j},
            "processingLatencyMs": 0,
            "sharing": {"capacityMbps": EGRESS_CAPACITY_MBPS},
        }
        packages.append(
            _object("NFPackage", f"egress-{k8s_name(e)}", {"function": "egress", "flavors": {"fnf": flavor}})
        )

    services: dict[tuple[tuple[str, ...], str, float], str] = {}
    slices = []
    for i, r in enumerate(inst.requests):
        skey = (r.chain, r.egress, r.bandwidth)
        if skey not in services:
            services[skey] = f"chain-{len(services):03d}"
        slices.append(
            _object(
                "Slice",
                f"req-{i:03d}",
                {
                    "networkServiceRef": {"name": services[skey]},
                    "attachments": [{"node": names[r.ingress]}],
                    "qos": {"maxLatencyMs": r.max_delay},
                },
            )
        )
    service_docs = []
    for (chain, egress_node, bw), sname in services.items():
        roles: list[dict[str, Any]] = [
            {"name": f"f{i}-{k8s_name(t)}", "package": f"vnf-{k8s_name(t)}", "flavors": ["vnf"]}
            for i, t in enumerate(chain)
        ]
        roles.append(
            {
                "name": "egress",
                "package": f"egress-{k8s_name(egress_node)}",
                "tiers": ["cloud"],
                "flavors": ["fnf"],
            }
        )
        edges = [
            {"from": a["name"], "to": b["name"], "bandwidthMbps": bw} for a, b in itertools.pairwise(roles)
        ]
        service_docs.append(
            _object(
                "NetworkService", sname, {"provides": ["chain"], "graph": {"roles": roles, "edges": edges}}
            )
        )
    return {
        "nodes.yaml": nodes,
        "packages.yaml": packages,
        "services.yaml": service_docs,
        "slices.yaml": slices,
    }


def write(inst: Instance, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for fname, docs in manifests(inst).items():
        with open(out / fname, "w", encoding="utf-8") as f:
            yaml.safe_dump_all(docs, f, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Hop distances of the published topology (the published objective counts links)


def hop_distances(inst: Instance) -> dict[str, dict[str, int]]:
    g = nx.Graph()
    g.add_nodes_from(n.name for n in inst.nodes)
    g.add_edges_from((lk.a, lk.b) for lk in inst.links)
    return {s: dict(d) for s, d in nx.all_pairs_shortest_path_length(g)}


# ---------------------------------------------------------------------------------------------
# Running flyslice plan and reading its answer in the published units


def published_units(inst: Instance, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Cores, hops and ``100 x cores + hops`` of the plan document's placement, computed from where
    it put each NF (hop distances of the published topology), plus the same read off its objective."""
    sc = scale(inst)
    names = _node_names(inst)
    back = {v: k for k, v in names.items()}
    d = hop_distances(inst)
    cores_of = {f"vnf-{k8s_name(k)}": v.cores for k, v in inst.vnfs.items()}
    instances: dict[str, float] = {}
    hops = 0.0
    admitted = 0
    egress_ok = True
    requests = {f"req-{i:03d}": r for i, r in enumerate(inst.requests)}
    for sl in doc["slices"]:
        r = requests.get(sl["name"])
        if r is None or not sl["admitted"]:
            continue
        admitted += 1
        at: dict[str, str] = {}
        for nf in sl["instances"]:
            at[nf["role"]] = back[nf["node"]]
            if nf["package"] in cores_of:
                key = nf.get("sharedInstance") or f"{sl['name']}/{nf['id']}"
                instances[key] = cores_of[nf["package"]]
        seq = [r.ingress, *(at[f"f{i}-{k8s_name(t)}"] for i, t in enumerate(r.chain)), at["egress"]]
        egress_ok &= at["egress"] == r.egress
        hops += sum(d[a][b] for a, b in itertools.pairwise(seq))
    cores = sum(instances.values())
    solver = doc["solver"]
    terms = solver.get("objectiveTerms") or {}
    per_unit = sc.budget / sc.link_delay
    from_objective = None
    bound = None
    if admitted == len(inst.requests) and solver.get("objective") is not None:
        from_objective = (
            terms.get("resource", 0.0) + terms.get("latency", 0.0)
        ) * per_unit - sc.chain_delay / sc.link_delay
        if solver.get("gap") is not None:
            lower = solver["objective"] * (1 - solver["gap"])
            bound = lower * per_unit - sc.chain_delay / sc.link_delay
    return {
        "admitted": admitted,
        "cores": cores,
        "hops": hops,
        "value": CORE_WEIGHT * cores + hops if admitted == len(inst.requests) else None,
        "from_objective": from_objective,
        "proven_bound": bound,
        "egress_pinned": egress_ok,
    }


def differences(inst: Instance) -> list[str]:
    """Where flyslice's model differs from the published one, for this instance."""
    out = [
        "egress: no such notion in flyslice; modelled as a pinned fNF role at the egress node (cost 0)",
        "routing: flyslice routes each hop on a shortest path; theirs may detour (never cheaper here: equal link delays)",
    ]
    demand = sum(r.bandwidth for r in inst.requests)
    if all(lk.bandwidth >= demand for lk in inst.links):
        out.append(
            f"link bandwidth ({min(lk.bandwidth for lk in inst.links):g}) >= total demand ({demand:g}): cannot bind, not declared"
        )
    hdd_binds = any(
        n.hdd / v.hdd < n.cores / v.cores
        for n in inst.compute_nodes
        for v in inst.vnfs.values()
        if v.hdd > 0 and v.cores > 0
    )
    out.append(
        "HDD not modelled"
        + (" (and it could bind!)" if hdd_binds else " (proportional to cores here: never binds first)")
    )
    out.append("their VNF capacity/demand units are read as Mbit/s")
    return out


def run_case(root: Path, case: Case, time_limit_s: float | None) -> dict[str, Any]:
    import product_path

    inst = load(root, case)
    pub, pub_cores, pub_hops = published_optimum(inst)
    import published_check

    check = published_check.independent_optimum(inst)
    with tempfile.TemporaryDirectory(prefix=f"flyslice-published-{case.name}-") as tmp:
        write(inst, Path(tmp))
        doc, wall = product_path.flyslice_plan([tmp], time_limit_s)
    got = published_units(inst, doc)
    solver = doc["solver"]
    return {
        "case": case.name,
        "nodes": len(inst.nodes),
        "compute_nodes": len(inst.compute_nodes),
        "requests": len(inst.requests),
        "published_optimum": pub,
        "published_point": f"{pub_cores:g} cores, {pub_hops:g} hops",
        "independent_optimum": check["value"] if check["proven"] else None,
        "independent_note": check["note"],
        "flyslice_value": got["value"],
        "flyslice_cores": got["cores"],
        "flyslice_hops": got["hops"],
        "flyslice_from_objective": got["from_objective"],
        "proven_bound": got["proven_bound"],
        "admitted": got["admitted"],
        "egress_pinned": got["egress_pinned"],
        "shared_instances": len(doc.get("sharedInstances") or []),
        "status": solver["status"],
        "guarantee": solver.get("guarantee"),
        "gap": solver["gap"],
        "seconds": solver["seconds"],
        "plan_wall_s": round(wall, 3),
        "differences": differences(inst),
    }


def run(root: Path, cases: Sequence[Case], time_limit_s: float | None) -> list[dict[str, Any]]:
    return [run_case(root, c, time_limit_s) for c in cases]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", type=Path, help=f"folder of the published files (default ${DATA_ENV} or {DEFAULT_DATA})"
    )
    ap.add_argument("--case", action="append", choices=[c.name for c in CASES], help="run only these cases")
    ap.add_argument("--time-limit", type=float, help="flyslice plan --time-limit (default: the product's)")
    ap.add_argument("--write", type=Path, help="only write the manifests of each case into DIR/<case>")
    args = ap.parse_args(argv)
    root = data_dir(args.data)
    cases = [c for c in CASES if not args.case or c.name in args.case]
    if not root.is_dir():
        print(f"published_sfc: no data folder {root} (see docs/benchmarks.md)", file=sys.stderr)
        return 2
    if args.write:
        for c in cases:
            write(load(root, c), args.write / c.name)
        return 0
    sys.path.insert(0, str(HERE))
    print(json.dumps(run(root, cases, args.time_limit), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
