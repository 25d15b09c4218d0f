"""The numpy distance rows (distances._Edges, _relax) equal the heap Dijkstra's bit for bit.

``_dijkstra`` is networkx's multi-source Dijkstra step for step (tests/solver/test_fast_paths.py
checks that against networkx itself); here it is the reference for the arrays on seeded random
graphs with awkward decimal latencies (sums that round), zero and integer latencies, equal-length
detours, several components, isolated hosts, cutoffs that cut paths, more hosts than one block of
sources, and rows asked for out of order. A float difference in the last bit fails the test (dict
equality compares floats exactly).
"""

from __future__ import annotations

import random

import networkx as nx
import pytest

from flyslice.solver import distances
from flyslice.solver.distances import _dijkstra, _Edges


def _graph(seed: int, n: int) -> nx.Graph:
    rng = random.Random(seed)
    g: nx.Graph = nx.random_labeled_tree(n, seed=seed) if n > 1 else nx.empty_graph(n)
    g = nx.relabel_nodes(g, {i: f"h{i:04d}" for i in g.nodes})
    nodes = sorted(g.nodes)
    for _ in range(n // 3):  # cycles, so several paths compete
        a, b = rng.sample(nodes, 2)
        g.add_edge(a, b)
    for a, b in g.edges:
        kind = rng.random()
        if kind < 0.1:
            g.edges[a, b]["latency_ms"] = 0.0
        elif kind < 0.2:
            g.edges[a, b]["latency_ms"] = rng.randint(1, 5)
        elif kind < 0.25:
            pass  # no latency: reads as 1
        else:
            g.edges[a, b]["latency_ms"] = round(rng.uniform(0.05, 3.0), rng.choice([1, 2, 3]))
    # A second component and an isolated host: unreachable rows must match too.
    g.add_edge("z1", "z2", latency_ms=0.3)
    g.add_edge("z2", "z3", latency_ms=0.7)
    g.add_node("lonely")
    return g


def _adj(g: nx.Graph) -> dict[str, list[tuple[str, float]]]:
    # As Distances builds it.
    return {v: [(u, d.get("latency_ms", 1)) for u, d in nbrs.items()] for v, nbrs in g.adjacency()}


@pytest.mark.parametrize(
    ("seed", "n", "cutoff"), [(1, 40, 100.0), (2, 150, 6.5), (3, 300, 3.0), (4, 90, 0.5)]
)
def test_rows_and_nearest_equal_dijkstra_bit_for_bit(seed: int, n: int, cutoff: float) -> None:
    g = _graph(seed, n)
    adj = _adj(g)
    edges = _Edges.of(adj)
    assert edges is not None
    nodes = list(adj)
    rng = random.Random(seed)
    order = nodes[:]
    rng.shuffle(order)
    known: dict[str, dict[str, float]] = {}
    for src in order:
        if src not in known:
            known.update(edges.rows(src, known, cutoff))
        assert known[src] == _dijkstra(adj, [src], cutoff), src
    for size in (1, 3, n // 4):
        sources = rng.sample(nodes, size)
        assert edges.nearest(sources, cutoff) == _dijkstra(adj, sources, cutoff)


def test_a_block_computes_only_rows_not_yet_known() -> None:
    g = _graph(5, 200)
    adj = _adj(g)
    edges = _Edges.of(adj)
    assert edges is not None
    nodes = list(adj)
    first = edges.rows(nodes[0], {}, 50.0)
    # One block of sources at a time, the requested one included, the known ones skipped.
    assert nodes[0] in first and 1 < len(first) <= distances._MAX_BLOCK
    again = edges.rows(nodes[1], first, 50.0)
    assert set(again) == {nodes[1]}


def test_negative_or_missing_weights_fall_back_to_the_heap() -> None:
    assert _Edges.of({"a": [("b", -1.0)], "b": [("a", -1.0)]}) is None
    assert _Edges.of({"a": [("b", float("nan"))], "b": [("a", float("nan"))]}) is None
    assert _Edges.of({"a": [("b", None)], "b": [("a", None)]}) is None  # type: ignore[list-item]
