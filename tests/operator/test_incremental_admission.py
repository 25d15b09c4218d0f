"""Incremental admission in the reconcile core: running, unchanged slices never move for a newcomer.

Issue 13, item 1. Each test goes through ``reconcile()`` (the function both ``flyslice up`` and the
operator run) on catalogs validated from manifests; the fragmented catalog (tests/operator/fragmented.py)
is one where the full re-plan *does* move a running slice, so the first test fails with the old
behaviour.
"""

from __future__ import annotations

import copy

from flyslice.operator.reconcile import (
    INCREMENTAL_NOTE,
    ControllerState,
    NodeObservation,
    Observation,
    reconcile,
)

from .conftest import catalog_from, find
from .fragmented import ALPHA, BETA, catalog_docs, slice_doc
from .test_reconcile import T0, running, with_second_fog


def where(outcome, key):
    return {nf: (a.host, str(a.flavor)) for nf, a in outcome.state.slices[key].assignments.items()}


def test_a_new_slice_is_placed_around_running_ones_that_the_full_model_would_move():
    first = reconcile(
        catalog_from(catalog_docs(slice_doc("alpha", "gw-1"))), ControllerState(), Observation(), now=T0
    )
    assert where(first, ALPHA)["sp-fog"] == ("fog-1", "fnf")  # the cheaper fog
    both = catalog_from(catalog_docs(slice_doc("alpha", "gw-1"), slice_doc("beta", "gw-2")))

    # The old behaviour (every slice re-planned): alpha's fog stage moves so that beta fits.
    full = reconcile(both, first.state, running(first), now=T0 + 1, admission="full")
    assert where(full, ALPHA)["sp-fog"] == ("fog-2", "fnf") and full.state.slices[BETA].admitted

    inc = reconcile(both, first.state, running(first), now=T0 + 1)
    assert inc.replanned
    assert where(inc, ALPHA) == where(first, ALPHA)
    assert {a.name: a.spec for a in inc.actions if a.spec["slice"] == "alpha"} == {
        a.name: a.spec for a in first.actions
    }
    assert not any("alpha" in e for e in inc.events)
    beta = inc.slice_status[BETA]
    assert beta["phase"] == "Infeasible"
    # Honest about why: the restriction is named, never a bare "add capacity" verdict.
    assert any("held fixed" in r for r in beta["reasons"]), beta["reasons"]
    assert INCREMENTAL_NOTE in beta["reasons"] or any(
        "not proven for the full model" in r for r in beta["reasons"]
    )


def test_a_slice_whose_intent_changed_is_re_placed_and_the_unchanged_one_is_not():
    docs = catalog_docs(slice_doc("alpha", "gw-1"))
    first = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0)
    assert where(first, ALPHA)["sp-fog"][0] == "fog-1"
    # fog-1 becomes the dearer fog: alpha's intent is unchanged, so it stays where it runs.
    find(docs, "EdgeNode", "fog-1")["spec"]["cost"] = 5
    dearer = reconcile(catalog_from(docs), first.state, running(first), now=T0 + 1)
    assert dearer.replanned and where(dearer, ALPHA) == where(first, ALPHA)
    # A config-only change is not a change of placement intent either.
    find(docs, "Slice", "alpha")["spec"]["config"] = {"db": {"field": "humidity"}}
    configured = reconcile(catalog_from(docs), dearer.state, running(dearer), now=T0 + 2)
    assert where(configured, ALPHA) == where(first, ALPHA)
    assert {a.spec["config"].get("field") for a in configured.actions if a.spec["role"] == "db"} == {
        "humidity"
    }
    # Its latency budget changes: alpha is placed again by the model, which now prefers fog-2.
    find(docs, "Slice", "alpha")["spec"]["qos"]["maxLatencyMs"] = 12
    changed = reconcile(catalog_from(docs), configured.state, running(configured), now=T0 + 3)
    assert where(changed, ALPHA)["sp-fog"] == ("fog-2", "fnf")
    assert where(changed, ALPHA)["broker-fog"] == ("fog-2", "fnf")
    assert "slice default/alpha: re-placed, 2 NF(s) moved" in changed.events


def test_a_down_node_loses_its_nfs_and_nothing_else_moves(wildfire):
    docs = with_second_fog(wildfire)
    twin = copy.deepcopy(find(docs, "Slice", "wildfire"))
    twin["metadata"]["name"] = "twin"
    twin["spec"]["attachments"] = [{"node": "gw-1"}]
    docs.append(twin)
    catalog = catalog_from(docs)
    beats = {n: NodeObservation(heartbeat_at=T0) for n in catalog.nodes}
    out = reconcile(catalog, ControllerState(), Observation(nodes=beats), now=T0)
    before = {a.name: a.node for a in out.actions}
    on_fog1 = {n for n, node in before.items() if node == "fog-1"}
    assert {a.spec["slice"] for a in out.actions if a.name in on_fog1} == {"wildfire", "twin"}

    later = {n: NodeObservation(heartbeat_at=T0 + 60 if n != "fog-1" else T0) for n in catalog.nodes}
    moved = reconcile(catalog, out.state, Observation(nodes=later), now=T0 + 60)
    after = {a.name: a.node for a in moved.actions}
    assert {n for n in before if after[n] != before[n]} == on_fog1
    assert all(after[n] == "fog-2" for n in on_fog1)

    # fog-1 comes back: incremental admission moves nothing back (that is the re-optimiser's call).
    back = {n: NodeObservation(heartbeat_at=T0 + 70) for n in catalog.nodes}
    again = reconcile(catalog, moved.state, Observation(nodes=back), now=T0 + 70)
    assert again.replanned and {a.name: a.node for a in again.actions} == after


def test_a_node_that_shrinks_evicts_the_lower_priority_slice_only(wildfire):
    docs = with_second_fog(wildfire)
    find(docs, "Slice", "wildfire")["spec"]["priority"] = 5
    low = copy.deepcopy(find(docs, "Slice", "wildfire"))
    low["metadata"]["name"] = "low"
    low["spec"]["priority"] = 0
    docs.append(low)
    out = reconcile(catalog_from(docs), ControllerState(), Observation(), now=T0)
    fog_nodes = {a.spec["slice"]: a.node for a in out.actions if a.spec["role"] == "sp-fog"}
    assert fog_nodes == {"wildfire": "fog-1", "low": "fog-1"}
    # fog-1 now has room for one slice's fog stage (150m) only.
    find(docs, "EdgeNode", "fog-1")["spec"]["capacity"]["cpu"] = "200m"
    shrunk = reconcile(catalog_from(docs), out.state, running(out), now=T0 + 1)
    fog_nodes = {a.spec["slice"]: a.node for a in shrunk.actions if a.spec["role"] == "sp-fog"}
    assert fog_nodes == {"wildfire": "fog-1", "low": "fog-2"}
    assert "slice default/low: re-placed, 2 NF(s) moved" in shrunk.events
    assert not any(e.startswith("slice default/wildfire") for e in shrunk.events)


def test_the_status_says_which_guarantee_each_placement_has():
    first = reconcile(
        catalog_from(catalog_docs(slice_doc("alpha", "gw-1"))), ControllerState(), Observation(), now=T0
    )
    assert first.slice_status[ALPHA]["placementGuarantee"].startswith("optimal")
    docs = catalog_docs(slice_doc("alpha", "gw-1"), slice_doc("gamma", "gw-1"))
    find(docs, "EdgeNode", "fog-2")["spec"]["capacity"]["cpu"] = "1"  # room for gamma
    second = reconcile(catalog_from(docs), first.state, running(first), now=T0 + 1)
    gamma = second.slice_status["default/gamma"]
    assert gamma["phase"] == "Deploying"
    assert (
        gamma["placementGuarantee"].startswith("restricted: ") and "held fixed" in gamma["placementGuarantee"]
    )
    # The running slice was not re-judged: it keeps the claim it was placed with.
    assert second.slice_status[ALPHA]["placementGuarantee"] == first.slice_status[ALPHA]["placementGuarantee"]
    assert (
        "placementGuarantee"
        not in reconcile(
            catalog_from(
                catalog_docs(slice_doc("beta", "gw-2", qos={"maxLatencyMs": 1, "availability": 0.9}))
            ),
            ControllerState(),
            Observation(),
            now=T0,
        ).slice_status[BETA]
    )


def test_refused_slices_are_tried_again_only_when_capacity_may_have_been_freed():
    first = reconcile(
        catalog_from(catalog_docs(slice_doc("alpha", "gw-1"))), ControllerState(), Observation(), now=T0
    )
    both = reconcile(
        catalog_from(catalog_docs(slice_doc("alpha", "gw-1"), slice_doc("beta", "gw-2"))),
        first.state,
        running(first),
        now=T0 + 1,
    )
    assert any(e.startswith("slice default/beta: not admitted") for e in both.events)
    # Only a newcomer arrives: beta's refusal stands without another solve over it (no new event).
    three = catalog_docs(slice_doc("alpha", "gw-1"), slice_doc("beta", "gw-2"), slice_doc("gamma", "gw-1"))
    gamma = reconcile(catalog_from(three), both.state, running(both), now=T0 + 2)
    assert gamma.events == ("slice default/gamma: placed 7 NF(s)",)
    assert gamma.slice_status[BETA] == both.slice_status[BETA]
    # alpha leaves: fog-1 is free, and beta is tried again and admitted there.
    without_alpha = [d for d in three if d["metadata"]["name"] != "alpha"]
    freed = reconcile(catalog_from(without_alpha), gamma.state, running(gamma), now=T0 + 3)
    assert freed.state.slices[BETA].admitted
    assert where(freed, BETA)["sp-fog"] == ("fog-1", "fnf")
