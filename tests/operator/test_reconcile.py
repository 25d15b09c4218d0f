"""The reconcile core on the wildfire example: placement, status, and every re-placement rule."""

from __future__ import annotations

import copy

from flyslice.operator.intake.quantities import cpu_millis
from flyslice.operator.reconcile import (
    ControllerState,
    InstanceObservation,
    NodeObservation,
    Observation,
    reconcile,
)

from .conftest import catalog_from, find

T0 = 1_000_000.0


def running(outcome, node_obs=None, e2e=None):
    instances = {
        (a.namespace, a.name): InstanceObservation("Running", a.node, e2e_latency_ms=e2e)
        for a in outcome.actions
    }
    return Observation(nodes=node_obs or {}, instances=instances)


def with_second_fog(docs):
    docs = copy.deepcopy(docs)
    fog2 = copy.deepcopy(find(docs, "EdgeNode", "fog-1"))
    fog2["metadata"]["name"] = "fog-2"
    fog2["spec"]["cost"] = 3  # dearer, so fog-1 is preferred while it is up
    fog2["spec"]["links"] = [
        {"node": "gw-1", "latencyMs": 1, "bandwidthMbps": 100},
        {"node": "gw-2", "latencyMs": 1, "bandwidthMbps": 100},
        {"node": "cloud", "latencyMs": 4, "bandwidthMbps": 1000},
    ]
    docs.append(fog2)
    return docs


def test_wildfire_is_placed_deployed_and_ready(wildfire):
    catalog = catalog_from(wildfire)
    out = reconcile(catalog, ControllerState(), Observation(), now=T0, revision="abc123")
    assert out.replanned
    assert len(out.actions) == 9
    status = out.slice_status["default/wildfire"]
    assert status["phase"] == "Deploying"
    assert status["networkService"] == "iot-data-pipeline"
    assert status["predictedLatencyMs"] <= 10
    assert status["lastAppliedRevision"] == "abc123"
    assert status["nodeCount"] == 4
    # Gateways only run fNFs; the database only exists as a VNF, in the cloud.
    by_role = {(a.spec["role"], a.spec.get("attachment")): a for a in out.actions}
    assert by_role[("broker-gw", "gw-1")].spec == {
        **by_role[("broker-gw", "gw-1")].spec,
        "node": "gw-1",
        "flavor": "fnf",
    }
    assert by_role[("db", None)].spec["node"] == "cloud" and by_role[("db", None)].spec["flavor"] == "vnf"
    assert by_role[("sp-gw", "gw-2")].spec["nextHops"] == [
        {"instance": "wildfire-broker-fog", "node": "fog-1"}
    ]

    ready = reconcile(catalog, out.state, running(out, e2e=6.5), now=T0 + 5)
    assert not ready.replanned
    assert [a.spec for a in ready.actions] == [a.spec for a in out.actions]
    st = ready.slice_status["default/wildfire"]
    assert st["phase"] == "Ready"
    assert st["observedLatencyMs"] == 6.5
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Placed": "True",
        "Ready": "True",
        "Degraded": "False",
        "Reconciling": "False",
        "Stalled": "False",
    }
    assert st["expiresAt"] == "1970-01-12T20:46:40Z"  # T0 + 7h


def test_failed_instance_and_slow_data_plane_degrade_the_slice(wildfire):
    catalog = catalog_from(wildfire)
    out = reconcile(catalog, ControllerState(), Observation(), now=T0)
    obs = running(out)
    victim = out.actions[0]
    obs.instances[(victim.namespace, victim.name)] = InstanceObservation(
        "Failed", victim.node, "module raised"
    )
    st = reconcile(catalog, out.state, obs, now=T0 + 1).slice_status["default/wildfire"]
    assert st["phase"] == "Degraded"
    assert any(victim.name in r and "module raised" in r for r in st["reasons"])

    slow = reconcile(catalog, out.state, running(out, e2e=14.0), now=T0 + 2).slice_status["default/wildfire"]
    assert slow["phase"] == "Degraded"
    assert "observed latency 14.00 ms exceeds the 10 ms budget" in slow["reasons"]


def test_lifetime_expiry_tears_the_slice_down(wildfire):
    catalog = catalog_from(wildfire)
    out = reconcile(catalog, ControllerState(), Observation(), now=T0)
    later = reconcile(catalog, out.state, running(out), now=T0 + 7 * 3600 + 1)
    assert later.actions == ()
    assert later.slice_status["default/wildfire"]["phase"] == "Expired"
    assert any("lifetime over" in e for e in later.events)


def test_a_node_that_stops_heartbeating_loses_its_nfs(wildfire):
    catalog = catalog_from(with_second_fog(wildfire))
    beats = {n: NodeObservation(heartbeat_at=T0) for n in catalog.nodes}
    out = reconcile(catalog, ControllerState(), Observation(nodes=beats), now=T0)
    on_fog1 = {a.name for a in out.actions if a.node == "fog-1"}
    assert on_fog1  # fog-1 is cheaper, so the fog roles start there

    beats_later = {
        **beats,
        **{n: NodeObservation(heartbeat_at=T0 + 60) for n in catalog.nodes if n != "fog-1"},
    }
    moved = reconcile(catalog, out.state, Observation(nodes=beats_later), now=T0 + 60)
    assert moved.replanned
    assert all(a.node != "fog-1" for a in moved.actions)
    assert {a.name for a in moved.actions if a.node == "fog-2"} == on_fog1
    # Only the NFs of the dead node moved.
    before = {a.name: a.node for a in out.actions}
    assert {n for n, node in before.items() if {a.name: a.node for a in moved.actions}[n] != node} == on_fog1


def test_load_change_of_15_percent_triggers_replanning_and_less_does_not(wildfire):
    catalog = catalog_from(wildfire)
    obs = Observation(nodes={"fog-1": NodeObservation(heartbeat_at=T0, load=0.20)})
    out = reconcile(catalog, ControllerState(), obs, now=T0)
    small = Observation(nodes={"fog-1": NodeObservation(heartbeat_at=T0 + 1, load=0.30)})
    assert not reconcile(catalog, out.state, small, now=T0 + 1).replanned
    big = Observation(nodes={"fog-1": NodeObservation(heartbeat_at=T0 + 2, load=0.40)})
    again = reconcile(catalog, out.state, big, now=T0 + 2)
    assert again.replanned
    assert any("load on node fog-1" in e for e in again.events)


def test_roaming_moves_only_the_per_attachment_stage(wildfire):
    docs = copy.deepcopy(wildfire)
    gw3 = copy.deepcopy(find(docs, "EdgeNode", "gw-2"))
    gw3["metadata"]["name"] = "gw-3"
    gw3["spec"]["links"] = [{"node": "fog-1", "latencyMs": 1}]
    docs.append(gw3)
    out = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0)
    find(docs, "Slice", "wildfire")["spec"]["attachments"] = [{"node": "gw-1"}, {"node": "gw-3"}]
    roamed = reconcile(catalog_from(docs), out.state, running(out), now=T0 + 10)
    assert roamed.replanned
    before = {a.name: a.spec for a in out.actions}
    after = {a.name: a.spec for a in roamed.actions}
    assert set(before) - set(after) == {"wildfire-broker-gw-gw-2", "wildfire-sp-gw-gw-2"}
    assert set(after) - set(before) == {"wildfire-broker-gw-gw-3", "wildfire-sp-gw-gw-3"}
    assert after["wildfire-sp-gw-gw-3"]["node"] == "gw-3"
    for name in set(before) & set(after):
        assert (after[name]["node"], after[name]["flavor"]) == (before[name]["node"], before[name]["flavor"])


def test_removed_slice_is_pruned_and_infeasible_slice_explains_why(wildfire):
    docs = copy.deepcopy(wildfire)
    find(docs, "Slice", "wildfire")["spec"]["qos"]["maxLatencyMs"] = 2
    tight = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0)
    st = tight.slice_status["default/wildfire"]
    assert st["phase"] == "Infeasible"
    assert st["reasons"] and all(r.strip() for r in st["reasons"])
    assert tight.actions == ()
    docs = [d for d in docs if d["kind"] != "Slice"]
    gone = reconcile(catalog_from(docs), tight.state, Observation(), now=T0 + 2)
    assert gone.actions == () and gone.slice_status == {}


def conditions(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_an_intent_that_cannot_be_admitted_keeps_the_last_good_placement(wildfire):
    docs = copy.deepcopy(wildfire)
    out = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0, revision="r1")
    placed = {a.name: a.spec for a in out.actions}
    assert len(placed) == 9
    find(docs, "Slice", "wildfire")["spec"]["qos"]["maxLatencyMs"] = 2
    tight = reconcile(catalog_from(docs), out.state, running(out), now=T0 + 1, revision="r2")
    assert {a.name: a.spec for a in tight.actions} == placed
    st = tight.slice_status["default/wildfire"]
    assert st["phase"] == "Degraded"
    assert st["lastAppliedRevision"] == "r1"  # what runs is still r1's placement
    assert st["reasons"][0].startswith("new intent not admitted, keeping the last good placement: ")
    assert conditions(st)["Degraded"] == ("True", "NewIntentNotAdmitted")
    assert conditions(st)["Ready"] == ("False", "NewIntentNotAdmitted")
    assert conditions(st)["Placed"][0] == "True"
    (event,) = [e for e in tight.events if "wildfire" in e and "not admitted" in e]
    assert event.startswith(
        "slice default/wildfire: new intent not admitted, keeping the last good placement (9 NF(s))"
    )
    # Nothing changes on the next pass: the event is not repeated and nothing is re-planned.
    again = reconcile(catalog_from(docs), tight.state, running(tight), now=T0 + 2, revision="r2")
    assert not again.replanned and not again.events
    assert {a.name for a in again.actions} == set(placed)
    # Restoring a feasible intent applies it and says so.
    find(docs, "Slice", "wildfire")["spec"]["qos"]["maxLatencyMs"] = 11
    relaxed = reconcile(catalog_from(docs), again.state, running(again), now=T0 + 3, revision="r3")
    assert any(e.startswith("slice default/wildfire: new intent admitted") for e in relaxed.events)
    ready = reconcile(catalog_from(docs), relaxed.state, running(relaxed), now=T0 + 4, revision="r3")
    st = ready.slice_status["default/wildfire"]
    assert st["phase"] == "Ready" and st["paths"][0]["budgetMs"] == 11
    assert st["lastAppliedRevision"] == "r3" and conditions(st)["Ready"] == ("True", "Ready")


def test_allow_teardown_annotation_lets_an_infeasible_intent_tear_the_slice_down(wildfire):
    docs = copy.deepcopy(wildfire)
    out = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0)
    slice_doc = find(docs, "Slice", "wildfire")
    slice_doc["spec"]["qos"]["maxLatencyMs"] = 2
    slice_doc["metadata"]["annotations"] = {"flyslice.io/allow-teardown": "true"}
    tight = reconcile(catalog_from(docs), out.state, running(out), now=T0 + 1)
    assert tight.actions == ()
    assert tight.slice_status["default/wildfire"]["phase"] == "Infeasible"


def test_a_held_slice_keeps_its_resources_from_a_new_slice(wildfire):
    """The slice that cannot get its new intent still runs: a newcomer is planned around it."""
    docs = copy.deepcopy(wildfire)
    out = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0)
    find(docs, "Slice", "wildfire")["spec"]["qos"]["maxLatencyMs"] = 2
    twin = copy.deepcopy(find(docs, "Slice", "wildfire"))
    twin["metadata"]["name"] = "twin"
    twin["spec"]["qos"]["maxLatencyMs"] = 10
    docs.append(twin)
    both = reconcile(catalog_from(docs), out.state, running(out), now=T0 + 1)
    held = {a.name: a for a in both.actions if a.spec["slice"] == "wildfire"}
    assert set(held) == {a.name for a in out.actions}
    # Whatever the newcomer got, no node carries more than it has.
    catalog = catalog_from(docs)
    used: dict[str, int] = {}
    for a in both.actions:
        used[a.node] = used.get(a.node, 0) + cpu_millis(a.spec["resources"]["cpu"])
    assert all(used[n] <= catalog.nodes[n].cpu_millis for n in used)


def test_a_slice_whose_planning_raises_is_isolated_and_the_others_are_placed(wildfire, monkeypatch):
    from flyslice.operator.planning import expansion

    docs = copy.deepcopy(wildfire)
    twin = copy.deepcopy(find(docs, "Slice", "wildfire"))
    twin["metadata"]["name"] = "twin"
    docs.append(twin)
    real = expansion.slice_demand

    def explode_for_twin(catalog, s, *args, **kwargs):
        if s.name == "twin":
            raise ArithmeticError("boom")
        return real(catalog, s, *args, **kwargs)

    monkeypatch.setattr(expansion, "slice_demand", explode_for_twin)
    out = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0)
    assert {a.spec["slice"] for a in out.actions} == {"wildfire"}
    st = out.slice_status["default/twin"]
    assert st["phase"] == "Pending"
    assert conditions(st)["Stalled"] == ("True", "PlanningFailed")
    assert "ArithmeticError: boom" in st["reasons"][0]
    assert any(e.startswith("slice default/twin: cannot be planned") for e in out.events)
