"""Problem instances for the solver tests, built directly from the model."""

from __future__ import annotations

import itertools
from typing import Any

from flyslice.solver import (
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


def wildfire_topology() -> Topology:
    hosts = (
        Host("cloud", Tier.CLOUD, frozenset({Flavor.VNF}), Resources(16000, 32 * Gi), 0.999, 1.0),
        Host("fog-1", Tier.FOG, frozenset({Flavor.VNF, Flavor.FNF}), Resources(4000, 4 * Gi), 0.99, 2.0),
        Host("gw-1", Tier.GATEWAY, frozenset({Flavor.FNF}), Resources(1000, 512 * Mi), 0.98, 4.0),
        Host("gw-2", Tier.GATEWAY, frozenset({Flavor.FNF}), Resources(1000, 512 * Mi), 0.98, 4.0),
    )
    links = (
        Link("gw-1", "fog-1", 1.0, 100.0),
        Link("gw-2", "fog-1", 1.0, 100.0),
        Link("fog-1", "cloud", 4.0, 1000.0),
    )
    return Topology(hosts, links)


def _flavors(
    vnf: tuple[int, int, float] | None, fnf: tuple[int, int, float] | None
) -> dict[Flavor, FlavorDemand]:
    out = {}
    if vnf:
        out[Flavor.VNF] = FlavorDemand(Flavor.VNF, Resources(vnf[0], vnf[1] * Mi), vnf[2])
    if fnf:
        out[Flavor.FNF] = FlavorDemand(Flavor.FNF, Resources(fnf[0], fnf[1] * Mi), fnf[2])
    return out


BROKER = _flavors((200, 128, 0.5), (50, 8, 0.2))
STREAM_PROCESSOR = _flavors((500, 256, 1.0), (100, 16, 0.5))
STORAGE = _flavors((500, 512, 1.5), None)


def wildfire_slice(
    key: str = "default/wildfire",
    attachments: tuple[str, ...] = ("gw-1", "gw-2"),
    budget_ms: float = 10.0,
    availability: float = 0.90,
    isolation: bool = False,
    priority: int = 0,
) -> SliceDemand:
    gw = frozenset({Tier.GATEWAY})
    fog = frozenset({Tier.FOG})
    cloud = frozenset({Tier.CLOUD})
    nfs: list[NFDemand] = []
    for att in attachments:
        nfs.append(NFDemand(f"broker-gw@{att}", "broker-gw", "broker", BROKER, att, gw))
        nfs.append(NFDemand(f"sp-gw@{att}", "sp-gw", "stream-processor", STREAM_PROCESSOR, att, gw))
    nfs += [
        NFDemand("broker-fog", "broker-fog", "broker", BROKER, None, fog),
        NFDemand("sp-fog", "sp-fog", "stream-processor", STREAM_PROCESSOR, None, fog),
        NFDemand("broker-cloud", "broker-cloud", "broker", BROKER, None, cloud),
        NFDemand("sp-cloud", "sp-cloud", "stream-processor", STREAM_PROCESSOR, None, cloud),
        NFDemand("db", "db", "storage", STORAGE, None, cloud),
    ]
    shared = ("broker-fog", "sp-fog", "broker-cloud", "sp-cloud", "db")
    edges: list[Edge] = []
    paths: list[BudgetedPath] = []
    for att in attachments:
        chain = (f"broker-gw@{att}", f"sp-gw@{att}", *shared)
        for src, dst in itertools.pairwise(chain):
            e = Edge(src, dst)
            if e not in edges:
                edges.append(e)
        paths.append(BudgetedPath(f"{att}:broker-gw->db", att, chain, budget_ms))
    return SliceDemand(
        key=key,
        nfs=tuple(nfs),
        edges=tuple(edges),
        paths=tuple(paths),
        availability_target=availability,
        isolation_required=isolation,
        priority=priority,
    )


def wildfire_problem(**slice_args: Any) -> Problem:
    return Problem(wildfire_topology(), (wildfire_slice(**slice_args),))


def tiered_problem(
    hosts: int,
    slices: int,
    nfs: int,
    seed: int = 0,
    gw_scale: float = 1.0,
    priorities: tuple[int, ...] = (0, 0, 1, 2),
) -> Problem:
    """A seeded tiered tree (clouds in a ring, fogs under clouds, gateways under fogs) with chain slices.

    Each slice: a gateway-tier ingest NF at its attachment, tier-free middle NFs (they may go to any
    of the fogs, clouds and fNF gateways within budget: many options each) and a cloud-tier store.
    ``gw_scale`` < 1 shrinks the gateways so that not every slice fits.
    """
    import random

    rng = random.Random(f"tiered/{hosts}/{slices}/{nfs}/{seed}/{gw_scale}")
    n_cloud = max(1, hosts // 25)
    n_fog = max(2, hosts // 6)
    n_gw = max(1, hosts - n_cloud - n_fog)
    out: list[Host] = []
    links: list[Link] = []
    for i in range(n_cloud):
        out.append(
            Host(f"cloud-{i}", Tier.CLOUD, frozenset({Flavor.VNF}), Resources(64000, 128 * Gi), 0.999, 1.0)
        )
        if i:
            links.append(Link(f"cloud-{i - 1}", f"cloud-{i}", 2.0, 10000.0))
    for i in range(n_fog):
        out.append(
            Host(
                f"fog-{i}", Tier.FOG, frozenset({Flavor.VNF, Flavor.FNF}), Resources(4000, 8 * Gi), 0.995, 2.0
            )
        )
        links.append(Link(f"fog-{i}", f"cloud-{i % n_cloud}", round(rng.uniform(3.0, 6.0), 2), 1000.0))
        if i:
            # Neighbouring fogs are linked, so tier-free NFs have many hosts within budget.
            links.append(Link(f"fog-{i - 1}", f"fog-{i}", round(rng.uniform(1.0, 2.5), 2), 1000.0))
    for i in range(n_gw):
        runtimes = frozenset({Flavor.VNF, Flavor.FNF}) if rng.random() < 0.2 else frozenset({Flavor.FNF})
        cap = Resources(int(1000 * gw_scale), int(Gi * gw_scale))
        out.append(Host(f"gw-{i}", Tier.GATEWAY, runtimes, cap, 0.985, 4.0))
        links.append(Link(f"gw-{i}", f"fog-{i % n_fog}", round(rng.uniform(0.5, 2.0), 2), 100.0))
    topo = Topology(tuple(out), tuple(links))

    def package(vnf_only: bool = False) -> dict[Flavor, FlavorDemand]:
        vnf = (rng.randrange(100, 601, 50), rng.choice([64, 128, 256]), round(rng.uniform(0.3, 1.2), 2))
        fnf = (rng.randrange(20, 151, 10), rng.choice([4, 8, 16]), round(rng.uniform(0.1, 0.5), 2))
        return _flavors(vnf, None if vnf_only else fnf)

    packages = [package() for _ in range(4)]
    store = package(vnf_only=True)
    gateways = [f"gw-{i}" for i in range(n_gw)]
    demands: list[SliceDemand] = []
    for k in range(slices):
        att = rng.choice(gateways)
        chain = [NFDemand(f"ingest@{att}", "ingest", "pkg-0", packages[0], att, frozenset({Tier.GATEWAY}))]
        chain += [NFDemand(f"nf{i}", f"nf{i}", f"pkg-{i}", packages[i % 3 + 1]) for i in range(1, nfs - 1)]
        chain.append(NFDemand("store", "store", "storage", store, None, frozenset({Tier.CLOUD})))
        ids = tuple(nf.id for nf in chain)
        demands.append(
            SliceDemand(
                key=f"ns/s{k:03d}",
                nfs=tuple(chain),
                edges=tuple(Edge(a, b) for a, b in itertools.pairwise(ids)),
                paths=(BudgetedPath(f"{att}:ingest->store", att, ids, float(rng.choice([12, 15, 20]))),),
                availability_target=rng.choice([0.0, 0.9]),
                priority=rng.choice(priorities),
            )
        )
    return Problem(topo, tuple(demands))


def detour_problem(fogs: int = 14, relays: int = 15, users: int = 5, slices: int = 10) -> Problem:
    """Chains that turn back toward the user, where no latency pivot cut is exact up front.

    Every gateway is a leaf of fog-0 (1 ms); the fogs form a chain (0.5 ms steps) up to one cloud.
    User gateways ``u-*`` run vnf, relay gateways ``gw-*`` run fnf only, fogs and cloud vnf only.
    Each slice runs ``user -> A (fnf: a relay gateway) -> B (vnf: a user gateway, fog or cloud)``.
    A's hosts are leaves, so only the attachment pivot is cut at first, and from the attachment,
    A on a relay 2 ms away makes every B within 2 ms look free (it is 1-2 ms): each first answer
    violates a latency cut, and lazy cuts must repair it. A and B each have more than
    ``ilp.EXACT_PIVOTS`` hosts, so neither side is cut exactly up front.
    """
    hosts: list[Host] = [Host("cloud", Tier.CLOUD, frozenset({Flavor.VNF}), Resources(64000, 64 * Gi), 0.999)]
    links: list[Link] = [Link(f"fog-{fogs - 1}", "cloud", 2.0)]
    for i in range(fogs):
        hosts.append(Host(f"fog-{i}", Tier.FOG, frozenset({Flavor.VNF}), Resources(4000, 8 * Gi), 0.995, 2.0))
        if i:
            links.append(Link(f"fog-{i - 1}", f"fog-{i}", 0.5))
    for i in range(users):
        hosts.append(Host(f"u-{i}", Tier.GATEWAY, frozenset({Flavor.VNF}), Resources(1000, Gi), 0.985, 4.0))
        links.append(Link(f"u-{i}", "fog-0", 1.0))
    for i in range(relays):
        hosts.append(Host(f"gw-{i}", Tier.GATEWAY, frozenset({Flavor.FNF}), Resources(1000, Gi), 0.985, 4.0))
        links.append(Link(f"gw-{i}", "fog-0", 1.0))
    a = _flavors(None, (50, 8, 0.2))
    b = _flavors((300, 128, 0.5), None)
    demands = []
    for k in range(slices):
        user = f"u-{k % users}"
        nfs = (NFDemand("a", "a", "pkg-a", a), NFDemand("b", "b", "pkg-b", b))
        path = BudgetedPath(f"{user}:a->b", user, ("a", "b"), 20.0)
        demands.append(SliceDemand(f"ns/d{k:02d}", nfs, (Edge("a", "b"),), (path,)))
    return Problem(Topology(tuple(hosts), tuple(links)), tuple(demands))
