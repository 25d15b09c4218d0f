"""The fast greedy baseline, pruning and distances give exactly what the straightforward versions gave.

The reference implementations below are the code these replaced (commit 0837813), kept verbatim
in spirit: networkx's Dijkstra for distance rows, a full sort by closeness for each preference list,
``Resources`` arithmetic for the fit check, and per-slice pruning recomputing everything. They run
on seeded instances of 30-200 hosts (the product-path generator's and the tiered test trees), with
free capacity both ample and binding (what is left after the greedy), running placements and an
all-pairs latency table, and the outputs must be equal: same admitted set and assignments, same
rejection reasons, same options in the same order, same distances.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path

import networkx as nx
import pytest

from flyslice.solver import Assignment, Problem, Resources, SliceDemand
from flyslice.solver.baseline import _closeness, greedy, nf_order, priority_order, user_anchors
from flyslice.solver.candidates import (
    Option,
    Pruner,
    drop_dominated,
    eligible,
    fitting,
    path_slack,
    prune,
    static_options,
)
from flyslice.solver.distances import Distances
from flyslice.solver.evaluation import link_load, max_budget, violations

from .instances import tiered_problem

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from solver_instances import instance, with_current

_PAIR_LIMIT = 400


class RefDistances(Distances):
    """Rows and nearest-distances straight from networkx, as before."""

    def row(self, src: str) -> Mapping[str, float]:
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


def ref_greedy(
    problem: Problem,
    slices: list[SliceDemand],
    free: Mapping[str, Resources],
    link_free: Mapping[frozenset[str], float],
    dist: Distances,
) -> tuple[dict[str, dict[str, Assignment]], dict[str, str]]:
    left = dict(free)
    links = dict(link_free)
    admitted: dict[str, dict[str, Assignment]] = {}
    rejected: dict[str, str] = {}
    for s in priority_order(slices):
        anchors = user_anchors(s)
        used: dict[str, Resources] = {}
        chosen: dict[str, Assignment] = {}
        why = ""
        for nf_id in nf_order(s):
            nf = s.nf_by_id[nf_id]
            users = tuple(anchors.get(nf_id, ()))
            prefs = sorted(
                eligible(problem.topology, s, nf), key=lambda hf: _closeness(hf[0], hf[1], users, dist)
            )
            pick = None
            for host, flavor in prefs:
                need = nf.flavors[flavor].resources
                if (used.get(host.name, Resources()) + need).fits_in(left[host.name]):
                    pick = (host.name, flavor, need)
                    break
            if pick is None:
                why = f"baseline: no host with room and a suitable runtime for NF {nf_id}"
                break
            chosen[nf_id] = Assignment(pick[0], pick[1])
            used[pick[0]] = used.get(pick[0], Resources()) + pick[2]
        if why:
            rejected[s.key] = why
            continue
        broken = violations(problem, s, chosen, left, dist)
        load = link_load(problem, s, chosen, dist) if links else {}
        broken += [
            f"link {'-'.join(sorted(link))} lacks bandwidth ({mbps:g} Mbit/s needed, {links[link]:g} free)"
            for link, mbps in load.items()
            if link in links and mbps > links[link] + 1e-6
        ]
        if broken:
            rejected[s.key] = "baseline: greedy placement rejected: " + "; ".join(broken)
            continue
        for host_name, r in used.items():
            left[host_name] = left[host_name] - r
        for link, mbps in load.items():
            if link in links:
                links[link] -= mbps
        admitted[s.key] = chosen
    return admitted, rejected


def _min_proc(options: list[Option]) -> dict[str, float]:
    best: dict[str, float] = {}
    for o in options:
        if o.processing_ms < best.get(o.host, math.inf):
            best[o.host] = o.processing_ms
    return best


def ref_path_slack(
    slice_: SliceDemand, options: Mapping[str, list[Option]], dist: Distances
) -> dict[str, dict[str, float]]:
    slack: dict[str, dict[str, float]] = {}
    cap = dist.cap
    for path in slice_.paths:
        steps = [_min_proc(options[nf_id]) for nf_id in path.nfs]
        if not steps:
            continue
        if not all(steps):
            for i, nf_id in enumerate(path.nfs):
                slack.setdefault(nf_id, {}).update(dict.fromkeys(steps[i], -math.inf))
            continue
        k = len(steps)
        least = [min(mp.values()) for mp in steps]
        before = [sum(least[:i]) for i in range(k)]
        after = [sum(least[i + 1 :]) for i in range(k)]
        att_row = dist.row(path.attachment)
        to_last = dist.nearest(frozenset(steps[-1]))
        fwd: list[dict[str, float]] = []
        bwd: list[dict[str, float]] = []
        for i, mp in enumerate(steps):
            fwd.append({h: att_row.get(h, cap) + before[i] + p for h, p in mp.items()})
            if i == k - 1:
                bwd.append(dict.fromkeys(mp, after[i]))
            else:
                bwd.append({h: to_last.get(h, cap) + after[i] for h in mp})
        for i in range(1, k):
            prev, mp = fwd[i - 1], steps[i]
            if len(prev) * len(mp) <= _PAIR_LIMIT:
                rows = {g: dist.row(g) for g in prev}
                for h, p in mp.items():
                    exact = min(e + (0.0 if g == h else rows[g].get(h, cap)) for g, e in prev.items()) + p
                    fwd[i][h] = max(fwd[i][h], exact)
        for i in range(k - 2, -1, -1):
            nxt, later = steps[i + 1], bwd[i + 1]
            if len(steps[i]) * len(nxt) <= _PAIR_LIMIT:
                rows = {g: dist.row(g) for g in nxt}
                for h in steps[i]:
                    exact = min(
                        (0.0 if g == h else rows[g].get(h, cap)) + p + later[g] for g, p in nxt.items()
                    )
                    bwd[i][h] = max(bwd[i][h], exact)
        for i, nf_id in enumerate(path.nfs):
            per_host = slack.setdefault(nf_id, {})
            f, b = fwd[i], bwd[i]
            for h in steps[i]:
                value = path.budget_ms - (f[h] + b[h])
                if value < per_host.get(h, math.inf):
                    per_host[h] = value
    return slack


def ref_prune(
    slice_: SliceDemand, problem: Problem, free: Mapping[str, Resources], dist: Distances
) -> dict[str, list[Option]]:
    topology = problem.topology
    options = {nf.id: fitting(static_options(slice_, nf, topology), free) for nf in slice_.nfs}
    for _ in range(3):
        slack = ref_path_slack(slice_, options, dist)
        changed = False
        for nf_id, per_host in slack.items():
            kept = [o for o in options[nf_id] if per_host.get(o.host, -1.0) >= -1e-9]
            changed |= len(kept) != len(options[nf_id])
            options[nf_id] = kept
        if not changed:
            break
    return {nf_id: drop_dominated(slice_, nf_id, opts) for nf_id, opts in options.items()}


def _cases() -> list[tuple[str, Problem]]:
    return [
        ("tree-30", instance(30, 40, 4, seed=1)),
        ("tree-80-overloaded", instance(80, 90, 5, seed=2, gw_scale=0.3)),
        ("mesh-120", instance(120, 80, 5, topology="mesh", seed=3)),
        ("tree-200", instance(200, 100, 5, seed=4)),
        ("tiered-60", tiered_problem(60, 50, 4, seed=5)),
        ("tiered-150-overloaded", tiered_problem(150, 120, 5, seed=6, gw_scale=0.4)),
    ]


CASES = _cases()


def _free(problem: Problem) -> dict[str, Resources]:
    return {h.name: h.capacity - problem.background.get(h.name, Resources()) for h in problem.topology.hosts}


def _links(problem: Problem) -> dict[frozenset[str], float]:
    return {
        frozenset((lk.a, lk.b)): float(lk.bandwidth_mbps)
        for lk in problem.topology.links
        if lk.bandwidth_mbps is not None
    }


def _dists(problem: Problem) -> tuple[Distances, Distances]:
    cutoff = max_budget(problem)
    return Distances(problem.topology, cutoff), RefDistances(problem.topology, cutoff)


@pytest.mark.parametrize(("name", "problem"), CASES, ids=[c[0] for c in CASES])
def test_distances_equal_networkx_bit_for_bit(name: str, problem: Problem) -> None:
    fast, ref = _dists(problem)
    hosts = [h.name for h in problem.topology.hosts]
    for h in hosts[:: max(1, len(hosts) // 40)]:
        assert dict(fast.row(h)) == dict(ref.row(h)), h
        # Key order is not compared: rows are in host order now (numpy Bellman-Ford, distances.py),
        # not Dijkstra's visiting order, and every caller only looks distances up.
    for targets in (frozenset(hosts[:3]), frozenset(hosts[-5:]), frozenset(hosts[::7])):
        assert dict(fast.nearest(targets)) == dict(ref.nearest(targets))


@pytest.mark.parametrize(("name", "problem"), CASES, ids=[c[0] for c in CASES])
def test_greedy_matches_the_reference(name: str, problem: Problem) -> None:
    fast, ref = _dists(problem)
    slices = list(problem.slices)
    got = greedy(problem, slices, _free(problem), _links(problem), fast)
    want = ref_greedy(problem, slices, _free(problem), _links(problem), ref)
    assert got == want
    # Against partly used capacity and with running placements the result is still the same.
    half = {h: Resources(r.cpu_millis // 2, r.memory_bytes // 2) for h, r in _free(problem).items()}
    moved = with_current(problem, dict(list(want[0].items())[::2]))
    fast2, ref2 = _dists(moved)
    assert greedy(moved, list(moved.slices), half, {}, fast2) == ref_greedy(
        moved, list(moved.slices), half, {}, ref2
    )


def test_greedy_matches_the_reference_on_an_all_pairs_table() -> None:
    """Rows from the topology's all-pairs table (distances beyond the cutoff): same order."""
    problem = instance(60, 50, 4, seed=7)
    problem.topology.latency_ms  # noqa: B018 -- computing it makes Distances use it
    fast, ref = _dists(problem)
    assert fast.row(problem.topology.hosts[0].name) is ref.row(problem.topology.hosts[0].name)
    slices = list(problem.slices)
    got = greedy(problem, slices, _free(problem), _links(problem), fast)
    assert got == ref_greedy(problem, slices, _free(problem), _links(problem), ref)


@pytest.mark.parametrize(("name", "problem"), CASES, ids=[c[0] for c in CASES])
def test_prune_matches_the_reference(name: str, problem: Problem) -> None:
    fast, ref = _dists(problem)
    ample = _free(problem)
    admitted, _ = greedy(problem, list(problem.slices), ample, _links(problem), fast)
    # Binding capacity: what is left once the greedy placed what it could.
    from flyslice.solver.evaluation import add_usage, slice_usage

    used: dict[str, Resources] = {}
    by_key = {s.key: s for s in problem.slices}
    for key, a in admitted.items():
        add_usage(used, slice_usage(by_key[key], a))
    tight = {h: r - used.get(h, Resources()) for h, r in ample.items()}
    for free in (ample, tight):
        pruner = Pruner(problem.topology, free, fast)
        for s in problem.slices:
            want = ref_prune(s, problem, free, ref)
            got = pruner.prune(s)
            assert got == want, s.key
            assert prune(s, problem.topology, free, fast) == want, s.key
            # Fresh lists: a caller widening one slice's options does not change another's.
            for opts in got.values():
                opts.append(Option("nowhere", next(iter(s.nfs[0].flavors)), Resources(), 0.0))
        assert pruner.prune(problem.slices[0]) == ref_prune(problem.slices[0], problem, free, ref)
    # Running placements keep their (otherwise dominated) flavours: still the same options.
    moved = with_current(problem, admitted)
    pruner = Pruner(moved.topology, tight, fast)
    for s in moved.slices:
        assert pruner.prune(s) == ref_prune(s, moved, tight, ref), s.key


@pytest.mark.parametrize(("name", "problem"), CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_path_slack_matches_the_reference(name: str, problem: Problem) -> None:
    fast, ref = _dists(problem)
    free = _free(problem)
    for s in problem.slices:
        options = {nf.id: fitting(static_options(s, nf, problem.topology), free) for nf in s.nfs}
        assert path_slack(s, options, fast) == ref_path_slack(s, options, ref)


def test_a_build_predicted_from_the_first_pass_can_skip_the_full_model() -> None:
    """Pruning is now much faster than building: the first pass's build rate, when known, decides."""
    import time

    from flyslice.solver.placement import _Clock, _time_to_build

    clock = _Clock(time.perf_counter(), 30.0)
    assert _time_to_build(clock, "no-such-solver", prune_seconds=1.0)
    assert not _time_to_build(clock, "no-such-solver", prune_seconds=1.0, build_predicted=40.0)
    assert _time_to_build(clock, "no-such-solver", prune_seconds=1.0, build_predicted=5.0)


def test_prune_shares_work_only_for_the_same_inputs() -> None:
    """prune() reuses its last Pruner for an equal free map, never for a changed one."""
    from flyslice.solver import candidates

    problem = instance(60, 30, 4, seed=8)
    fast, ref = _dists(problem)
    free = _free(problem)
    s = problem.slices[0]
    assert prune(s, problem.topology, free, fast) == ref_prune(s, problem, free, ref)
    shared = candidates._SHARED[0]
    assert prune(problem.slices[1], problem.topology, dict(free), fast) == ref_prune(
        problem.slices[1], problem, free, ref
    )
    assert candidates._SHARED[0] is shared  # an equal map: the same pruner
    # The caller changes its map in place: the hosts s could use no longer have room.
    for o in ref_prune(s, problem, free, ref)[s.nfs[-1].id]:
        free[o.host] = Resources()
    changed = prune(s, problem.topology, free, fast)
    assert candidates._SHARED[0] is not shared
    assert changed == ref_prune(s, problem, free, ref)
    assert changed[s.nfs[-1].id] == []
