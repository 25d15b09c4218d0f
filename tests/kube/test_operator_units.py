"""The operator's pure pieces (no API server): API objects -> manifests, restart adoption through the
reconcile core, observation, conditions and Events."""

from __future__ import annotations

from typing import Any

from flyslice.operator.intake.validation import validate
from flyslice.operator.kube.cluster import (
    MANAGED_BY,
    OPERATOR,
    derive_state,
    event_for,
    instance_object,
    manifests_from_objects,
    merge_conditions,
    observe,
    status_changed,
)
from flyslice.operator.reconcile import ControllerState, Observation, reconcile

from .operator_harness import wildfire_docs


def _server_objects(docs: list[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    """``docs`` as the API server returns them: namespaced, with server-set metadata."""
    out = []
    for i, d in enumerate(docs):
        meta = {**d["metadata"], "uid": f"uid-{i}", "resourceVersion": str(100 + i), "generation": 1,
                "managedFields": [{"manager": "kubectl"}], "creationTimestamp": "2026-01-01T00:00:00Z"}  # fmt: skip
        if d["kind"] != "EdgeNode":
            meta["namespace"] = ns
        out.append({**d, "metadata": meta})
    return out


def test_objects_validate_like_yaml_and_deleting_ones_are_left_out() -> None:
    objects = _server_objects(wildfire_docs("p"), "ns1")
    gone = dict(
        objects[-1], metadata={**objects[-1]["metadata"], "deletionTimestamp": "2026-01-01T00:00:01Z"}
    )
    manifests = manifests_from_objects([*objects[:-1], gone])
    assert len(manifests) == len(objects) - 1
    assert all(m.file == "cluster" and "uid" not in m.data["metadata"] for m in manifests)
    result = validate(manifests_from_objects(objects))
    assert result.ok, result.errors
    assert list(result.catalog.slices) == [("ns1", "wildfire")]
    assert result.catalog.slices[("ns1", "wildfire")].generation == 1


def test_adopted_state_reproduces_the_same_instances_and_moves_nothing() -> None:
    objects = _server_objects(wildfire_docs("p"), "ns1")
    catalog = validate(manifests_from_objects(objects)).catalog
    first = reconcile(catalog, ControllerState(), Observation(), now=1000.0)
    live = [instance_object(a, "slice-uid") for a in first.actions]
    for obj in live:
        obj["metadata"]["uid"] = "x"
    slice_obj = next(o for o in objects if o["kind"] == "Slice")
    slice_obj["status"] = first.slice_status["ns1/wildfire"]
    adopted = derive_state(catalog, live, [slice_obj])
    rec = adopted.slices["ns1/wildfire"]
    assert rec.assignments == first.state.slices["ns1/wildfire"].assignments
    assert rec.expires_at == first.state.slices["ns1/wildfire"].expires_at
    again = reconcile(catalog, adopted, Observation(), now=1001.0)
    assert again.replanned  # a fresh operator plans once ...
    assert sorted(again.actions, key=lambda a: a.name) == sorted(
        first.actions, key=lambda a: a.name
    )  # ... to the same
    assert not any("moved" in e for e in again.events)


def test_derive_state_ignores_instances_it_did_not_create() -> None:
    objects = _server_objects(wildfire_docs("p"), "ns1")
    catalog = validate(manifests_from_objects(objects)).catalog
    outcome = reconcile(catalog, ControllerState(), Observation(), now=1.0)
    foreign = instance_object(outcome.actions[0], None)
    foreign["metadata"]["labels"][MANAGED_BY] = "someone-else"
    assert derive_state(catalog, [foreign], []).slices == {}
    ours = instance_object(outcome.actions[0], None)
    assert ours["metadata"]["labels"][MANAGED_BY] == OPERATOR
    assert list(derive_state(catalog, [ours], []).slices) == ["ns1/wildfire"]


def test_observation_ignores_status_written_for_an_older_spec() -> None:
    inst = {
        "metadata": {"name": "i", "namespace": "n", "generation": 3},
        "spec": {"node": "gw"},
        "status": {"state": "Running", "observedGeneration": 2},
    }
    node = {"metadata": {"name": "gw"}, "status": {"heartbeatTime": "2026-01-01T00:00:10Z", "load": 0.25}}
    obs = observe([node], [inst])
    assert obs.instances[("n", "i")].state == "Pending"
    assert obs.nodes["gw"].load == 0.25 and obs.nodes["gw"].heartbeat_at is not None
    inst["status"]["observedGeneration"] = 3
    assert observe([], [inst]).instances[("n", "i")].state == "Running"


def test_conditions_keep_their_transition_time_until_the_status_flips() -> None:
    old = [{"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    same = merge_conditions([{"type": "Ready", "status": "False", "reason": "Deploying"}], old, 2e9, 4)
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z" and same[0]["observedGeneration"] == 4
    flipped = merge_conditions([{"type": "Ready", "status": "True", "reason": "Ready"}], old, 2e9, 4)
    assert flipped[0]["lastTransitionTime"] == "2033-05-18T03:33:20Z"
    assert not status_changed({"phase": "Ready", "extra": 1}, {"phase": "Ready"})
    assert status_changed({"phase": "Deploying"}, {"phase": "Ready"})


def test_decisions_become_events_on_the_object_they_are_about() -> None:
    placed = event_for("slice ns1/wildfire: placed 9 NF(s)")
    assert placed is not None and (placed.kind, placed.namespace, placed.name, placed.reason, placed.type) == (
        "Slice", "ns1", "wildfire", "Placed", "Normal",
    )  # fmt: skip
    refused = event_for("slice ns1/big: not admitted: no host has 64 CPUs")
    assert refused is not None and (refused.reason, refused.type) == ("Infeasible", "Warning")
    assert refused.message == "not admitted: no host has 64 CPUs"
    for message, reason, type_ in [
        (
            "new intent not admitted, keeping the last good placement (9 NF(s)): too tight",
            "NewIntentNotAdmitted",
            "Warning",
        ),
        ("new intent admitted, 0 NF(s) moved", "NewIntentAdmitted", "Normal"),
        ("cannot be planned, keeping what runs: ArithmeticError: boom", "Stalled", "Warning"),
    ]:
        spec = event_for(f"slice ns1/wildfire: {message}")
        assert spec is not None and (spec.name, spec.reason, spec.type) == ("wildfire", reason, type_)
    lost = event_for("node gw-1 has not sent a heartbeat for over 30s: moving its NFs")
    assert lost is not None and (lost.kind, lost.name, lost.reason, lost.type) == (
        "EdgeNode",
        "gw-1",
        "HeartbeatLost",
        "Warning",
    )
    load = event_for("load on node fog-1 changed by 15% or more since the last placement: re-planning")
    assert load is not None and (load.name, load.reason) == ("fog-1", "LoadChanged")
    assert event_for("something else entirely") is None
