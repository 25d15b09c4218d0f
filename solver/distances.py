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
from collections.abc import Mapping
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
                row = nx.single_source_dijkstra_path_length(
                    self._graph, src, cutoff=self.cutoff, weight="latency_ms"
                )
            else:
                row = {}
            self._rows[src] = row
        return row

    def nearest(self, targets: frozenset[str]) -> Mapping[str, float]:
        """Distance from every host (within the cutoff) to the closest of ``targets``."""
        found = self._nearest.get(targets)
        if found is None:
            sources = [t for t in targets if t in self._graph]
            found = (
                nx.multi_source_dijkstra_path_length(
                    self._graph, sources, cutoff=self.cutoff, weight="latency_ms"
                )
                if sources
                else {}
            )
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


def distances_for(topology: Topology, cutoff: float) -> Distances:
    """A shared, cached :class:`Distances` for this topology and cutoff."""
    by_cutoff = per_topology(topology, _CACHE)
    if by_cutoff is None:
        by_cutoff = remember(topology, _CACHE, {})
    found = by_cutoff.get(cutoff)
    if found is None:
        found = by_cutoff[cutoff] = Distances(topology, cutoff)
    return found
