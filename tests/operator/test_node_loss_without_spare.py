"""A node that stops heartbeating when no other node can take its NFs: what runs keeps running.

The slice keeps its last good placement (its NFs on live nodes untouched, those on the lost node still
desired there), is never Ready while the node is gone, says which node and why it cannot be re-placed,
and is admitted again as it was when the node returns, or re-placed when a spare appears. Checked on
the reconcile core with an injected clock, and on the embedded mode with real agents (one is killed).
"""

from __future__ import annotations

import copy

import pytest

from flyslice.operator.intake.quantities import cpu_millis
from flyslice.operator.kube.cluster import event_for
from flyslice.operator.reconcile import (
    ControllerState,
    InstanceObservation,
    NodeObservation,
    Observation,
    Outcome,
    reconcile,
)
from tests.e2e.harness import Embedded, ManifestRepo

from .conftest import catalog_from, find

T0 = 1_000_000.0
KEY = "default/wildfire"


def beats(nodes, at: float, lost: str = "", lost_at: float = T0) -> dict[str, NodeObservation]:
    return {n: NodeObservation(heartbeat_at=lost_at if n == lost else at) for n in nodes}


def running(out: Outcome, nodes: dict[str, NodeObservation], down: str = "") -> Observation:
    """Every instance Running as its agent reports it; a lost node's agent reports nothing more."""
    instances = {
        (a.namespace, a.name): InstanceObservation("Running", a.node) for a in out.actions if a.node != down
    }
    return Observation(nodes=nodes, instances=instances)


def conditions(status) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def specs(out: Outcome) -> dict[str, dict]:
    return {a.name: a.spec for a in out.actions}


def placed_and_ready(catalog) -> Outcome:
    out = reconcile(catalog, ControllerState(), Observation(nodes=beats(catalog.nodes, T0)), now=T0)
    ready = reconcile(catalog, out.state, running(out, beats(catalog.nodes, T0 + 5)), now=T0 + 5)
    assert ready.slice_status[KEY]["phase"] == "Ready"
    return ready


def test_a_lost_node_without_a_spare_keeps_every_nf_and_the_slice_is_not_ready(wildfire):
    catalog = catalog_from(wildfire)
    ready = placed_and_ready(catalog)
    before = specs(ready)
    on_cloud = {n for n, s in before.items() if s["node"] == "cloud"}
    assert on_cloud == {"wildfire-broker-cloud", "wildfire-sp-cloud", "wildfire-db"}  # the only cloud node

    nodes = beats(catalog.nodes, T0 + 60, lost="cloud")
    lost = reconcile(catalog, ready.state, running(ready, nodes, down="cloud"), now=T0 + 60)
    assert lost.replanned
    # Nothing is stopped: the six NFs on live nodes keep their exact specs, and the three on the lost
    # node stay desired there (they come back as they were if it returns).
    assert specs(lost) == before
    st = lost.slice_status[KEY]
    assert st["phase"] == "Degraded"
    assert conditions(st)["Ready"] == ("False", "NodeUnavailable")
    assert conditions(st)["Degraded"] == ("True", "NodeUnavailable")
    assert conditions(st)["Stalled"] == ("True", "NodeUnavailable")
    assert conditions(st)["Placed"][0] == "True"
    first = st["reasons"][0]
    assert first.startswith(
        "node(s) cloud unavailable (no heartbeat for over 30s) and the slice cannot be re-placed"
    )
    assert "may only run on a cloud host" in first  # the solver's own reason
    assert "keeping the 6 NF(s) on live nodes running and the 3 on cloud desired there" in first
    states = {p["instance"]: p["state"] for p in st["placement"]}
    assert {n for n, s in states.items() if s == "Unknown"} == on_cloud  # not a stale "Running"
    assert all(states[n] == "Running" for n in before if n not in on_cloud)
    (event,) = [e for e in lost.events if e.startswith(f"slice {KEY}:")]
    assert event.startswith(f"slice {KEY}: node unavailable, keeping the last good placement: node(s) cloud")
    # The operator posts it as a Warning on the Slice, not as a routine "Reconciled".
    posted = event_for(event)
    assert posted is not None and (posted.kind, posted.name) == ("Slice", "wildfire")
    assert (posted.reason, posted.type) == ("NodeUnavailable", "Warning")

    # Next passes, the node still gone: nothing re-planned, no event repeated, still not Ready.
    nodes = beats(catalog.nodes, T0 + 70, lost="cloud")
    again = reconcile(catalog, lost.state, running(lost, nodes, down="cloud"), now=T0 + 70)
    assert not again.replanned and not [e for e in again.events if "wildfire" in e]
    assert specs(again) == before
    assert again.slice_status[KEY]["phase"] == "Degraded"

    # The node heartbeats again: the kept placement is admitted as it was, nothing moves, Ready.
    nodes = beats(catalog.nodes, T0 + 80)
    back = reconcile(catalog, again.state, running(again, nodes), now=T0 + 80)
    assert back.replanned and specs(back) == before
    assert (
        f"slice {KEY}: node(s) cloud available again, the kept placement is admitted as it was" in back.events
    )
    st = back.slice_status[KEY]
    assert st["phase"] == "Ready" and conditions(st)["Ready"] == ("True", "Ready")
    assert not any("unavailable" in r for r in st["reasons"])


def test_a_spare_that_appears_takes_only_the_lost_node_s_nfs(wildfire):
    docs = copy.deepcopy(wildfire)
    ready = placed_and_ready(catalog_from(docs))
    before = specs(ready)
    nodes = beats(catalog_from(docs).nodes, T0 + 60, lost="cloud")
    lost = reconcile(catalog_from(docs), ready.state, running(ready, nodes, down="cloud"), now=T0 + 60)
    assert lost.slice_status[KEY]["phase"] == "Degraded"

    spare = copy.deepcopy(find(docs, "EdgeNode", "cloud"))
    spare["metadata"]["name"] = "cloud-2"
    docs.append(spare)
    catalog = catalog_from(docs)
    nodes = {**beats(catalog.nodes, T0 + 70, lost="cloud")}
    moved = reconcile(catalog, lost.state, running(lost, nodes, down="cloud"), now=T0 + 70)
    after = specs(moved)
    assert {n for n, s in after.items() if s["node"] == "cloud-2"} == {
        n for n, s in before.items() if s["node"] == "cloud"
    }
    # The NFs on live nodes kept their place (their next hops may now name cloud-2).
    for name, spec in before.items():
        if spec["node"] != "cloud":
            assert (after[name]["node"], after[name]["flavor"]) == (spec["node"], spec["flavor"])
    assert f"slice {KEY}: re-placed, 3 NF(s) moved off unavailable node(s) cloud" in moved.events
    st = reconcile(catalog, moved.state, running(moved, nodes, down="cloud"), now=T0 + 71).slice_status[KEY]
    assert st["phase"] == "Ready" and not any("unavailable" in r for r in st["reasons"])


def test_allow_teardown_still_tears_down_a_slice_that_lost_a_node(wildfire):
    docs = copy.deepcopy(wildfire)
    find(docs, "Slice", "wildfire")["metadata"]["annotations"] = {"flyslice.io/allow-teardown": "true"}
    catalog = catalog_from(docs)
    ready = placed_and_ready(catalog)
    nodes = beats(catalog.nodes, T0 + 60, lost="cloud")
    gone = reconcile(catalog, ready.state, running(ready, nodes, down="cloud"), now=T0 + 60)
    assert gone.actions == ()
    assert gone.slice_status[KEY]["phase"] == "Infeasible"


def test_a_held_slice_keeps_its_live_resources_from_a_newcomer_while_its_node_is_lost(wildfire):
    """fog-2 is too far for wildfire's 10 ms but fine for a 40 ms twin; the gateways fit one slice only."""
    docs = copy.deepcopy(wildfire)
    fog2 = copy.deepcopy(find(docs, "EdgeNode", "fog-1"))
    fog2["metadata"]["name"] = "fog-2"
    fog2["spec"]["links"] = [
        {"node": "gw-1", "latencyMs": 6},
        {"node": "gw-2", "latencyMs": 6},
        {"node": "cloud", "latencyMs": 8},
    ]
    docs.append(fog2)
    gw_cpu = {}
    for gw in ("gw-1", "gw-2"):
        find(docs, "EdgeNode", gw)["spec"]["capacity"]["cpu"] = "200m"
        gw_cpu[gw] = 200
    catalog = catalog_from(docs)
    ready = placed_and_ready(catalog)
    assert {s["node"] for s in specs(ready).values()} == {"gw-1", "gw-2", "fog-1", "cloud"}
    nodes = beats(catalog.nodes, T0 + 60, lost="fog-1")
    lost = reconcile(catalog, ready.state, running(ready, nodes, down="fog-1"), now=T0 + 60)
    assert specs(lost) == specs(ready)
    assert lost.slice_status[KEY]["reasons"][0].startswith("node(s) fog-1 unavailable")

    twin = copy.deepcopy(find(docs, "Slice", "wildfire"))
    twin["metadata"]["name"] = "twin"
    twin["spec"]["qos"]["maxLatencyMs"] = 40
    alone = catalog_from([*(d for d in docs if d["kind"] != "Slice"), twin])
    fits = reconcile(alone, ControllerState(), Observation(nodes=nodes), now=T0 + 61)
    assert fits.slice_status["default/twin"]["phase"] == "Deploying"  # it fits, on fog-2, were wildfire gone
    catalog = catalog_from([*docs, twin])
    both = reconcile(catalog, lost.state, running(lost, nodes, down="fog-1"), now=T0 + 61)
    assert {a.name: a.spec for a in both.actions if a.spec["slice"] == "wildfire"} == specs(ready)
    # The twin is refused: the gateways' CPU is taken by wildfire's NFs, which still run there.
    assert both.slice_status["default/twin"]["phase"] == "Infeasible"
    used: dict[str, int] = {}
    for a in both.actions:
        used[a.node] = used.get(a.node, 0) + cpu_millis(a.spec["resources"]["cpu"])
    assert all(used[gw] <= gw_cpu[gw] for gw in gw_cpu)


# -- the embedded mode, real agents ---------------------------------------------------------------


def _started(emb: Embedded, node: str) -> dict[str, tuple[str, float | None, int]]:
    agent = emb.fleet.runtimes[node].agent
    assert agent is not None
    return {
        n: (st.state, st.started_at, id(agent.platform.instances.get(n))) for n, st in agent.status().items()
    }


@pytest.mark.slow
def test_killing_the_only_cloud_agent_stops_nothing_that_runs_elsewhere(tmp_path):
    repo = ManifestRepo(tmp_path / "repo")
    repo.copy_example()
    rev = repo.commit("wildfire: one cloud node, no spare")
    with Embedded(repo.url, tmp_path / "state", None, heartbeat_timeout_s=1.5) as emb:
        emb.wait_ready("wildfire", rev)
        survivors = {n: _started(emb, n) for n in ("gw-1", "gw-2", "fog-1")}
        assert all(len(v) == 2 for v in survivors.values()), survivors  # broker + stream processor each
        assert all(s == "Running" and t is not None for v in survivors.values() for s, t, _ in v.values())
        emb.fleet.runtimes["cloud"].kill()

        def held() -> dict | None:
            s = emb.slice("wildfire")
            return s if s and any(r.startswith("node(s) cloud unavailable") for r in s["reasons"]) else None

        st = emb.wait(held, 20, "the slice to say the cloud node is unavailable")
        assert st["phase"] == "Degraded"
        assert any("may only run on a cloud host" in r for r in st["reasons"])
        # A few more passes with the node gone: the surviving NFs are the same instances, never restarted.
        passes = emb.controller.passes
        emb.wait(lambda: emb.controller.passes >= passes + 5, 20, "five more passes")
        assert {n: _started(emb, n) for n in survivors} == survivors
        assert emb.slice("wildfire")["phase"] == "Degraded"
        assert {i["instance"] for i in emb.slice("wildfire")["instances"]} == {
            "wildfire-broker-gw-gw-1", "wildfire-sp-gw-gw-1", "wildfire-broker-gw-gw-2", "wildfire-sp-gw-gw-2",
            "wildfire-broker-fog", "wildfire-sp-fog", "wildfire-broker-cloud", "wildfire-sp-cloud", "wildfire-db",
        }  # fmt: skip

        # The cloud agent comes back: its NFs are desired there still, the slice turns Ready without
        # touching the NFs on the other nodes.
        runtime = emb.fleet.runtimes["cloud"]
        runtime.start()
        for r in emb.fleet.runtimes.values():
            r.update_peers()
        emb.wait_ready("wildfire", rev)
        assert any("cloud available again" in e for e in emb.status()["events"])
        assert {n: _started(emb, n) for n in survivors} == survivors
        assert {i["node"] for i in emb.slice("wildfire")["instances"] if i["instance"].endswith("cloud")} == {
            "cloud"
        }
