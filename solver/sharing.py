"""NF sharing (docs/solver.md, "NF sharing"): the instances of a placement and their stable ids.

A flavour with :class:`~.model.Sharing` serves several NFs (its *tenants*, of one slice or several)
from one instance: the flavour's ``resources`` are paid once per open instance and ``per_tenant`` once
per tenant; an instance carries at most its capacity (``capacity_mbps``, or the
:attr:`~.model.Problem.derated` value for its pool on its host) of its tenants' ``load_mbps``, and at
most ``max_tenants`` tenants.

:class:`Ledger` is the packing every path checks a placement against (the re-check of solver answers,
the baseline, the running slices held fixed in incremental mode, the diagnosis and the objective). It
is built slice by slice: a tenant joins the instance its hint names (the solver's own instance, or
the instance it runs in now) when that one has room, else the first open instance of its pool on its
host with room, else it opens one. A hint that names an instance not open yet opens it under that
label, so a solver answer read back with its hints is rebuilt instance for instance.
:func:`results` turns a final ledger into :class:`~.model.SharedInstance` values with stable ids.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .model import Assignment, Flavor, FlavorDemand, NFDemand, Problem, Resources, SharedInstance, SliceDemand

#: (slice key, NF id): one tenant of a shared instance.
Tenant = tuple[str, str]
#: (pool, host): the instances that may take a tenant of that pool placed on that host.
Group = tuple[str, str]
#: Tenant -> the ledger label of the instance it must join (see :class:`Ledger`).
Hints = Mapping[Tenant, str]

#: Loads are sums of floats: an instance is full only beyond this relative slack.
_REL_TOL = 1e-9


def fits_load(load: float, capacity: float) -> bool:
    return load <= capacity + _REL_TOL * max(1.0, abs(capacity))


def capacity_of(derated: Mapping[Group, float], pool: str, declared: float, host: str) -> float:
    """The capacity of one instance of ``pool`` on ``host``: derated there, else as declared."""
    return float(derated.get((pool, host), declared))


def label(pool: str, host: str, name: str) -> str:
    """The ledger label of an instance: unique per (pool, host), so hints never cross groups."""
    return f"{pool}@{host}|{name}"


def group_of_label(lbl: str) -> str:
    """The ``pool@host|`` prefix of a ledger label."""
    return lbl[: lbl.index("|") + 1]


def instance_id(pool: str, host: str, n: int) -> str:
    return f"{pool}@{host}#{n}"


def alone(demand: FlavorDemand) -> Resources:
    """What one NF in this flavour takes on its host when it is the only tenant of its instance."""
    return demand.resources + demand.sharing.per_tenant if demand.sharing else demand.resources


@dataclass
class Instance:
    """One open instance while a ledger is built (mutable; results are :class:`SharedInstance`)."""

    label: str
    pool: str
    host: str
    flavor: Flavor
    package: str
    base: Resources
    per_tenant: Resources
    capacity: float
    max_tenants: int | None
    tenants: list[Tenant] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    @property
    def load(self) -> float:
        return math.fsum(self.loads)

    def has_room(self, load: float, pending_load: float = 0.0, pending_tenants: int = 0) -> bool:
        if self.max_tenants is not None and len(self.tenants) + pending_tenants + 1 > self.max_tenants:
            return False
        return fits_load(self.load + pending_load + load, self.capacity)

    def spare(self) -> float:
        """Capacity left for one more tenant (negative: no tenant slot left)."""
        if self.max_tenants is not None and len(self.tenants) >= self.max_tenants:
            return -math.inf
        return self.capacity - self.load


@dataclass(frozen=True)
class Shares:
    """What pruning needs to know about sharing: derated capacities, and where running instances
    still take tenants (``room``: (pool, host) -> the most spare capacity of an open instance there
    with a free tenant slot)."""

    derated: Mapping[Group, float] = field(default_factory=dict)
    room: Mapping[Group, float] = field(default_factory=dict)


@dataclass
class _Choice:
    """Where one NF goes: the host usage it adds, and the instance it joins (or opens)."""

    usage: Resources
    instance: Instance | None = None
    #: Label of the instance to open (``instance`` is None then, and the NF is shared).
    opens: str | None = None
    load: float = 0.0


class Draft:
    """The instances one slice joins or opens, on top of a :class:`Ledger`, until committed."""

    def __init__(self, ledger: Ledger, s: SliceDemand, hints: Hints) -> None:
        self.ledger = ledger
        self.slice = s
        self.hints = hints
        #: Host usage of the slice: full resources of unshared NFs; per-tenant, plus the base of
        #: every instance the slice opens, of shared ones.
        self.usage: dict[str, Resources] = {}
        self.errors: list[str] = []
        self._opened: dict[str, Instance] = {}
        self._joins: list[tuple[Tenant, Instance, float]] = []
        self._pending: dict[str, tuple[float, int]] = {}

    def _find(self, lbl: str) -> Instance | None:
        return self.ledger.instances.get(lbl) or self._opened.get(lbl)

    def _room(self, inst: Instance, load: float) -> bool:
        pl, pt = self._pending.get(inst.label, (0.0, 0))
        return inst.has_room(load, pl, pt)

    def need(self, nf: NFDemand, host: str, flavor: Flavor) -> _Choice | None:
        """What placing ``nf`` on ``host`` as ``flavor`` would add; ``None`` when its load alone
        exceeds the capacity of one instance there."""
        demand = nf.flavors[flavor]
        sh = demand.sharing
        if sh is None:
            return _Choice(demand.resources)
        cap = capacity_of(self.ledger.derated, sh.pool, sh.capacity_mbps, host)
        load = nf.load_mbps
        if not fits_load(load, cap) or (sh.max_tenants is not None and sh.max_tenants < 1):
            return None
        tenant = (self.slice.key, nf.id)
        prefix = label(sh.pool, host, "")
        strong = self.hints.get(tenant)
        if strong is not None and not strong.startswith(prefix):
            strong = None
        current = self.slice.current_instance.get(nf.id)
        weak = label(sh.pool, host, current) if current is not None else None
        for lbl, is_strong in ((strong, True), (weak, False)):
            if lbl is None:
                continue
            inst = self._find(lbl)
            if inst is not None and self._room(inst, load):
                return _Choice(sh.per_tenant, inst, load=load)
            if inst is None and is_strong:
                # The solver opened this instance: open it under its label, so the answer's
                # instances are rebuilt as the model packed them.
                return _Choice(demand.resources + sh.per_tenant, opens=lbl, load=load)
        for inst in itertools.chain(
            self.ledger.groups.get((sh.pool, host), ()),
            (i for i in self._opened.values() if (i.pool, i.host) == (sh.pool, host)),
        ):
            if self._room(inst, load):
                return _Choice(sh.per_tenant, inst, load=load)
        fresh = weak if weak is not None and self._find(weak) is None else None
        return _Choice(demand.resources + sh.per_tenant, opens=fresh or "", load=load)

    def take(self, nf: NFDemand, host: str, flavor: Flavor, choice: _Choice) -> None:
        """Record ``choice`` (from :meth:`need` with the same arguments)."""
        self.usage[host] = self.usage.get(host, Resources()) + choice.usage
        demand = nf.flavors[flavor]
        sh = demand.sharing
        if sh is None:
            return
        inst = choice.instance
        if inst is None:
            lbl = choice.opens or label(sh.pool, host, f"+{next(self.ledger.fresh)}")
            cap = capacity_of(self.ledger.derated, sh.pool, sh.capacity_mbps, host)
            inst = Instance(
                lbl, sh.pool, host, flavor, nf.package, demand.resources, sh.per_tenant, cap, sh.max_tenants
            )
            self._opened[lbl] = inst
        pl, pt = self._pending.get(inst.label, (0.0, 0))
        self._pending[inst.label] = (pl + choice.load, pt + 1)
        self._joins.append(((self.slice.key, nf.id), inst, choice.load))

    def add(self, nf: NFDemand, a: Assignment) -> None:
        """Place ``nf`` where ``a`` says (the slice's placement is given: re-checks, fixed slices)."""
        choice = self.need(nf, a.host, a.flavor)
        if choice is None:
            sh = nf.flavors[a.flavor].sharing
            assert sh is not None
            cap = capacity_of(self.ledger.derated, sh.pool, sh.capacity_mbps, a.host)
            self.errors.append(
                f"NF {nf.id}: its load {nf.load_mbps:g} Mbit/s exceeds the {cap:g} Mbit/s one instance of "
                f"pool {sh.pool} carries on {a.host}"
            )
            return
        self.take(nf, a.host, a.flavor, choice)


class Ledger:
    """The shared instances of a placement, built slice by slice (see the module docstring)."""

    def __init__(self, derated: Mapping[Group, float] | None = None) -> None:
        self.derated: Mapping[Group, float] = derated or {}
        self.instances: dict[str, Instance] = {}
        self.groups: dict[Group, list[Instance]] = {}
        self.fresh = itertools.count()

    def copy(self) -> Ledger:
        out = Ledger(self.derated)
        for inst in self.instances.values():
            twin = Instance(**{**inst.__dict__, "tenants": list(inst.tenants), "loads": list(inst.loads)})
            out.instances[twin.label] = twin
            out.groups.setdefault((twin.pool, twin.host), []).append(twin)
        out.fresh = itertools.count(next(self.fresh))
        return out

    def draft(self, s: SliceDemand, assignments: Mapping[str, Assignment] | None, hints: Hints) -> Draft:
        """A draft of ``s`` placed as ``assignments`` (or empty, for a greedy to fill)."""
        d = Draft(self, s, hints)
        if assignments is not None:
            by_id = s.nf_by_id
            for nf_id, a in assignments.items():
                nf = by_id.get(nf_id)
                demand = None if nf is None else nf.flavors.get(a.flavor)
                if nf is None or demand is None:
                    continue  # not a valid assignment: the caller's checks name it
                if demand.sharing is None:
                    d.usage[a.host] = d.usage.get(a.host, Resources()) + demand.resources
                else:
                    d.add(nf, a)
        return d

    def commit(self, d: Draft) -> None:
        for lbl, inst in d._opened.items():
            self.instances[lbl] = inst
            self.groups.setdefault((inst.pool, inst.host), []).append(inst)
        for tenant, inst, load in d._joins:
            inst.tenants.append(tenant)
            inst.loads.append(load)

    def room(self) -> dict[Group, float]:
        """(pool, host) -> the most spare capacity of an open instance there with a free tenant slot."""
        out: dict[Group, float] = {}
        for g, insts in self.groups.items():
            best = max((i.spare() for i in insts), default=-math.inf)
            if best >= 0:
                out[g] = best
        return out

    def labels(self) -> dict[Tenant, str]:
        """Every tenant's instance label: the hints that rebuild this ledger."""
        return {t: inst.label for inst in self.instances.values() for t in inst.tenants}

    def bases(self) -> Iterator[tuple[str, Resources]]:
        """(host, base resources) of every instance with a tenant."""
        for inst in self.instances.values():
            if inst.tenants:
                yield inst.host, inst.base

    def open_with_room(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.tenants and i.spare() >= 0]


def check(problem: Problem) -> None:
    """Raise ``ValueError`` when sharing data no placement can use: NFs of one pool that disagree on
    what an instance is (package, flavour, resources, sharing terms), a non-positive or non-finite
    capacity, ``max_tenants`` below 1, a negative or non-finite load, a negative derated capacity."""
    seen: dict[str, tuple[str, str, tuple[object, ...]]] = {}
    bad: list[str] = []
    for s in problem.slices:
        for nf in s.nfs:
            if not (math.isfinite(nf.load_mbps) and nf.load_mbps >= 0):
                bad.append(
                    f"slice {s.key}: NF {nf.id!r}: load_mbps must be finite and >= 0, got {nf.load_mbps!r}"
                )
            for flavor, demand in nf.flavors.items():
                sh = demand.sharing
                if sh is None:
                    continue
                where = f"slice {s.key}: NF {nf.id!r}: flavors[{flavor}].sharing"
                if not (math.isfinite(sh.capacity_mbps) and sh.capacity_mbps > 0):
                    bad.append(f"{where}: capacity_mbps must be finite and > 0, got {sh.capacity_mbps!r}")
                if sh.max_tenants is not None and sh.max_tenants < 1:
                    bad.append(f"{where}: max_tenants must be >= 1, got {sh.max_tenants!r}")
                if sh.per_tenant.cpu_millis < 0 or sh.per_tenant.memory_bytes < 0:
                    bad.append(f"{where}: per_tenant must not be negative, got {sh.per_tenant}")
                terms = (
                    nf.package,
                    flavor,
                    demand.resources,
                    sh.capacity_mbps,
                    sh.max_tenants,
                    sh.per_tenant,
                )
                first = seen.setdefault(sh.pool, (s.key, nf.id, terms))
                if first[2] != terms:
                    bad.append(
                        f"{where}: pool {sh.pool!r} is also used by NF {first[1]!r} of slice {first[0]} with "
                        "another package, flavour, resources or sharing terms; NFs of one pool must agree"
                    )
    for (pool, host), cap in problem.derated.items():
        if not (math.isfinite(cap) and cap >= 0):
            bad.append(f"derated[({pool!r}, {host!r})] must be finite and >= 0, got {cap!r}")
    if bad:
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise ValueError("invalid sharing data: " + "; ".join(bad[:10]) + more)


def current_hints(problem: Problem, admitted: Mapping[str, Mapping[str, Assignment]]) -> dict[Tenant, str]:
    """Strong hints from each slice's :attr:`~.model.SliceDemand.current_instance` (what runs now)."""
    by_key = {s.key: s for s in problem.slices}
    out: dict[Tenant, str] = {}
    for key, assignments in admitted.items():
        s = by_key[key]
        for nf_id, cid in s.current_instance.items():
            a = assignments.get(nf_id)
            if a is None:
                continue
            demand = s.nf_by_id[nf_id].flavors.get(a.flavor) if nf_id in s.nf_by_id else None
            if demand is not None and demand.sharing is not None:
                out[(key, nf_id)] = label(demand.sharing.pool, a.host, cid)
    return out


def hints_of_ids(
    problem: Problem,
    admitted: Mapping[str, Mapping[str, Assignment]],
    instance_of: Mapping[str, Mapping[str, str]],
) -> dict[Tenant, str]:
    """Strong hints from a result's :attr:`~.model.SlicePlacement.instance_of` ids."""
    by_key = {s.key: s for s in problem.slices}
    out: dict[Tenant, str] = {}
    for key, ids in instance_of.items():
        assignments = admitted.get(key)
        if assignments is None or key not in by_key:
            continue
        for nf_id, iid in ids.items():
            a = assignments.get(nf_id)
            nf = by_key[key].nf_by_id.get(nf_id)
            if a is None or nf is None or a.flavor not in nf.flavors:
                continue
            sh = nf.flavors[a.flavor].sharing
            if sh is not None:
                out[(key, nf_id)] = label(sh.pool, a.host, iid)
    return out


def pack(
    problem: Problem,
    admitted: Mapping[str, Mapping[str, Assignment]],
    hints: Hints | None = None,
) -> Ledger:
    """The ledger of ``admitted`` (in its order), each tenant placed by ``hints``, else by what
    runs now (``current_instance``), else first fit. Nothing is refused: a lone tenant over its
    instance's capacity still gets an instance (the caller's checks report it)."""
    by_key = {s.key: s for s in problem.slices}
    ledger = Ledger(problem.derated)
    strong = current_hints(problem, admitted) if hints is None else hints
    for key, assignments in admitted.items():
        d = ledger.draft(by_key[key], assignments, strong)
        ledger.commit(d)
    return ledger


def _current_of(slices: Mapping[str, SliceDemand], t: Tenant) -> str | None:
    s = slices.get(t[0])
    return None if s is None else s.current_instance.get(t[1])


def _stable(
    insts: list[Instance], slices: Mapping[str, SliceDemand]
) -> list[list[tuple[Tenant, float]]] | None:
    """The tenants of one (pool, host) repacked so that tenants running in the same instance now stay
    together, in no more instances than ``insts``; ``None`` when this greedy finds no such packing."""
    first = insts[0]
    members = [(t, load) for i in insts for t, load in zip(i.tenants, i.loads, strict=True)]
    by_current: dict[str, list[tuple[Tenant, float]]] = {}
    rest: list[tuple[Tenant, float]] = []
    for t, load in members:
        cid = _current_of(slices, t)
        if cid is None:
            rest.append((t, load))
        else:
            by_current.setdefault(cid, []).append((t, load))
    bins: list[list[tuple[Tenant, float]]] = []

    def room(b: list[tuple[Tenant, float]], load: float) -> bool:
        if first.max_tenants is not None and len(b) + 1 > first.max_tenants:
            return False
        return fits_load(math.fsum(x for _, x in b) + load, first.capacity)

    for cid in sorted(by_current, key=lambda c: (-len(by_current[c]), c)):
        group = sorted(by_current[cid], key=lambda tl: (-tl[1], tl[0]))
        if len(bins) >= len(insts):
            rest.extend(group)
            continue
        b: list[tuple[Tenant, float]] = []
        for t, load in group:
            if room(b, load):
                b.append((t, load))
            else:
                rest.append((t, load))
        bins.append(b)
    for t, load in sorted(rest, key=lambda tl: (-tl[1], tl[0])):
        target = next((b for b in bins if room(b, load)), None)
        if target is None:
            if len(bins) >= len(insts):
                return None
            target = []
            bins.append(target)
        target.append((t, load))
    return bins


def stabilized(problem: Problem, admitted: Mapping[str, Mapping[str, Assignment]], ledger: Ledger) -> Ledger:
    """``ledger`` repacked, per (pool, host), so that tenants running in one instance now stay
    together, where that needs no more instances than ``ledger`` has there.

    The objective does not see which instance of a host a tenant is in, so the solver's packing may
    shuffle tenants among equally good instances; the repacking keeps the host usage and the
    objective (never more instances) and saves needless restarts. Groups where the greedy below finds
    no such packing keep the ledger's.
    """
    slices = {s.key: s for s in problem.slices}
    hints: dict[Tenant, str] = {}
    changed = False
    for (pool, host), insts in ledger.groups.items():
        insts = [i for i in insts if i.tenants]
        packed = _stable(insts, slices) if insts else None
        if packed is None:
            hints.update((t, i.label) for i in insts for t in i.tenants)
            continue
        changed = True
        for k, b in enumerate(packed):
            hints.update((t, label(pool, host, f"s{k}")) for t, _ in b)
    return pack(problem, admitted, hints) if changed else ledger


def results(problem: Problem, ledger: Ledger) -> tuple[dict[str, SharedInstance], dict[str, dict[str, str]]]:
    """The ledger's instances with stable ids, and each slice's NF -> instance id.

    An instance keeps the current id (:attr:`~.model.SliceDemand.current_instance`, in this pool and
    host) that most of its tenants run in now; each id is kept by at most one instance, the largest
    overlap first. The others take the smallest ``n`` of ``f"{pool}@{host}#{n}"`` not used by this
    placement nor by any instance a slice of the problem runs in now (an instance being emptied keeps
    its name until it is gone, so a new instance is never mistaken for it).
    """
    slices = {s.key: s for s in problem.slices}
    referenced = {cid for s in problem.slices for cid in s.current_instance.values()}
    out: dict[str, SharedInstance] = {}
    instance_of: dict[str, dict[str, str]] = {}
    for (pool, host), insts in sorted(ledger.groups.items()):
        insts = [i for i in insts if i.tenants]
        prefix = instance_id(pool, host, 0)[:-1]
        overlap: list[tuple[int, str, int]] = []
        for k, inst in enumerate(insts):
            counts: dict[str, int] = {}
            for t in inst.tenants:
                cid = _current_of(slices, t)
                if cid is not None and cid.startswith(prefix) and cid[len(prefix) :].isdigit():
                    counts[cid] = counts.get(cid, 0) + 1
            overlap.extend((-c, cid, k) for cid, c in counts.items())
        ids: dict[int, str] = {}
        taken: set[str] = set()
        for _, cid, k in sorted(overlap):
            if k not in ids and cid not in taken:
                ids[k] = cid
                taken.add(cid)
        n = 0
        for k in range(len(insts)):
            if k in ids:
                continue
            while instance_id(pool, host, n) in taken or instance_id(pool, host, n) in referenced:
                n += 1
            ids[k] = instance_id(pool, host, n)
            taken.add(ids[k])
        for k, inst in enumerate(insts):
            iid = ids[k]
            out[iid] = SharedInstance(
                id=iid,
                pool=pool,
                host=host,
                flavor=inst.flavor,
                package=inst.package,
                tenants=tuple(sorted(inst.tenants)),
                load_mbps=inst.load,
                capacity_mbps=inst.capacity,
            )
            for t in inst.tenants:
                instance_of.setdefault(t[0], {})[t[1]] = iid
    return out, instance_of
