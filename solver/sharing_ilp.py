"""The NF-sharing part of the placement MILP (docs/solver.md, "NF sharing": formulation).

Per (pool, host) with options in a flavour with sharing (tenant options ``x_t``, loads ``l_t``):

  ``n``       integer [0, K]  new instances of the pool opened on the host (pays the flavour's resources)
  ``w[t,E]``  binary          tenant ``t`` joins running instance ``E`` (incremental mode)

  sum_E w[t,E] <= x_t                             a tenant joins at most one running instance
  x_t - sum_E w[t,E] <= n                         a tenant in a new instance needs one open
  sum_t l_t (x_t - sum_E w[t,E]) <= cap * n       the new instances' load ...
  sum_t (x_t - sum_E w[t,E]) <= max_tenants * n   ... and tenants
  sum_t l_t w[t,E] <= spare_E, sum_t w[t,E] <= free slots of E

This *counts* instances: every packing into ``n`` instances satisfies it, so it is a relaxation, and
its bound is valid. After each solve the new tenants of every group are packed into ``n`` instances
(first fit decreasing, then an exhaustive search for small groups); a group whose answer does not
pack is made exact (:meth:`Group.make_exact`) and the model solved again, like the lazy latency cuts:

  ``o[k]``    binary  new instance ``k`` is open;  ``y[t,k]`` binary: tenant ``t`` is in it (``k <= t``)

  sum_k y[t,k] + sum_E w[t,E] = x_t,  y[t,k] <= o[k],  sum_t l_t y[t,k] <= cap o[k],
  sum_t y[t,k] <= max_tenants o[k],  o[k] >= o[k+1],  sum_k o[k] = n

Bins are numbered by their first tenant, so tenant ``t`` never needs a bin above ``t``; ``K`` is
:func:`instance_bound` (and how many instances fit on the host). A placement is only called optimal
when the last round's answer packed into the model's instance counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pulp

from .candidates import Option
from .matrix import MatrixModel, add_row_to
from .model import Assignment, Resources
from .sharing import Instance, Tenant, fits_load, label

Row = list[tuple[pulp.LpVariable, float]]

#: Groups with at most this many new tenants get an exhaustive packing search when first fit fails.
EXHAUSTIVE_PACKING_MAX = 16
#: ... which gives up (the group is then made exact) after this many search steps.
PACKING_STEPS = 20000


@dataclass(frozen=True)
class TenantOption:
    """An option in a flavour with sharing: a possible tenant of an instance of its pool on its host."""

    key: str
    nf_id: str
    option: Option
    x: pulp.LpVariable
    load: float


def instance_bound(loads: list[float], capacity: float, max_tenants: int | None) -> int:
    """How many instances an optimal packing of these tenants needs at most.

    Merging two instances whose tenants fit in one never makes a placement worse (one instance's
    resources less; same host, so same latency; not a migration), so some optimum has no two
    instances that could merge: at most one of its instances carries at most half the capacity and
    half of ``max_tenants``; each other one carries more than half of one of them, so there are fewer
    than ``2 x load / capacity`` plus ``2 x tenants / max_tenants`` of those.
    """
    n = len(loads)
    if n == 0:
        return 0
    bound = 1
    if capacity > 0:
        bound += math.floor(2 * math.fsum(loads) / capacity + 1e-9)
    if max_tenants is not None:
        bound += (2 * n) // max_tenants
    return min(n, bound)


def fit_count(free: Resources | None, need: Resources) -> float:
    """How many instances (with a tenant each) fit in ``free``; ``inf`` when nothing bounds it."""
    count = math.inf
    if free is None:
        return count
    for have, each in ((free.cpu_millis, need.cpu_millis), (free.memory_bytes, need.memory_bytes)):
        if each > 0:
            count = min(count, max(0, have // each))
    return count


def pack_into(loads: list[float], bins: int, capacity: float, max_tenants: int | None) -> list[int] | None:
    """A bin per item such that ``bins`` bins hold them (capacity, tenant limit); ``None`` when first
    fit decreasing fails and an exhaustive search (small groups only, bounded) finds none either."""
    order = sorted(range(len(loads)), key=lambda i: (-loads[i], i))
    limit = max_tenants if max_tenants is not None else len(loads)
    where = [-1] * len(loads)
    load = [0.0] * bins
    count = [0] * bins

    def room(b: int, i: int) -> bool:
        return count[b] < limit and fits_load(load[b] + loads[i], capacity)

    def put(b: int, i: int, sign: int) -> None:
        load[b] += sign * loads[i]
        count[b] += sign
        where[i] = b if sign > 0 else -1

    for i in order:
        b = next((b for b in range(bins) if room(b, i)), None)
        if b is None:
            break
        put(b, i, 1)
    else:
        return where
    if len(loads) > EXHAUSTIVE_PACKING_MAX:
        return None
    for b in range(bins):
        load[b], count[b] = 0.0, 0
    where[:] = [-1] * len(loads)
    steps = [0]

    def search(pos: int) -> bool:
        if pos == len(order):
            return True
        steps[0] += 1
        if steps[0] > PACKING_STEPS:
            return False
        i = order[pos]
        tried: set[tuple[float, int]] = set()
        for b in range(bins):
            state = (round(load[b], 9), count[b])
            if state in tried or not room(b, i):
                continue
            tried.add(state)
            put(b, i, 1)
            if search(pos + 1):
                return True
            put(b, i, -1)
        return False

    return where if search(0) else None


class Group:
    """The instances of one (pool, host) in the model (see the module docstring)."""

    def __init__(
        self,
        prob: pulp.LpProblem | MatrixModel,
        name: Callable[[str], str],
        members: list[TenantOption],
        capacity: float,
        running: list[Instance],
        free: Resources | None,
        enforce: bool,
        exact: bool,
    ) -> None:
        sharing = members[0].option.sharing
        assert sharing is not None
        self.prob, self.name = prob, name
        self.pool, self.host = sharing.pool, members[0].option.host
        self.capacity, self.max_tenants, self.enforce = capacity, sharing.max_tenants, enforce
        self.tenants = members
        self.running = running
        eligible = [t for t in members if fits_load(t.load, capacity)]
        for t in members:
            if not fits_load(t.load, capacity):
                # Over one instance's capacity on its own: no instance can take it.
                t.x.upBound = 0
        need = members[0].option.resources + sharing.per_tenant
        self.bound = int(
            min(instance_bound([t.load for t in eligible], capacity, self.max_tenants), fit_count(free, need))
        )
        #: The number of new instances (binary when at most one fits).
        self.count = prob.add_variable(
            name("n"), 0, self.bound, pulp.LpBinary if self.bound == 1 else pulp.LpInteger
        )
        #: Per tenant option: (label of a running instance, variable) it may join.
        self.joins_running: list[list[tuple[str, pulp.LpVariable]]] = [[] for _ in members]
        #: Per tenant option, once exact: (new instance index, variable).
        self.joins_new: list[list[tuple[int, pulp.LpVariable]]] = [[] for _ in members]
        self.opened: list[pulp.LpVariable] = []
        self.exact = False
        self._rows(eligible)
        if self.bound <= 1 and not running:
            # One new instance at most and none running: counting is packing already.
            self.exact = True
        elif exact:
            self.make_exact()

    def _add(self, row: Row, sense: int, rhs: float, prefix: str) -> None:
        add_row_to(self.prob, row, sense, rhs, self.name(prefix))

    def _new_part(self, i: int) -> Row:
        """``x_t - sum_E w[t,E]``: tenant ``i`` in a new instance."""
        row: Row = [(self.tenants[i].x, 1.0)]
        row.extend((w, -1.0) for _, w in self.joins_running[i])
        return row

    def _rows(self, eligible: list[TenantOption]) -> None:
        index = {id(t): i for i, t in enumerate(self.tenants)}
        per_running: list[list[tuple[pulp.LpVariable, float]]] = [[] for _ in self.running]
        for t in eligible:
            i = index[id(t)]
            for r, inst in enumerate(self.running):
                if inst.has_room(t.load) or not self.enforce:
                    w = self.prob.add_variable(self.name("w"), 0, 1, pulp.LpBinary)
                    self.joins_running[i].append((inst.label, w))
                    per_running[r].append((w, t.load))
            if self.joins_running[i]:
                self._add(
                    [(w, 1.0) for _, w in self.joins_running[i]] + [(t.x, -1.0)],
                    pulp.LpConstraintLE,
                    0.0,
                    "wone",
                )
            self._add([*self._new_part(i), (self.count, -1.0)], pulp.LpConstraintLE, 0.0, "open")
        if not self.enforce:
            return
        parts = [(index[id(t)], t.load) for t in eligible]
        if math.fsum(load for _, load in parts) > self.capacity + 1e-9:
            row: Row = [(v, c * load) for i, load in parts for v, c in self._new_part(i) if load]
            self._add([*row, (self.count, -self.capacity)], pulp.LpConstraintLE, 0.0, "ncap")
        if self.max_tenants is not None and len(parts) > self.max_tenants:
            row = [(v, c) for i, _ in parts for v, c in self._new_part(i)]
            self._add([*row, (self.count, -float(self.max_tenants))], pulp.LpConstraintLE, 0.0, "nten")
        for r, inst in enumerate(self.running):
            ws = per_running[r]
            spare = inst.capacity - inst.load
            if ws and math.fsum(load for _, load in ws) > spare + 1e-9:
                self._add(ws, pulp.LpConstraintLE, spare, "icap")
            slots = None if inst.max_tenants is None else inst.max_tenants - len(inst.tenants)
            if ws and slots is not None and len(ws) > slots:
                self._add([(w, 1.0) for w, _ in ws], pulp.LpConstraintLE, float(slots), "iten")

    def make_exact(self) -> None:
        """Add the instance-indexed rows (which tenant is in which new instance)."""
        if self.exact:
            return
        self.exact = True
        k_max = self.bound
        self.opened = [self.prob.add_variable(self.name("o"), 0, 1, pulp.LpBinary) for _ in range(k_max)]
        per_bin: list[list[tuple[pulp.LpVariable, float]]] = [[] for _ in range(k_max)]
        eligible = [i for i, t in enumerate(self.tenants) if t.x.upBound != 0]
        for pos, i in enumerate(eligible):
            t = self.tenants[i]
            for k in range(min(pos + 1, k_max)):
                y = self.prob.add_variable(self.name("y"), 0, 1, pulp.LpBinary)
                self.joins_new[i].append((k, y))
                per_bin[k].append((y, t.load))
                self._add([(y, 1.0), (self.opened[k], -1.0)], pulp.LpConstraintLE, 0.0, "join")
            row: Row = [(y, 1.0) for _, y in self.joins_new[i]]
            row.extend((w, 1.0) for _, w in self.joins_running[i])
            self._add([*row, (t.x, -1.0)], pulp.LpConstraintEQ, 0.0, "tenant")
        for k in range(k_max):
            served = per_bin[k]
            if self.enforce and math.fsum(load for _, load in served) > self.capacity + 1e-9:
                row = [(y, load) for y, load in served if load]
                self._add([*row, (self.opened[k], -self.capacity)], pulp.LpConstraintLE, 0.0, "icap")
            if self.enforce and self.max_tenants is not None and len(served) > self.max_tenants:
                row = [(y, 1.0) for y, _ in served]
                self._add(
                    [*row, (self.opened[k], -float(self.max_tenants))], pulp.LpConstraintLE, 0.0, "iten"
                )
            if k + 1 < k_max:
                self._add(
                    [(self.opened[k], 1.0), (self.opened[k + 1], -1.0)], pulp.LpConstraintGE, 0.0, "sym"
                )
        self._add([(o, 1.0) for o in self.opened] + [(self.count, -1.0)], pulp.LpConstraintEQ, 0.0, "count")

    def new_label(self, k: int) -> str:
        return label(self.pool, self.host, f"new{k}")

    def answer(self) -> tuple[dict[Tenant, str], bool]:
        """The solved answer's instance (ledger label) of every tenant, and whether the new tenants
        pack into the model's instance count (always, once exact)."""
        out: dict[Tenant, str] = {}
        fresh: list[int] = []
        for i, t in enumerate(self.tenants):
            if (t.x.varValue or 0.0) < 0.5:
                continue
            joined = [lbl for lbl, w in self.joins_running[i] if (w.varValue or 0.0) > 0.5]
            if joined:
                out[(t.key, t.nf_id)] = joined[0]
            elif self.exact and self.joins_new[i]:
                k = max(self.joins_new[i], key=lambda kv: kv[1].varValue or 0.0)[0]
                out[(t.key, t.nf_id)] = self.new_label(k)
            elif self.exact:
                out[(t.key, t.nf_id)] = self.new_label(0)  # one instance at most: it is instance 0
            else:
                fresh.append(i)
        if not fresh:
            return out, True
        loads = [self.tenants[i].load for i in fresh]
        count = round(self.count.varValue or 0.0)
        where = pack_into(loads, count, self.capacity, self.max_tenants)
        packed = where is not None
        if where is None:
            # The checker's ledger packs the rest (first fit): the answer costs more than the model said.
            where = pack_into(loads, len(loads), self.capacity, self.max_tenants) or list(range(len(loads)))
        for i, k in zip(fresh, where, strict=True):
            out[(self.tenants[i].key, self.tenants[i].nf_id)] = self.new_label(k)
        return out, packed

    def _start(
        self, placed: Mapping[str, Mapping[str, Assignment]], hints: Mapping[Tenant, str]
    ) -> tuple[dict[int, int | str], set[str]]:
        """Per placed tenant option (index), the instance it starts in; and the slices that cannot."""
        mine: dict[int, str] = {}
        for i, t in enumerate(self.tenants):
            a = placed.get(t.key, {}).get(t.nf_id)
            if a is not None and (a.host, a.flavor) == (t.option.host, t.option.flavor):
                mine[i] = hints.get((t.key, t.nf_id)) or f"alone:{i}"
        running = {inst.label for inst in self.running}
        order: dict[str, int] = {}
        for _i, lbl in sorted(mine.items()):
            if lbl not in running and lbl not in order:
                order[lbl] = len(order)
        out: dict[int, int | str] = {}
        bad: set[str] = set()
        for i, lbl in mine.items():
            where: int | str = lbl if lbl in running else order[lbl]
            if self.tenants[i].x.upBound == 0:
                ok = False
            elif isinstance(where, str):
                ok = any(j == where for j, _ in self.joins_running[i])
            else:
                ok = where < self.bound and (
                    not self.exact or not self.opened or any(k == where for k, _ in self.joins_new[i])
                )
            if not ok:
                bad.add(self.tenants[i].key)
            out[i] = where
        return out, bad

    def inexpressible(
        self, placed: Mapping[str, Mapping[str, Assignment]], hints: Mapping[Tenant, str]
    ) -> set[str]:
        return self._start(placed, hints)[1]

    def set_start(self, placed: Mapping[str, Mapping[str, Assignment]], hints: Mapping[Tenant, str]) -> None:
        where, _ = self._start(placed, hints)
        new = {j for j in where.values() if isinstance(j, int)}
        self.count.setInitialValue(float(len(new)))
        for k, o in enumerate(self.opened):
            o.setInitialValue(1.0 if k in new else 0.0)
        for i in range(len(self.tenants)):
            for lbl, w in self.joins_running[i]:
                w.setInitialValue(1.0 if where.get(i) == lbl else 0.0)
            for k, y in self.joins_new[i]:
                y.setInitialValue(1.0 if where.get(i) == k else 0.0)
