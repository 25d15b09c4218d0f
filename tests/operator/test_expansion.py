from __future__ import annotations

from flyslice.operator.planning import expansion, service_choice
from flyslice.solver.model import Flavor, Tier

from .conftest import catalog_from, find


def test_wildfire_expands_to_the_nine_nfs_of_seed_000(wildfire):
    catalog = catalog_from(wildfire)
    slice_ = catalog.slices[("default", "wildfire")]
    service = service_choice.choose(catalog, slice_).service
    assert service is not None and service.name == "iot-data-pipeline"
    demand = expansion.slice_demand(catalog, slice_, service)
    ids = sorted(nf.id for nf in demand.nfs)
    assert ids == sorted(
        [
            "broker-gw@gw-1",
            "broker-gw@gw-2",
            "sp-gw@gw-1",
            "sp-gw@gw-2",
            "broker-fog",
            "sp-fog",
            "broker-cloud",
            "sp-cloud",
            "db",
        ]
    )
    gw_broker = demand.nf_by_id["broker-gw@gw-1"]
    assert gw_broker.attachment == "gw-1"
    assert gw_broker.allowed_tiers == frozenset({Tier.GATEWAY})
    assert set(demand.nf_by_id["db"].flavors) == {Flavor.VNF}  # storage ships no fNF
    assert demand.nf_by_id["sp-fog"].flavors[Flavor.FNF].processing_latency_ms == 0.5


def test_paths_run_from_each_attachment_to_every_sink(wildfire):
    catalog = catalog_from(wildfire)
    slice_ = catalog.slices[("default", "wildfire")]
    service = service_choice.choose(catalog, slice_).service
    demand = expansion.slice_demand(catalog, slice_, service)
    assert [(p.name, p.attachment, p.budget_ms) for p in demand.paths] == [
        ("gw-1:broker-gw->db", "gw-1", 10.0),
        ("gw-2:broker-gw->db", "gw-2", 10.0),
    ]
    assert demand.paths[0].nfs == (
        "broker-gw@gw-1",
        "sp-gw@gw-1",
        "broker-fog",
        "sp-fog",
        "broker-cloud",
        "sp-cloud",
        "db",
    )
    # The shared perSlice edge broker-fog -> sp-fog appears once, the per-gateway ones twice.
    pairs = [(e.src, e.dst) for e in demand.edges]
    assert pairs.count(("broker-fog", "sp-fog")) == 1
    assert ("sp-gw@gw-2", "broker-fog") in pairs


def test_named_latency_paths_narrow_the_budget(wildfire):
    service = find(wildfire, "NetworkService", "iot-data-pipeline")
    service["spec"]["latencyPaths"] = [
        {"name": "to-fog", "roles": ["broker-gw", "sp-gw", "broker-fog", "sp-fog"]}
    ]
    catalog = catalog_from(wildfire)
    slice_ = catalog.slices[("default", "wildfire")]
    demand = expansion.slice_demand(catalog, slice_, catalog.services[("default", "iot-data-pipeline")])
    assert [p.name for p in demand.paths] == ["gw-1:to-fog", "gw-2:to-fog"]
    assert demand.paths[1].nfs == ("broker-gw@gw-2", "sp-gw@gw-2", "broker-fog", "sp-fog")


def test_isolation_and_priority_reach_the_solver(wildfire):
    slice_doc = find(wildfire, "Slice", "wildfire")
    slice_doc["spec"]["isolation"] = "required"
    slice_doc["spec"]["priority"] = 7
    catalog = catalog_from(wildfire)
    slice_ = catalog.slices[("default", "wildfire")]
    demand = expansion.slice_demand(catalog, slice_, catalog.services[("default", "iot-data-pipeline")])
    assert demand.isolation_required and demand.priority == 7


def test_topology_declares_each_undirected_link_once(wildfire):
    find(wildfire, "EdgeNode", "gw-1")["spec"]["links"] = [
        {"node": "fog-1", "latencyMs": 1, "bandwidthMbps": 100}
    ]
    topo = expansion.topology(catalog_from(wildfire))
    assert sorted((lk.a, lk.b) for lk in topo.links) == [
        ("cloud", "fog-1"),
        ("fog-1", "gw-1"),
        ("fog-1", "gw-2"),
    ]
    assert topo.distance_ms("gw-1", "cloud") == 5


def test_service_choice_prefers_priority_then_the_smaller_graph(wildfire):
    small = {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "NetworkService",
        "metadata": {"name": "tiny"},
        "spec": {
            "provides": ["data-collection", "stream-processing", "storage"],
            "graph": {"roles": [{"name": "db", "package": "storage", "tiers": ["cloud"]}]},
        },
    }
    catalog = catalog_from([*wildfire, small])
    slice_ = catalog.slices[("default", "wildfire")]
    assert service_choice.choose(catalog, slice_).service.name == "tiny"
    find(wildfire, "NetworkService", "iot-data-pipeline")["spec"]["priority"] = 5
    catalog = catalog_from([*wildfire, small])
    assert (
        service_choice.choose(catalog, catalog.slices[("default", "wildfire")]).service.name
        == "iot-data-pipeline"
    )


def test_no_service_gives_a_reason(wildfire):
    find(wildfire, "Slice", "wildfire")["spec"]["services"] = ["data-collection"]
    catalog = catalog_from(wildfire)
    slice_ = catalog.slices[("default", "wildfire")]
    # Remove the only service after validation to simulate a catalog change under a running slice.
    empty = type(catalog)(nodes=catalog.nodes, packages=catalog.packages, services={}, slices=catalog.slices)
    choice = service_choice.choose(empty, slice_)
    assert choice.service is None
    assert "no NetworkService in namespace 'default' provides all of data-collection" in choice.reason
