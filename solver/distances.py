"""Shortest-path latency between hosts, computed lazily and truncated.

All-pairs Dijkstra over a 1000-host topology costs seconds in pure Python, yet a
placement only ever asks for distances between hosts within a latency budget of
each other. We run single-source Dijkstra with a cutoff on demand and cap every
distance at ``cap`` (any value beyond the largest budget is as good as infinity).
``min(d, cap)`` is still a metric, which the ILP's triangle-inequality latency
constraints rely on.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from heapq import heappop, heappush
from itertools import count
from typing import TypeVar

import networkx as nx

from .model import Topology

_T = TypeVar("_T")

#: Per topology object (by identity: hashing a 1000-host topology costs more than a lookup).
_CACHE: dict[int, dict[float, Distances]] = {}


def per_topology(topology: Topology, cache: dict[int, _T]) -> _T | None:
    return cache.get(id(topology))


def remember(topology: Topology, cache: dict[int, _T], value: _T) -> _T:
    """Store ``value`` for this topology object until it is garbage-collected."""
    if id(topology) not in cache:
        weakref.finalize(topology, cache.pop, id(topology), None)
    cache[id(topology)] = value
    return value


class Distances:
    def __init__(self, topology: Topology, cutoff: float) -> None:
        self.topology = topology
        self.cutoff = cutoff
        #: Every distance above ``cutoff`` (or unreachable) reads as this.
        self.cap = cutoff + 1.0
        self._graph = topology.graph
        #: Each host's neighbours and link latencies, in the graph's adjacency order (see _dijkstra).
        self._adj: dict[str, list[tuple[str, float]]] = {
            v: [(u, data.get("latency_ms", 1)) for u, data in nbrs.items()]
            for v, nbrs in self._graph.adjacency()
        }
        self._rows: dict[str, Mapping[str, float]] = {}
        self._nearest: dict[frozenset[str], Mapping[str, float]] = {}
        # Reuse the all-pairs table when someone already paid for it.
        self._all_pairs = topology.__dict__.get("latency_ms")

    def row(self, src: str) -> Mapping[str, float]:
        """Distances from ``src`` to every host within the cutoff."""
        row = self._rows.get(src)
        if row is None:
            if self._all_pairs is not None:
                row = self._all_pairs.get(src, {})
            elif src in self._graph:
                row = _dijkstra(self._adj, [src], self.cutoff)
            else:
                row = {}
            self._rows[src] = row
        return row

    def nearest(self, targets: frozenset[str]) -> Mapping[str, float]:
        """Distance from every host (within the cutoff) to the closest of ``targets``."""
        found = self._nearest.get(targets)
        if found is None:
            sources = [t for t in targets if t in self._graph]
            found = _dijkstra(self._adj, sources, self.cutoff) if sources else {}
            self._nearest[targets] = found
        return found

    def get(self, a: str, b: str) -> float:
        if a == b:
            return 0.0
        d = self.row(a).get(b)
        return self.cap if d is None or d > self.cutoff else float(d)

    def true(self, a: str, b: str) -> float | None:
        """The uncapped distance, ``None`` when not connected (for reporting)."""
        if a == b:
            return 0.0
        d = self.row(a).get(b)
        if d is not None and d <= self.cutoff:
            return float(d)
        try:
            return float(nx.dijkstra_path_length(self._graph, a, b, weight="latency_ms"))
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            return None


def _dijkstra(
    adj: Mapping[str, list[tuple[str, float]]], sources: Iterable[str], cutoff: float
) -> dict[str, float]:
    """networkx's ``multi_source_dijkstra_path_length`` with a cutoff, step for step (same sums in
    the same order, same tie-breaking), so the distances are bit-identical; without its per-edge
    weight-function call and attribute lookups, which made it most of the pruning time on 1000
    hosts. Sources must be nodes of the graph."""
    dist: dict[str, float] = {}
    seen: dict[str, float] = {}
    c = count()
    fringe: list[tuple[float, int, str]] = []
    for source in sources:
        seen[source] = 0
        heappush(fringe, (0, next(c), source))
    while fringe:
        d, _, v = heappop(fringe)
        if v in dist:
            continue
        dist[v] = d
        for u, cost in adj[v]:
            vu = d + cost
            if vu > cutoff or u in dist:
                continue
            if u not in seen or vu < seen[u]:
                seen[u] = vu
                heappush(fringe, (vu, next(c), u))
    return dist


def distances_for(topology: Topology, cutoff: float) -> Distances:
    """A shared, cached :class:`Distances` for this topology and cutoff."""
    by_cutoff = per_topology(topology, _CACHE)
    if by_cutoff is None:
        by_cutoff = remember(topology, _CACHE, {})
    found = by_cutoff.get(cutoff)
    if found is None:
        found = by_cutoff[cutoff] = Distances(topology, cutoff)
    return found
