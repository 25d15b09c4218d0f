"""Seeded placement instances for the solver benchmark.

Topologies
  ``tree``   tiered tree: clouds in a ring, each fog under one cloud, each gateway under one fog
  ``mesh``   the same tiers, but gateways dual-homed to two fogs and fogs meshed with their neighbours
  ``zoo:<name>`` / ``sndlib:<name>``  a real backbone from the ``topohub`` package (Topology Zoo,
             SNDlib) as the fog/cloud core (its best-connected nodes become clouds, link latency
             from fibre length at 5 us/km + 0.1 ms), with gateways hung off random core nodes

Slices: a chain of ``nfs`` NFs from one or two gateway attachments -- a gateway-tier ingest
NF, free-tier middle NFs (the solver picks gateway, fog or cloud) and a cloud-tier store --
with a latency budget, an availability target, a priority and sometimes ``isolation: required``.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Mapping

import networkx as nx

from flyslice.solver import (
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

Mi = 2**20
Gi = 2**30

_HOST_SPEC = {
    Tier.CLOUD: (frozenset({Flavor.VNF}), Resources(64000, 128 * Gi), 0.9995, 1.0),
    Tier.FOG: (frozenset({Flavor.VNF, Flavor.FNF}), Resources(8000, 16 * Gi), 0.995, 2.0),
    Tier.GATEWAY: (frozenset({Flavor.FNF}), Resources(1000, 1 * Gi), 0.985, 4.0),
}


def _host(name: str, tier: Tier, rng: random.Random, scale: float) -> Host:
    runtimes, cap, avail, cost = _HOST_SPEC[tier]
    if tier is Tier.GATEWAY and rng.random() < 0.2:
        runtimes = frozenset({Flavor.VNF, Flavor.FNF})
    cap = Resources(int(cap.cpu_millis * scale), int(cap.memory_bytes * scale))
    return Host(name, tier, runtimes, cap, round(avail - rng.random() * 0.005, 4), cost)


def _tier_counts(hosts: int) -> tuple[int, int, int]:
    clouds = max(1, hosts // 100)
    fogs = max(1, hosts // 10)
    return clouds, fogs, max(1, hosts - clouds - fogs)


def tree_topology(hosts: int, rng: random.Random, mesh: bool = False, gw_scale: float = 1.0) -> Topology:
    n_cloud, n_fog, n_gw = _tier_counts(hosts)
    clouds = [_host(f"cloud-{i}", Tier.CLOUD, rng, 1.0) for i in range(n_cloud)]
    fogs = [_host(f"fog-{i}", Tier.FOG, rng, 1.0) for i in range(n_fog)]
    gws = [_host(f"gw-{i}", Tier.GATEWAY, rng, gw_scale) for i in range(n_gw)]
    links: dict[frozenset[str], Link] = {}

    def link(a: str, b: str, lat: float, bw: float) -> None:
        if a != b:
            links.setdefault(frozenset((a, b)), Link(a, b, round(lat, 2), bw))

    for a, b in itertools.pairwise([*clouds, clouds[0]]):
        link(a.name, b.name, 2.0, 10000.0)
    for i, f in enumerate(fogs):
        link(f.name, clouds[i % n_cloud].name, rng.uniform(3.0, 6.0), 1000.0)
        if mesh and n_fog > 1:
            for j in (i + 1, i + 2):
                link(f.name, fogs[j % n_fog].name, rng.uniform(1.0, 3.0), 1000.0)
    for i, g in enumerate(gws):
        home = i % n_fog
        link(g.name, fogs[home].name, rng.uniform(0.5, 2.0), 100.0)
        if mesh and n_fog > 1:
            link(g.name, fogs[(home + 1) % n_fog].name, rng.uniform(1.0, 3.0), 100.0)
    return Topology((*clouds, *fogs, *gws), tuple(links.values()))


def backbone_topology(source: str, hosts: int, rng: random.Random, gw_scale: float = 1.0) -> Topology:
    """A real backbone from topohub as the core, with gateways hung off it up to ``hosts``."""
    import topohub  # optional: pip install topohub

    kind, name = source.split(":", 1)
    key = {"zoo": "topozoo", "sndlib": "sndlib"}[kind] + "/" + name
    g = nx.node_link_graph(topohub.get(key), edges="edges")
    core = sorted(g.nodes, key=lambda n: (-g.degree(n), n))
    n_cloud = max(1, len(core) // 20)
    names = {n: (f"cloud-{i}" if i < n_cloud else f"fog-{i - n_cloud}") for i, n in enumerate(core)}
    hosts_out = [
        _host(names[n], Tier.CLOUD if names[n].startswith("cloud") else Tier.FOG, rng, 1.0) for n in core
    ]
    links = []
    for a, b, data in g.edges(data=True):
        if a != b:
            km = float(data.get("dist", 100.0))
            links.append(Link(names[a], names[b], round(0.1 + km * 0.005, 3), 10000.0))
    fog_names = [names[n] for n in core[n_cloud:]] or [names[core[0]]]
    for i in range(max(1, hosts - len(core))):
        gw = _host(f"gw-{i}", Tier.GATEWAY, rng, gw_scale)
        hosts_out.append(gw)
        links.append(Link(gw.name, rng.choice(fog_names), round(rng.uniform(0.5, 2.0), 2), 100.0))
    return Topology(tuple(hosts_out), tuple(links))


def _package(rng: random.Random, name: str, vnf_only: bool = False) -> dict[Flavor, FlavorDemand]:
    out = {
        Flavor.VNF: FlavorDemand(
            Flavor.VNF,
            Resources(rng.randrange(100, 601, 50), rng.choice([64, 128, 256, 512]) * Mi),
            round(rng.uniform(0.3, 1.5), 2),
        )
    }
    if not vnf_only:
        out[Flavor.FNF] = FlavorDemand(
            Flavor.FNF,
            Resources(rng.randrange(20, 151, 10), rng.choice([4, 8, 16, 32]) * Mi),
            round(rng.uniform(0.1, 0.6), 2),
        )
    return out


def make_slice(
    key: str,
    topo: Topology,
    nfs: int,
    rng: random.Random,
    gateways: list[str],
    packages: list[dict[Flavor, FlavorDemand]],
) -> SliceDemand:
    attachments = rng.sample(gateways, k=min(len(gateways), 1 if rng.random() < 0.7 else 2))
    gw_tier = frozenset({Tier.GATEWAY})
    cloud_tier = frozenset({Tier.CLOUD})
    out_nfs: list[NFDemand] = []
    # The first NF is per attachment (on a gateway); the rest are shared by the slice.
    for att in attachments:
        out_nfs.append(NFDemand(f"ingest@{att}", "ingest", "pkg-0", packages[0], att, gw_tier))
    middle = [f"nf{i}" for i in range(1, nfs - 1)]
    for i, nf_id in enumerate(middle, start=1):
        pkg = packages[i % (len(packages) - 1)] if i % (len(packages) - 1) else packages[1]
        out_nfs.append(NFDemand(nf_id, nf_id, f"pkg-{i}", pkg, None, None))
    if nfs > 1:
        out_nfs.append(NFDemand("store", "store", "storage", packages[-1], None, cloud_tier))
    tail = (*middle, "store") if nfs > 1 else ()
    edges: list[Edge] = []
    paths: list[BudgetedPath] = []
    budget = float(rng.choice([12, 15, 20, 25]))
    for att in attachments:
        chain = (f"ingest@{att}", *tail)
        edges.extend(Edge(a, b) for a, b in itertools.pairwise(chain) if Edge(a, b) not in edges)
        paths.append(BudgetedPath(f"{att}:ingest->store", att, chain, budget))
    return SliceDemand(
        key=key,
        nfs=tuple(out_nfs),
        edges=tuple(edges),
        paths=tuple(paths),
        availability_target=rng.choice([0.0, 0.9, 0.93]),
        isolation_required=rng.random() < 0.1,
        priority=rng.choice([0, 0, 1, 2]),
    )


def instance(
    hosts: int,
    slices: int,
    nfs_per_slice: int,
    topology: str = "tree",
    seed: int = 0,
    gw_scale: float = 1.0,
) -> Problem:
    """A seeded instance; ``gw_scale`` < 1 shrinks gateways to overload them."""
    rng = random.Random(f"{topology}/{hosts}/{slices}/{nfs_per_slice}/{seed}")
    if topology in ("tree", "mesh"):
        topo = tree_topology(hosts, rng, mesh=topology == "mesh", gw_scale=gw_scale)
    else:
        topo = backbone_topology(topology, hosts, rng, gw_scale=gw_scale)
    packages = [_package(rng, f"pkg-{i}") for i in range(5)] + [_package(rng, "storage", vnf_only=True)]
    gateways = [h.name for h in topo.hosts if h.tier is Tier.GATEWAY]
    demands = tuple(
        make_slice(f"bench/s{i:04d}", topo, nfs_per_slice, rng, gateways, packages) for i in range(slices)
    )
    return Problem(topo, demands)


def with_current(problem: Problem, placed: Mapping[str, Mapping[str, Assignment]]) -> Problem:
    """The same problem with each slice's current placement set (what runs now)."""
    return dataclasses.replace(
        problem,
        slices=tuple(dataclasses.replace(s, current=dict(placed.get(s.key, {}))) for s in problem.slices),
    )


def change_load(problem: Problem, fraction: float, seed: int = 0) -> tuple[Problem, set[str]]:
    """Replace ``fraction`` of the slices with fresh ones (new keys, no current placement)."""
    rng = random.Random(f"churn/{seed}")
    n = max(1, int(len(problem.slices) * fraction))
    gone = set(rng.sample([s.key for s in problem.slices], n))
    packages = [_package(rng, f"pkg-{i}") for i in range(5)] + [_package(rng, "storage", vnf_only=True)]
    gateways = [h.name for h in problem.topology.hosts if h.tier is Tier.GATEWAY]
    nfs = max(len(s.nfs) - len(s.paths) + 1 for s in problem.slices)
    fresh = tuple(
        make_slice(f"bench/new{i:04d}", problem.topology, nfs, rng, gateways, packages) for i in range(n)
    )
    kept = tuple(s for s in problem.slices if s.key not in gone)
    return dataclasses.replace(problem, slices=kept + fresh), gone


def wildfire() -> Problem:
    """Seed 000's wildfire slice, built from examples/wildfire by the control plane's own validation
    and expansion, so the benchmark places exactly what `flyslice plan examples/wildfire` places."""
    from pathlib import Path

    from flyslice.operator.intake.validation import validate_paths
    from flyslice.operator.planning import expansion, service_choice

    result = validate_paths([str(Path(__file__).resolve().parents[1] / "examples" / "wildfire")])
    catalog = result.catalog
    demands = []
    for s in catalog.slices.values():
        service = service_choice.choose(catalog, s).service
        assert service is not None, f"examples/wildfire: {s.key} has no service"
        demands.append(expansion.slice_demand(catalog, s, service))
    return expansion.problem(catalog, demands)
