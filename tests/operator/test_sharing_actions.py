"""From a placement with shared instances to NFInstances, the plan document and the slice status (issue 15).

The placements here are the solver's real answer for examples/shared-gateways with the sharing part
written by hand (``instance_of`` and ``instances``, as the contract defines them), so that these tests
check the control plane's mapping whatever the solver decides.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from flyslice.operator import reconcile as reconcile_mod
from flyslice.operator.intake.catalog import Catalog
from flyslice.operator.intake.manifests import load_text
from flyslice.operator.intake.quantities import cpu_millis, memory_bytes
from flyslice.operator.intake.validation import validate, validate_paths
from flyslice.operator.planning import expansion
from flyslice.operator.planning.actions import InstanceAction, node_usage, shared_instances, slice_actions
from flyslice.operator.planning.pipeline import Plan, SlicePlan, plan
from flyslice.operator.planning.plan_format import plan_document, render_table
from flyslice.solver.model import Flavor, Resources, SharedInstance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shared-gateways"
SHARERS = ("default/air-quality", "default/fire-watch")
TOWERS = ("tower-1", "tower-2")


def _catalog() -> Catalog:
    result = validate_paths([str(EXAMPLE)])
    assert result.ok, [str(e) for e in result.errors]
    return result.catalog


def _pool(cat: Catalog) -> str:
    return expansion.pool_key(cat.packages[("default", "tower-broker")], "fnf", {})


def _instance_id(cat: Catalog, tower: str) -> str:
    return f"{_pool(cat)}@{tower}#0"


def _shared_plan(cat: Catalog) -> Plan:
    """The solver's plan, with both sharing slices' tower brokers put into one instance per tower."""
    real = plan(cat)
    assert all(sp.placement.admitted for sp in real.slices), render_table(plan_document(real))
    instances = {}
    for tower in TOWERS:
        iid = _instance_id(cat, tower)
        instances[iid] = SharedInstance(
            id=iid,
            pool=_pool(cat),
            host=tower,
            flavor=Flavor.FNF,
            package="tower-broker",
            tenants=tuple((key, f"broker-gw@{tower}") for key in SHARERS),
            load_mbps=4.0,
            capacity_mbps=40.0,
        )
    slices = []
    placements = dict(real.placement.slices)
    for sp in real.slices:
        if sp.slice.key in SHARERS:
            for tower in TOWERS:
                assert sp.placement.assignments[f"broker-gw@{tower}"].host == tower
            sp = replace(
                sp,
                placement=replace(
                    sp.placement, instance_of={f"broker-gw@{t}": _instance_id(cat, t) for t in TOWERS}
                ),
            )
            placements[sp.slice.key] = sp.placement
        slices.append(sp)
    return replace(
        real, slices=tuple(slices), placement=replace(real.placement, slices=placements, instances=instances)
    )


def _actions(cat: Catalog, sp: SlicePlan) -> list[InstanceAction]:
    assert sp.service is not None and sp.demand is not None
    return slice_actions(cat, sp.slice, sp.service, sp.demand, sp.placement)


@pytest.fixture(scope="module")
def shared() -> tuple[Catalog, Plan]:
    cat = _catalog()
    return cat, _shared_plan(cat)


def test_each_tenant_is_an_nfinstance_of_its_own_slice_naming_the_shared_instance(
    shared: tuple[Catalog, Plan],
) -> None:
    cat, the_plan = shared
    by_slice = {sp.slice.key: {a.name: a for a in _actions(cat, sp)} for sp in the_plan.slices}
    for key in SHARERS:
        name = key.split("/")[1]
        actions = by_slice[key]
        for tower in TOWERS:
            broker = actions[f"{name}-broker-gw-{tower}"]
            assert broker.node == tower and broker.spec["slice"] == name
            assert broker.spec["sharedInstance"] == {
                "name": _instance_id(cat, tower),
                "perTenantConfig": False,
                "perTenant": {"cpu": "5m", "memory": "2Mi"},
            }
            # resources stay the instance's own footprint, the same on every tenant.
            assert broker.spec["resources"] == {"cpu": "50m", "memory": "8Mi"}
            # Next hops stay within the tenant's own slice.
            assert broker.spec["nextHops"] == [{"instance": f"{name}-filter-gw-{tower}", "node": tower}]
        others = [a for a in actions.values() if a.spec["role"] != "broker-gw"]
        assert others and all("sharedInstance" not in a.spec for a in others)
    assert all("sharedInstance" not in a.spec for a in by_slice["default/ranger-tracking"].values())
    # The filters keep each slice's own config: sharing the broker does not merge configs.
    assert (
        by_slice["default/air-quality"]["air-quality-filter-gw-tower-1"].spec["config"]["filter"]["field"]
        == "pm25"
    )


def test_the_tenant_nfinstances_are_valid_against_the_crd(shared: tuple[Catalog, Plan]) -> None:
    cat, the_plan = shared
    objects = [a.as_object() for sp in the_plan.slices for a in _actions(cat, sp)]
    assert sum("sharedInstance" in o["spec"] for o in objects) == 4
    manifests, errors = load_text(yaml.safe_dump_all(objects, sort_keys=False), "actions.yaml")
    assert not errors
    result = validate(manifests)
    assert result.errors == [], [str(e) for e in result.errors]


def test_the_running_tenancies_read_back_from_the_actions(shared: tuple[Catalog, Plan]) -> None:
    cat, the_plan = shared
    fire = next(sp for sp in the_plan.slices if sp.slice.name == "fire-watch")
    assert shared_instances(_actions(cat, fire)) == {f"broker-gw@{t}": _instance_id(cat, t) for t in TOWERS}


def test_node_usage_counts_a_shared_instance_once_plus_each_tenant(shared: tuple[Catalog, Plan]) -> None:
    cat, the_plan = shared
    actions = [a for sp in the_plan.slices for a in _actions(cat, sp)]
    usage = node_usage(actions)
    # tower: one shared broker (50m/8Mi + 2 x 5m/2Mi), the rangers' own broker (50m/8Mi) and three
    # filters (100m/16Mi each).
    for tower in TOWERS:
        assert usage[tower] == Resources(60 + 50 + 300, (8 + 4 + 8 + 48) * 2**20)
    unshared = sum((Resources(cpu_millis(a.spec["resources"]["cpu"]), memory_bytes(a.spec["resources"]["memory"]))
                    for a in actions if a.node == "tower-1"), Resources())  # fmt: skip
    assert unshared == Resources(450, 72 * 2**20)


def test_the_plan_lists_each_shared_instance_once_with_its_tenants(shared: tuple[Catalog, Plan]) -> None:
    cat, the_plan = shared
    doc = plan_document(the_plan)
    json.dumps(doc)  # the document is plain data (-o json / -o yaml)
    assert doc["sharedInstances"] == [
        {
            "id": _instance_id(cat, tower),
            "pool": _pool(cat),
            "package": "tower-broker",
            "node": tower,
            "flavor": "fnf",
            "tenants": [{"slice": key, "nf": f"broker-gw@{tower}"} for key in SHARERS],
            "loadMbps": 4.0,
            "capacityMbps": 40.0,
        }
        for tower in TOWERS
    ]
    rows = {(sl["name"], i["id"]): i for sl in doc["slices"] for i in sl["instances"]}
    assert rows[("fire-watch", "broker-gw@tower-2")]["sharedInstance"] == _instance_id(cat, "tower-2")
    assert "sharedInstance" not in rows[("fire-watch", "filter-gw@tower-2")]
    assert "sharedInstance" not in rows[("ranger-tracking", "broker-gw@tower-2")]


def test_the_table_names_instances_on_nf_rows_and_lists_them_once(shared: tuple[Catalog, Plan]) -> None:
    cat, the_plan = shared
    table = render_table(plan_document(the_plan))
    assert "shared instances: 2" in table
    iid = _instance_id(cat, "tower-1")
    listing = [line for line in table.splitlines() if line.strip().startswith(iid)]
    assert len(listing) == 1
    assert "tower-1" in listing[0] and "4/40" in listing[0]
    assert "default/air-quality:broker-gw@tower-1, default/fire-watch:broker-gw@tower-1" in listing[0]
    # Each sharing slice's broker rows name it; the rangers' table has no such column at all.
    sections = table.split("\nslice ")
    fire = next(s for s in sections if s.startswith("default/fire-watch"))
    assert "SHARED INSTANCE" in fire and sum(iid in line for line in fire.splitlines()) == 1
    rangers = next(s for s in sections if s.startswith("default/ranger-tracking"))
    assert "SHARED INSTANCE" not in rangers.split("shared instances:")[0]


def test_a_plan_without_sharing_reads_as_before() -> None:
    real = plan(_catalog())
    # Whatever the solver decides, a plan with no shared instance prints as plans always did.
    slices = tuple(replace(sp, placement=replace(sp.placement, instance_of={})) for sp in real.slices)
    doc = plan_document(replace(real, slices=slices, placement=replace(real.placement, instances={})))
    assert doc["sharedInstances"] == []
    assert all("sharedInstance" not in i for sl in doc["slices"] for i in sl["instances"])
    table = render_table(doc)
    assert "SHARED INSTANCE" not in table and "shared instances" not in table


def test_slice_status_placement_names_the_shared_instance(shared: tuple[Catalog, Plan]) -> None:
    cat, the_plan = shared
    first = reconcile_mod.reconcile(
        cat, reconcile_mod.ControllerState(), reconcile_mod.Observation(), now=0.0
    )
    records = dict(first.state.slices)
    for sp in the_plan.slices:
        records[sp.slice.key] = replace(records[sp.slice.key], actions=tuple(_actions(cat, sp)))
    again = reconcile_mod.reconcile(
        cat, replace(first.state, slices=records), reconcile_mod.Observation(), now=1.0
    )
    assert not again.replanned  # nothing changed: the status is built from what runs
    fire = {
        (p["role"], p.get("attachment")): p for p in again.slice_status["default/fire-watch"]["placement"]
    }
    assert fire[("broker-gw", "tower-1")]["sharedInstance"] == _instance_id(cat, "tower-1")
    assert fire[("broker-gw", "tower-1")]["instance"] == "fire-watch-broker-gw-tower-1"
    assert "sharedInstance" not in fire[("filter-gw", "tower-1")]
    rangers: list[dict[str, Any]] = again.slice_status["default/ranger-tracking"]["placement"]
    assert rangers and all("sharedInstance" not in p for p in rangers)
    # The actions handed to the agents carry the tenancy too.
    tenants = [a for a in again.actions if a.spec.get("sharedInstance")]
    assert sorted(a.name for a in tenants) == sorted(
        f"{k.split('/')[1]}-broker-gw-{t}" for k in SHARERS for t in TOWERS
    )
