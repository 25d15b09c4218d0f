"""The solver refuses numbers no placement can use (NaN, infinities, integers beyond a float) with a
ValueError naming where they are, before PuLP or a MILP solver sees them (issue 9, part 3)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest

from flyslice.solver import Flavor, Problem, Resources, SliceDemand, Weights, baseline, place

from .instances import wildfire_problem

NAN, INF = math.nan, math.inf


def _host(problem: Problem, name: str, **changes: Any) -> Problem:
    hosts = tuple(dataclasses.replace(h, **changes) if h.name == name else h for h in problem.topology.hosts)
    return dataclasses.replace(problem, topology=dataclasses.replace(problem.topology, hosts=hosts))


def _link(problem: Problem, index: int, **changes: Any) -> Problem:
    links = list(problem.topology.links)
    links[index] = dataclasses.replace(links[index], **changes)
    return dataclasses.replace(problem, topology=dataclasses.replace(problem.topology, links=tuple(links)))


def _slice(problem: Problem, change: Callable[[SliceDemand], SliceDemand]) -> Problem:
    (s,) = problem.slices
    return dataclasses.replace(problem, slices=(change(s),))


def _processing(s: SliceDemand) -> SliceDemand:
    nf = s.nfs[0]
    flavors = {
        f: dataclasses.replace(d, processing_latency_ms=NAN) if f == Flavor.FNF else d
        for f, d in nf.flavors.items()
    }
    return dataclasses.replace(s, nfs=(dataclasses.replace(nf, flavors=flavors), *s.nfs[1:]))


BROKEN: dict[str, tuple[Callable[[Problem], Problem], str]] = {
    "host availability nan": (
        lambda p: _host(p, "cloud", availability=NAN),
        "host 'cloud': availability is nan",
    ),
    "host cost inf": (lambda p: _host(p, "fog-1", cost=INF), "host 'fog-1': cost is inf"),
    "host memory beyond a float": (
        lambda p: _host(p, "gw-1", capacity=Resources(1000, 10**400)),
        "host 'gw-1': capacity.memory_bytes is an integer of about 401 digits",
    ),
    "link bandwidth nan": (
        lambda p: _link(p, 2, bandwidth_mbps=NAN),
        "link fog-1-cloud: bandwidth_mbps is nan",
    ),
    "link latency inf": (lambda p: _link(p, 0, latency_ms=INF), "link gw-1-fog-1: latency_ms is inf"),
    "background nan": (
        lambda p: dataclasses.replace(p, background={"cloud": Resources(NAN, 0)}),  # type: ignore[arg-type]
        "background of 'cloud'.cpu_millis is nan",
    ),
    "weight inf": (
        lambda p: dataclasses.replace(p, weights=Weights(rejection=INF)),
        "weights.rejection is inf",
    ),
    "availability target nan": (
        lambda p: _slice(p, lambda s: dataclasses.replace(s, availability_target=NAN)),
        "slice default/wildfire: availability_target is nan",
    ),
    "processing latency nan": (
        lambda p: _slice(p, _processing),
        "slice default/wildfire: NF 'broker-gw@gw-1': flavors[fnf]: processing_latency_ms is nan",
    ),
    "budget inf": (
        lambda p: _slice(
            p,
            lambda s: dataclasses.replace(
                s, paths=(dataclasses.replace(s.paths[0], budget_ms=INF), *s.paths[1:])
            ),
        ),
        "slice default/wildfire: path 'gw-1:broker-gw->db': budget_ms is inf",
    ),
    "edge bandwidth nan": (
        lambda p: _slice(
            p,
            lambda s: dataclasses.replace(
                s, edges=(dataclasses.replace(s.edges[0], bandwidth_mbps=NAN), *s.edges[1:])
            ),
        ),
        "slice default/wildfire: edge broker-gw@gw-1->sp-gw@gw-1: bandwidth_mbps is nan",
    ),
}


@pytest.mark.parametrize("entry", [place, baseline], ids=["place", "baseline"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_non_finite_numbers_are_refused_with_where_they_are(
    case: str, entry: Callable[[Problem], object]
) -> None:
    broken, where = BROKEN[case]
    with pytest.raises(ValueError) as err:
        entry(broken(wildfire_problem()))
    assert str(err.value) == f"the placement problem holds numbers that are not finite: {where}"


def test_finite_extremes_are_placed() -> None:
    # The largest numbers the CRDs allow on the cloud; the placement must simply work.
    p = _host(wildfire_problem(priority=2**31 - 1), "cloud", capacity=Resources(10**9, 2**49), cost=1000.0)
    p = _link(p, 2, latency_ms=1.0, bandwidth_mbps=1e7)
    assert place(p).slices["default/wildfire"].admitted
