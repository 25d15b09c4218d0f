"""The pure parts of the Kubernetes side: the pod a VNF becomes, pod -> state, NFInstance status."""

from __future__ import annotations

import json
from dataclasses import replace

from flyslice.nodeagent.kube.pod_driver import label_value, observe_pod, pod_manifest, pod_name
from flyslice.nodeagent.kube.source import status_body
from flyslice.nodeagent.spec import InstanceSpec, InstanceStatus

from .conftest import make_spec


def vnf() -> InstanceSpec:
    spec = make_spec(
        "wildfire-sp-cloud",
        "stream_processor",
        {"window": {"seconds": 5, "field": "t"}},
        ["wildfire-db"],
        flavor="vnf",
        node="cloud",
    )
    return replace(spec, cpu="250m", memory="128Mi", namespace="fire")


def test_pod_is_pinned_to_the_node_and_labelled_with_its_instance() -> None:
    spec = vnf()
    pod = pod_manifest(
        spec, node_name="k8s-cloud-1", namespace="fire", agent_address="10.0.0.5:7100", owner_uid="uid-1"
    )
    assert pod["spec"]["nodeName"] == "k8s-cloud-1"
    assert pod["spec"]["automountServiceAccountToken"] is False  # NF code gets no API credentials
    meta = pod["metadata"]
    assert meta["name"] == pod_name(spec) and meta["name"].startswith("nf-wildfire-sp-cloud-")
    assert meta["labels"]["flyslice.io/instance"] == "wildfire-sp-cloud"
    assert meta["labels"]["flyslice.io/node"] == "cloud"
    assert meta["annotations"]["flyslice.io/fingerprint"] == spec.fingerprint
    assert meta["ownerReferences"][0] == {
        "apiVersion": "flyslice.io/v1alpha1", "kind": "NFInstance", "name": "wildfire-sp-cloud",
        "uid": "uid-1", "controller": True, "blockOwnerDeletion": False,
    }  # fmt: skip
    (c,) = pod["spec"]["containers"]
    assert c["image"] == spec.image and c["args"] == ["--listen", "0.0.0.0:7000", "--uplink", "10.0.0.5:7100"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert InstanceSpec.from_dict(json.loads(env["FLYSLICE_SPEC"])) == spec  # the runner gets the exact spec
    assert c["resources"] == {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}


def test_a_changed_spec_gets_a_new_pod_name() -> None:
    spec = vnf()
    other = replace(spec, config={"passthrough": False})
    assert pod_name(spec) != pod_name(other) and len(pod_name(spec)) <= 63


def test_label_values_are_made_valid() -> None:
    assert label_value("a/b c") == "a-b-c"
    assert len(label_value("x" * 100)) == 63


def test_pod_states_map_to_instance_states() -> None:
    running = {
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }
    assert (observe_pod(running).state, observe_pod(running).address) == ("Running", "10.1.2.3:7000")
    crash = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}
            ],
        }
    }
    assert observe_pod(crash).state == "Failed" and "CrashLoopBackOff" in observe_pod(crash).message
    assert observe_pod({"status": {"phase": "Pending"}}).state == "Installing"
    assert observe_pod({"status": {"phase": "Failed", "message": "evicted"}}).message == "evicted"


def test_status_body_uses_the_crd_field_names() -> None:
    spec = replace(vnf(), generation=7)
    st = InstanceStatus(
        name=spec.name,
        state="Running",
        counters={"in": 4, "out": 3, "dropped": 1, "errors": 0},
        latency_ms=0.25,
        address="10.1.2.3:7000",
    )
    body = status_body(spec, st)
    assert body["observedGeneration"] == 7 and body["counters"] == {
        "in": 4,
        "out": 3,
        "dropped": 1,
        "errors": 0,
    }
    assert body["conditions"][0]["status"] == "True" and body["latencyMs"] == 0.25


def test_container_restarts_the_kubelet_did_are_observed() -> None:
    # A runner killed in its pod is restarted by the kubelet, not the agent: its restartCount is the
    # only record, and the agent adds it to the NFInstance's status.restarts.
    pod = {
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"restartCount": 2, "state": {"running": {}}}],
        }
    }
    assert (observe_pod(pod).state, observe_pod(pod).restarts) == ("Running", 2)
    pod["status"]["containerStatuses"] = [{"restartCount": 0}]
    assert observe_pod(pod).restarts == 0


def test_status_body_carries_the_start_time() -> None:
    spec = vnf()
    body = status_body(spec, InstanceStatus(spec.name, "Running", started_at=1_700_000_000.4))
    assert body["startedAt"] == "2023-11-14T22:13:20Z"
    assert "startedAt" not in status_body(spec, InstanceStatus(spec.name, "Pending"))
