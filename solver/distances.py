"""Shortest-path latency between hosts, computed lazily and truncated.

All-pairs Dijkstra over a 1000-host topology costs seconds in pure Python, yet a
placement only ever asks for distances between hosts within a latency budget of
each other. Rows are computed on demand, a block of sources at a time, and every
distance is capped at ``cap`` (any value beyond the largest budget is as good as infinity).
``min(d, cap)`` is still a metric, which the ILP's triangle-inequality latency
constraints rely on.

The rows come from a vectorised Bellman-Ford over numpy arrays (:func:`_relax`), not a Python
heap: on the 1000-host benchmark the per-source Dijkstra took 0.8-1.5 s of each of the baseline
heuristic and the pruning at load ~4 (about half of both under cProfile at load ~10). The sweeps
ignore the cutoff (rows are cut afterwards), so on topologies far wider than the budgets they do
more work than a cut-off Dijkstra would. The values are bit-identical to Dijkstra's (tests/solver/
test_distances_exact.py): both compute every distance as the least, over paths, of the
latencies summed from the source outward (``d[v] + w``, one IEEE double addition per edge), and
with non-negative weights that least value is the same whichever order the relaxations run in.
Only the rows' key order differs (host order, not distance order); no caller iterates a row.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from heapq import heappop, heappush
from itertools import count
from typing import TypeVar

import networkx as nx

try:
    import numpy as np

    HAVE_NUMPY = True
except ImportError:  # numpy comes with the [highs] extra (highspy needs it), not with flyslice itself:
    HAVE_NUMPY = False  # without it every row is a Dijkstra (same distances, slower on big topologies)

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
        self._edges = _Edges.of(self._adj)

    def row(self, src: str) -> Mapping[str, float]:
        """Distances from ``src`` to every host within the cutoff."""
        row = self._rows.get(src)
        if row is None:
            if self._all_pairs is not None:
                row = self._all_pairs.get(src, {})
            elif src not in self._graph:
                row = {}
            elif self._edges is None:
                row = _dijkstra(self._adj, [src], self.cutoff)
            else:
                self._rows.update(self._edges.rows(src, self._rows, self.cutoff))
                row = self._rows[src]
            self._rows[src] = row
        return row

    def nearest(self, targets: frozenset[str]) -> Mapping[str, float]:
        """Distance from every host (within the cutoff) to the closest of ``targets``."""
        found = self._nearest.get(targets)
        if found is None:
            sources = [t for t in targets if t in self._graph]
            if not sources:
                found = {}
            elif self._edges is None:
                found = _dijkstra(self._adj, sources, self.cutoff)
            else:
                found = self._edges.nearest(sources, self.cutoff)
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


#: Sources per numpy block: the (sources x directed edges) working array stays near 2 MB, in cache
#: (64 sources per block measured 2-3x faster per source than 256 on the 1000-host benchmark).
_BLOCK_CELLS = 262_144
_MAX_BLOCK = 64


class _Edges:
    """The directed edges as arrays, grouped by head, for :func:`_relax`."""

    def __init__(self, names: list[str], tail: np.ndarray, head: np.ndarray, weight: np.ndarray) -> None:
        self.names = names
        self.index = {v: i for i, v in enumerate(names)}
        order = np.argsort(head, kind="stable")
        self.tail, self.head, self.weight = tail[order], head[order], weight[order]
        # The first edge of each head's group (reduceat segments) and that head.
        self.starts = np.flatnonzero(np.r_[True, self.head[1:] != self.head[:-1]]) if len(head) else head
        self.heads = self.head[self.starts]
        self.block = max(1, min(_MAX_BLOCK, _BLOCK_CELLS // max(1, len(head))))

    @classmethod
    def of(cls, adj: Mapping[str, list[tuple[str, float]]]) -> _Edges | None:
        """``None`` (use :func:`_dijkstra`) when a weight is negative or not finite: Dijkstra's
        answer there depends on its visiting order, which the arrays do not reproduce."""
        if not HAVE_NUMPY:
            return None
        names = list(adj)
        index = {v: i for i, v in enumerate(names)}
        tail = [index[v] for v, nbrs in adj.items() for _ in nbrs]
        head = [index[u] for nbrs in adj.values() for u, _ in nbrs]
        try:
            weight = np.array([float(w) for nbrs in adj.values() for _, w in nbrs], dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if not (np.isfinite(weight).all() and (weight >= 0).all()):
            return None
        return cls(names, np.array(tail, dtype=np.intp), np.array(head, dtype=np.intp), weight)

    def rows(
        self, src: str, known: Mapping[str, Mapping[str, float]], cutoff: float
    ) -> dict[str, dict[str, float]]:
        """The rows of ``src``'s block of sources (host order) not in ``known``, ``src``'s included."""
        first = self.index[src] // self.block * self.block
        sources = [v for v in self.names[first : first + self.block] if v == src or v not in known]
        d = np.full((len(sources), len(self.names)), np.inf)
        d[np.arange(len(sources)), [self.index[v] for v in sources]] = 0.0
        _relax(d, self)
        return {v: self._row(d[r], [v], cutoff) for r, v in enumerate(sources)}

    def nearest(self, sources: list[str], cutoff: float) -> dict[str, float]:
        d = np.full((1, len(self.names)), np.inf)
        d[0, [self.index[v] for v in sources]] = 0.0
        _relax(d, self)
        return self._row(d[0], sources, cutoff)

    def _row(self, values: np.ndarray, sources: list[str], cutoff: float) -> dict[str, float]:
        keep = np.flatnonzero(values <= cutoff)
        row: dict[str, float] = dict(zip([self.names[i] for i in keep], values[keep].tolist(), strict=True))
        # Dijkstra's sources read as the integer 0 (its start value); keep that exactly.
        row.update(dict.fromkeys(sources, 0))
        return row


def _relax(d: np.ndarray, edges: _Edges) -> None:
    """Bellman-Ford in place on rows of start values (0 at sources, inf elsewhere), one Jacobi
    sweep over all edges at a time, until nothing changes: each candidate is ``d[tail] + w``, the
    same addition Dijkstra makes, and the fixed point is the least such sum over paths."""
    if not len(edges.head):
        return
    # Preallocated: fresh multi-megabyte arrays per sweep cost more than the arithmetic.
    cand = np.empty((d.shape[0], len(edges.tail)))
    best = np.empty((d.shape[0], len(edges.heads)))
    while True:
        np.take(d, edges.tail, axis=1, out=cand)
        np.add(cand, edges.weight, out=cand)
        np.minimum.reduceat(cand, edges.starts, axis=1, out=best)
        now = d[:, edges.heads]
        better = best < now
        if not better.any():
            return
        d[:, edges.heads] = np.where(better, best, now)


def distances_for(topology: Topology, cutoff: float) -> Distances:
    """A shared, cached :class:`Distances` for this topology and cutoff."""
    by_cutoff = per_topology(topology, _CACHE)
    if by_cutoff is None:
        by_cutoff = remember(topology, _CACHE, {})
    found = by_cutoff.get(cutoff)
    if found is None:
        found = by_cutoff[cutoff] = Distances(topology, cutoff)
    return found
