"""Expansion of NF sharing into the solver's problem (issue 15): pools, loads and current instances.

The solver sees no policy: a flavour carries a ``Sharing`` whose pool says who may share, or ``None``.
These tests check that mapping from validated manifests (examples/shared-gateways, varied), the load each
NF brings, and that what runs (the NFInstances' spec.sharedInstance) reaches the problem as
``SliceDemand.current_instance`` through the pipeline and through a reconcile pass.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from flyslice import solver
from flyslice.operator import reconcile as reconcile_mod
from flyslice.operator.intake.catalog import Catalog, SliceSpec
from flyslice.operator.intake.manifests import load_text
from flyslice.operator.intake.validation import validate
from flyslice.operator.planning import expansion, pipeline, service_choice
from flyslice.operator.planning.actions import InstanceAction
from flyslice.solver.model import Flavor, Problem, Resources, SliceDemand

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shared-gateways"


def _docs() -> list[dict[str, Any]]:
    return [d for f in sorted(EXAMPLE.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def _doc(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _catalog(docs: list[dict[str, Any]]) -> Catalog:
    manifests, errors = load_text(yaml.safe_dump_all(docs, sort_keys=False), "test.yaml")
    assert not errors, errors
    result = validate(manifests)
    assert result.ok, [str(e) for e in result.errors]
    return result.catalog


def _demand(cat: Catalog, name: str, **kw: Any) -> SliceDemand:
    s = next(s for s in cat.slices.values() if s.name == name)
    service = service_choice.choose(cat, s).service
    assert service is not None
    return expansion.slice_demand(cat, s, service, **kw)


def _config_hash(config: dict[str, Any]) -> str:
    """The pool's config part, computed here independently of expansion: sha256 of canonical JSON."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def test_the_shareable_flavour_gets_a_pool_of_namespaced_package_flavour_and_config() -> None:
    cat = _catalog(_docs())
    fire = _demand(cat, "fire-watch")
    fnf = fire.nf_by_id["broker-gw@tower-1"].flavors[Flavor.FNF]
    assert fnf.sharing is not None
    # broker-gw has no config in the service and the slice overrides none: the config is {}.
    assert fnf.sharing.pool == f"default/tower-broker/fnf/{_config_hash({})}"
    assert fnf.sharing.capacity_mbps == 40.0 and fnf.sharing.max_tenants == 20
    assert fnf.sharing.per_tenant == Resources(5, 2 * 2**20)
    # The flavour's resources stay what one instance costs; the solver pays them once per instance.
    assert fnf.resources == Resources(50, 8 * 2**20)
    # Flavours without a sharing block, and NFs of other packages, are never shared.
    assert fire.nf_by_id["broker-cloud"].flavors[Flavor.VNF].sharing is None
    assert all(f.sharing is None for f in fire.nf_by_id["filter-gw@tower-1"].flavors.values())
    # Both gateways' brokers of the slice are in the same pool (same package, flavour, config).
    assert fire.nf_by_id["broker-gw@tower-2"].flavors[Flavor.FNF].sharing == fnf.sharing


def test_slices_with_the_same_effective_config_share_a_pool_and_others_do_not() -> None:
    docs = _docs()
    service = _doc(docs, "NetworkService", "forest-telemetry")
    broker_gw = service["spec"]["graph"]["roles"][0]
    broker_gw["config"] = {"retain": True}
    air = _doc(docs, "Slice", "air-quality")
    air["spec"]["config"]["broker-gw"] = {"subscriptions": {"pm25/#": ["broker-cloud"]}}
    cat = _catalog(docs)

    def pool(name: str) -> str:
        sharing = _demand(cat, name).nf_by_id["broker-gw@tower-1"].flavors[Flavor.FNF].sharing
        assert sharing is not None
        return sharing.pool

    assert pool("fire-watch") == f"default/tower-broker/fnf/{_config_hash({'retain': True})}"
    merged = {"retain": True, "subscriptions": {"pm25/#": ["broker-cloud"]}}
    assert pool("air-quality") == f"default/tower-broker/fnf/{_config_hash(merged)}"
    assert pool("fire-watch") != pool("air-quality")


def test_per_tenant_config_pools_ignore_the_config() -> None:
    docs = _docs()
    _doc(docs, "NFPackage", "tower-broker")["spec"]["flavors"]["fnf"]["sharing"]["perTenantConfig"] = True
    _doc(docs, "Slice", "air-quality")["spec"]["config"]["broker-gw"] = {"retain": False}
    cat = _catalog(docs)
    pools = {
        name: _demand(cat, name).nf_by_id["broker-gw@tower-1"].flavors[Flavor.FNF].sharing
        for name in ("fire-watch", "air-quality")
    }
    assert {p.pool for p in pools.values() if p is not None} == {"default/tower-broker/fnf/any"}


def test_packages_of_one_name_in_two_namespaces_never_share_a_pool() -> None:
    docs = _docs()
    moved = []
    for d in docs:
        if d["kind"] in ("NFPackage", "NetworkService", "Slice") and d["metadata"]["name"] in (
            "tower-broker",
            "sensor-filter",
            "readings-store",
            "forest-telemetry",
            "fire-watch",
        ):
            other = copy.deepcopy(d)
            other["metadata"]["namespace"] = "rangers"
            moved.append(other)
    cat = _catalog(docs + moved)
    mine = next(s for s in cat.slices.values() if s.key == "default/fire-watch")
    theirs = next(s for s in cat.slices.values() if s.key == "rangers/fire-watch")
    pools = []
    for s in (mine, theirs):
        service = service_choice.choose(cat, s).service
        assert service is not None
        sharing = (
            expansion.slice_demand(cat, s, service).nf_by_id["broker-gw@tower-1"].flavors[Flavor.FNF].sharing
        )
        assert sharing is not None
        pools.append(sharing.pool)
    assert pools == [
        f"default/tower-broker/fnf/{_config_hash({})}",
        f"rangers/tower-broker/fnf/{_config_hash({})}",
    ]


@pytest.mark.parametrize(
    ("change", "shared"),
    [
        (None, True),
        ("slice-forbidden", False),
        ("role-forbidden", False),
        ("isolation", False),
    ],
)
def test_the_role_the_slice_or_isolation_forbids_sharing(change: str | None, shared: bool) -> None:
    docs = _docs()
    fire = _doc(docs, "Slice", "fire-watch")
    if change == "slice-forbidden":
        fire["spec"]["sharing"] = "forbidden"
    elif change == "role-forbidden":
        _doc(docs, "NetworkService", "forest-telemetry")["spec"]["graph"]["roles"][0]["sharing"] = "forbidden"
    elif change == "isolation":
        fire["spec"]["isolation"] = "required"
    cat = _catalog(docs)
    nf = _demand(cat, "fire-watch").nf_by_id["broker-gw@tower-1"]
    assert (nf.flavors[Flavor.FNF].sharing is not None) is shared
    # The flavour itself is still offered (isolation's ban on fNFs is the solver's, via isolation_required).
    assert Flavor.FNF in nf.flavors


def test_the_example_rangers_slice_is_never_shared() -> None:
    cat = _catalog(_docs())
    rangers = _demand(cat, "ranger-tracking")
    assert all(f.sharing is None for nf in rangers.nfs for f in nf.flavors.values())


def test_an_nf_brings_its_incoming_bandwidth_or_for_a_source_its_outgoing() -> None:
    cat = _catalog(_docs())
    demand = _demand(cat, "fire-watch")
    loads = {nf.id: nf.load_mbps for nf in demand.nfs}
    assert loads == {
        "broker-gw@tower-1": 2.0,  # a source role: what it sends to filter-gw
        "broker-gw@tower-2": 2.0,
        "filter-gw@tower-1": 2.0,  # from broker-gw
        "filter-gw@tower-2": 2.0,
        "broker-cloud": 2.0,  # 1 Mbit/s from each tower's filter
        "db": 1.0,
    }


def test_current_instances_reach_the_demand_for_known_nfs_only() -> None:
    cat = _catalog(_docs())
    current = {"broker-gw@tower-1": "default/tower-broker/fnf/x@tower-1#0", "gone@tower-9": "y"}
    demand = _demand(cat, "fire-watch", current_instance=current)
    assert dict(demand.current_instance) == {"broker-gw@tower-1": "default/tower-broker/fnf/x@tower-1#0"}
    the_plan = pipeline.plan(cat, current_instances={"default/fire-watch": current})
    demands = {sp.slice.name: sp.demand for sp in the_plan.slices}
    assert demands["fire-watch"] is not None and demands["air-quality"] is not None
    assert dict(demands["fire-watch"].current_instance) == {
        "broker-gw@tower-1": "default/tower-broker/fnf/x@tower-1#0"
    }
    assert dict(demands["air-quality"].current_instance) == {}


TENANTS = {tower: f"default/tower-broker/fnf/abc@{tower}#3" for tower in ("tower-1", "tower-2")}


def _running_state(cat: Catalog) -> reconcile_mod.ControllerState:
    """A first pass's state, with fire-watch's tower brokers running in the instances of TENANTS
    (whatever the solver chose: these are what the NFInstances say runs now)."""
    first = reconcile_mod.reconcile(
        cat, reconcile_mod.ControllerState(), reconcile_mod.Observation(), now=0.0
    )
    fire = first.state.slices["default/fire-watch"]
    assert fire.admitted

    def tag(a: InstanceAction) -> InstanceAction:
        if a.spec["role"] != "broker-gw":
            return a
        shared = {"name": TENANTS[a.spec["attachment"]], "perTenantConfig": False}
        return replace(a, spec={**a.spec, "sharedInstance": shared})

    records = dict(first.state.slices)
    records["default/fire-watch"] = replace(fire, actions=tuple(tag(a) for a in fire.actions))
    return replace(first.state, slices=records)


def _spy_on_the_solver(monkeypatch: pytest.MonkeyPatch) -> list[Problem]:
    """Every problem the real solver is given (it still solves them)."""
    seen: list[Problem] = []
    real_place = solver.place

    def place_and_record(problem: Problem, options: Any = None) -> Any:
        seen.append(problem)
        return real_place(problem, options)

    monkeypatch.setattr(solver, "place", place_and_record)
    return seen


def test_a_reconcile_pass_hands_the_running_tenancies_to_the_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The records' NFInstances (what runs; after a restart, adopted from the cluster) carry
    spec.sharedInstance; a re-plan must give the solver each NF's current instance."""
    state = _running_state(_catalog(_docs()))
    seen = _spy_on_the_solver(monkeypatch)
    # A new slice arrives: the pass re-plans, with the running slices as they run.
    docs = _docs()
    extra = copy.deepcopy(_doc(docs, "Slice", "fire-watch"))
    extra["metadata"]["name"] = "smoke-watch"
    out = reconcile_mod.reconcile(_catalog([*docs, extra]), state, reconcile_mod.Observation(), now=1.0)
    assert out.replanned and seen
    by_key = {d.key: d for d in seen[-1].slices}
    assert dict(by_key["default/fire-watch"].current_instance) == {
        f"broker-gw@{t}": n for t, n in TENANTS.items()
    }
    assert dict(by_key["default/smoke-watch"].current_instance) == {}


def test_background_reoptimisation_hands_the_running_tenancies_to_the_solver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cat = _catalog(_docs())
    state = _running_state(cat)
    job = reconcile_mod.reoptimization_job(cat, state, reconcile_mod.Observation(), now=1.0)
    assert job is not None
    seen = _spy_on_the_solver(monkeypatch)
    job()
    assert seen
    by_key = {d.key: d for d in seen[-1].slices}
    assert dict(by_key["default/fire-watch"].current_instance) == {
        f"broker-gw@{t}": n for t, n in TENANTS.items()
    }


def test_slice_fingerprints_change_with_sharing_forbidden_only() -> None:
    cat = _catalog(_docs())
    spec = next(s for s in cat.slices.values() if s.name == "fire-watch")
    base = reconcile_mod._slice_fingerprint(cat, spec.key)
    forbidden = replace(
        cat, slices={**cat.slices, ("default", "fire-watch"): replace(spec, sharing="forbidden")}
    )
    assert reconcile_mod._slice_fingerprint(forbidden, spec.key) != base
    # A slice that does not forbid sharing keeps the fingerprint it had before sharing existed.
    plain: SliceSpec = spec
    assert base == repr((plain.max_latency_ms, plain.availability, plain.attachments, sorted(plain.services),
                         plain.network_service_ref, plain.isolation_required, plain.priority))  # fmt: skip
