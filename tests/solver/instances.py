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
