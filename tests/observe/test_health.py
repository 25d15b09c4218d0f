"""kstatus conditions from the reconcile core, and the Argo CD / Flux health checks read them right."""

from __future__ import annotations

from typing import Any

import pytest

from flyslice.nodeagent.kube.source import edgenode_conditions, status_body
from flyslice.nodeagent.spec import InstanceSpec, InstanceStatus
from flyslice.operator.reconcile import ControllerState, InstanceObservation, Observation, reconcile
from tests.operator.conftest import catalog_from, wildfire_docs

from .health import argo_health, flux_health

T0 = 1_000_000.0


def as_object(status: dict[str, Any], generation: int | None = None) -> dict[str, Any]:
    """The Slice as the API server holds it; by default at the generation the status observed."""
    gen = status["observedGeneration"] if generation is None else generation
    return {"metadata": {"name": "wildfire", "generation": gen}, "status": status}


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def assert_kstatus(status: dict[str, Any]) -> None:
    """The kstatus contract: Ready, Reconciling and Stalled present, never both abnormal-true ones."""
    c = conditions(status)
    assert {"Ready", "Reconciling", "Stalled"} <= set(c), c
    assert not (c["Reconciling"] == "True" and c["Stalled"] == "True"), c
    if c["Ready"] == "True":
        assert c["Reconciling"] == c["Stalled"] == "False", c
    assert "observedGeneration" in status
    for cond in status["conditions"]:
        assert cond["reason"][:1].isupper() and " " not in cond["reason"], cond  # CamelCase reasons


def statuses() -> dict[str, dict[str, Any]]:
    """Every phase the reconcile core writes, from the wildfire example."""
    docs = wildfire_docs()
    catalog = catalog_from(docs)
    out: dict[str, dict[str, Any]] = {}
    first = reconcile(catalog, ControllerState(), Observation(), now=T0, revision="r1")
    out["Deploying"] = dict(first.slice_status["default/wildfire"])
    running = {(a.namespace, a.name): InstanceObservation("Running", a.node) for a in first.actions}
    ready = reconcile(catalog, first.state, Observation(instances=running), now=T0 + 1)
    out["Ready"] = dict(ready.slice_status["default/wildfire"])
    failed = dict(running)
    a = first.actions[0]
    failed[(a.namespace, a.name)] = InstanceObservation("Failed", a.node, "module crashed")
    degraded = reconcile(catalog, first.state, Observation(instances=failed), now=T0 + 2)
    out["Degraded"] = dict(degraded.slice_status["default/wildfire"])
    tight = [dict(d) for d in docs]
    for d in tight:
        if d["kind"] == "Slice":
            d["spec"] = {**d["spec"], "qos": {**d["spec"]["qos"], "maxLatencyMs": 0.01}}
    infeasible = reconcile(catalog_from(tight), ControllerState(), Observation(), now=T0)
    out["Infeasible"] = dict(infeasible.slice_status["default/wildfire"])
    expired = reconcile(catalog, ready.state, Observation(instances=running), now=T0 + 8 * 3600)
    out["Expired"] = dict(expired.slice_status["default/wildfire"])
    return out


STATUSES = statuses()
EXPECTED = {
    # phase: (Argo CD health, Flux status)
    "Deploying": ("Progressing", "InProgress"),
    "Ready": ("Healthy", "Current"),
    "Degraded": ("Degraded", "Failed"),
    "Infeasible": ("Degraded", "Failed"),
    "Expired": ("Suspended", "InProgress"),
}


@pytest.mark.parametrize("phase", sorted(EXPECTED))
def test_every_phase_is_kstatus_conformant_and_read_right_by_argo_cd_and_flux(phase: str) -> None:
    status = STATUSES[phase]
    assert status["phase"] == phase
    assert_kstatus(status)
    argo, message = argo_health("Slice", as_object(status))
    assert (argo, flux_health("Slice", as_object(status))) == EXPECTED[phase]
    if argo == "Degraded":
        assert message and message != phase  # the reason a user can act on, not just the phase name


def test_reconciling_and_stalled_say_why() -> None:
    deploying, infeasible = STATUSES["Deploying"], STATUSES["Infeasible"]
    assert conditions(deploying)["Reconciling"] == "True"
    stalled = next(c for c in infeasible["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "Infeasible")
    assert "0.01 ms budget" in stalled["message"]


def test_a_generation_not_yet_observed_is_progressing_even_when_ready() -> None:
    obj = as_object(
        STATUSES["Ready"], generation=STATUSES["Ready"]["observedGeneration"] + 1
    )  # the user just edited it; the status is from gen 1
    assert argo_health("Slice", obj)[0] == "Progressing"
    assert flux_health("Slice", obj) == "InProgress"


def test_no_status_yet_is_progressing() -> None:
    obj = {"metadata": {"name": "new", "generation": 1}}
    assert argo_health("Slice", obj)[0] == "Progressing"
    assert argo_health("GitSource", obj)[0] == "Progressing"
    assert argo_health("NFInstance", obj)[0] == "Progressing"


@pytest.mark.parametrize(
    ("state", "argo", "flux"),
    [
        ("Running", "Healthy", "Current"),
        ("Failed", "Degraded", "Failed"),
        ("Pending", "Progressing", "InProgress"),
        ("Installing", "Progressing", "InProgress"),
        ("Updating", "Progressing", "InProgress"),
        ("Stopped", "Progressing", "InProgress"),
    ],
)
def test_nfinstance_status_the_agent_writes_is_kstatus_and_read_right(
    state: str, argo: str, flux: str
) -> None:
    spec = InstanceSpec(
        name="wildfire-db", namespace="default", slice="wildfire", role="db", package="storage",
        flavor="fnf", node="gw-1", module="builtin:storage", generation=3,
    )  # fmt: skip
    body = status_body(
        spec, InstanceStatus(spec.name, state, message="module crashed" if state == "Failed" else "")
    )
    assert_kstatus(body)
    assert body["observedGeneration"] == 3
    obj = {"metadata": {"name": spec.name, "generation": 3}, "status": body}
    health, message = argo_health("NFInstance", obj)
    assert (health, flux_health("NFInstance", obj)) == (argo, flux)
    if state == "Failed":
        assert message == "module crashed"
    # A spec edited since the agent last acted is Progressing whatever the state.
    newer = {"metadata": {"name": spec.name, "generation": 4}, "status": body}
    assert (argo_health("NFInstance", newer)[0], flux_health("NFInstance", newer)) == (
        "Progressing",
        "InProgress",
    )


@pytest.mark.parametrize(
    ("healthy", "argo", "flux"), [(True, "Healthy", "Current"), (False, "Degraded", "Failed")]
)
def test_edgenode_heartbeat_conditions_are_kstatus_and_read_right(
    healthy: bool, argo: str, flux: str
) -> None:
    why = "ok" if healthy else "slice workers not running: wildfire"
    conds = edgenode_conditions(healthy, why, "2026-01-01T00:00:00Z", 2)
    status = {"heartbeatTime": "2026-01-01T00:00:00Z", "observedGeneration": 2, "conditions": conds}
    assert_kstatus(status)
    obj = {"metadata": {"name": "gw-1", "generation": 2}, "status": status}
    health, message = argo_health("EdgeNode", obj)
    assert (health, flux_health("EdgeNode", obj)) == (argo, flux)
    assert healthy or message == why
    assert argo_health("EdgeNode", {"metadata": {"name": "gw-1", "generation": 1}})[0] == "Progressing"


def test_an_unreachable_broker_on_an_edgenode_is_a_warning_not_a_health_verdict() -> None:
    why = "cannot connect to MQTT broker 127.0.0.1:1 (down 12s, 4 failed attempt(s), ...)"
    conds = edgenode_conditions(True, "ok", "2026-01-01T00:00:00Z", 2, (False, why, "2026-01-01T00:00:05Z"))
    ingress = next(c for c in conds if c["type"] == "IngressReady")
    assert (ingress["status"], ingress["reason"], ingress["message"]) == ("False", "BrokerUnreachable", why)
    assert ingress["lastTransitionTime"] == "2026-01-01T00:00:05Z" and ingress["observedGeneration"] == 2
    status = {"heartbeatTime": "2026-01-01T00:00:00Z", "observedGeneration": 2, "conditions": conds}
    assert_kstatus(status)
    obj = {"metadata": {"name": "gw-1", "generation": 2}, "status": status}
    assert (argo_health("EdgeNode", obj)[0], flux_health("EdgeNode", obj)) == ("Healthy", "Current")
    ok = edgenode_conditions(True, "ok", "2026-01-01T00:00:00Z", 2, (True, "", "2026-01-01T00:00:09Z"))
    assert next(c for c in ok if c["type"] == "IngressReady")["reason"] == "BrokerConnected"
    assert all(
        c["type"] != "IngressReady" for c in edgenode_conditions(True, "ok", "2026-01-01T00:00:00Z", 2)
    )
