"""An unreachable MQTT broker in cluster mode, on a real kube-apiserver: the node's agent (a real
``ClusterAgent`` pointed at a closed port) writes ``IngressReady=False`` (reason ``BrokerUnreachable``)
on its EdgeNode, the operator surfaces it on the Slice attached there (a condition and a Warning
Event, the slice still Ready: its NFs run), and both clear once a real mosquitto listens on that port."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubeenv
import pytest

from flyslice.nodeagent.kube.agent import api_client_for
from tests.e2e.test_mqtt_outage import mosquitto_on
from tests.observe.health import argo_health

from .fake_kubelet import FakeKubelet
from .operator_harness import (
    OperatorProcess,
    apply_docs,
    cluster_agents,
    operator_kubeconfig,
    wait_for,
    wildfire_docs,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None)


def test_an_unreachable_broker_is_an_edgenode_condition_and_a_slice_warning_until_mosquitto_starts(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    docs = wildfire_docs(namespace)
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "EdgeNode"]
    gw1, gw2 = f"{namespace}-gw-1", f"{namespace}-gw-2"  # the slice's attachments
    apply_docs(kube_env, namespace, docs)
    broker_port = kubeenv.free_port()  # nothing listens here until mosquitto starts below
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="op-i", lease_name=f"lease-{namespace}"
    )
    core = client.CoreV1Api(api_client_for(str(kube_env.kubeconfig)))

    def edge_node(name: str) -> dict[str, Any]:
        node: dict[str, Any] = kube_env.kubectl_json("get", "edgenode", name)
        return node

    def the_slice() -> dict[str, Any]:
        obj: dict[str, Any] = kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")
        return obj

    def slice_events(reason: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kube_env.kubectl_json("-n", namespace, "get", "events")["items"]
        return [e for e in items if e["reason"] == reason and e["involvedObject"]["kind"] == "Slice"]

    try:
        with (
            cluster_agents(
                kube_env, namespace, nodes, tmp_path / "agents", mqtt={gw1: ("127.0.0.1", broker_port)}
            ),
            FakeKubelet(core, namespace, set(nodes)),
        ):
            # The agent with a broker it cannot reach says so on its EdgeNode, with why; Ready is
            # untouched (its NFs run) and the agents without --mqtt write no IngressReady at all.
            ingress = wait_for(
                lambda: (c := condition(edge_node(gw1), "IngressReady")) and c["status"] == "False" and c,
                30, "IngressReady=False on the EdgeNode",
            )  # fmt: skip
            assert ingress["reason"] == "BrokerUnreachable"
            assert f"127.0.0.1:{broker_port}" in ingress["message"], ingress
            assert "failed attempt" in ingress["message"], ingress
            assert ingress["lastTransitionTime"]
            assert condition(edge_node(gw1), "Ready")["status"] == "True"  # type: ignore[index]
            assert condition(edge_node(gw2), "IngressReady") is None

            # The operator: the slice attached to that node is Ready (its NFs run) but never without
            # the warning, as a condition naming the node and one Warning Event.
            sl = wait_for(
                lambda: (
                    (s := the_slice()).get("status", {}).get("phase") == "Ready"
                    and (c := condition(s, "IngressReady")) and c["status"] == "False" and s
                ),
                90, "slice Ready with IngressReady=False",
            )  # fmt: skip
            warning = condition(sl, "IngressReady")
            assert warning is not None and warning["reason"] == "BrokerUnreachable"
            assert warning["message"].startswith(f"node {gw1}: "), warning
            assert f"127.0.0.1:{broker_port}" in warning["message"]
            assert "(down " not in warning["message"]  # no running duration: not a write per pass
            assert gw2 not in warning["message"]
            assert condition(sl, "Ready")["status"] == "True"  # type: ignore[index]
            assert argo_health("Slice", sl)[0] == "Healthy"
            events = wait_for(lambda: slice_events("IngressNotReady"), 20, "Warning Event IngressNotReady")
            assert events[0]["type"] == "Warning" and gw1 in events[0]["message"]
            transition = warning["lastTransitionTime"]

            # Still down a few heartbeats later: the same condition, not rewritten per pass.
            def attempts() -> int:
                m = re.search(r"(\d+) failed attempt", str(condition(edge_node(gw1), "IngressReady")))
                return int(m.group(1)) if m else 0

            first = attempts()
            wait_for(lambda: attempts() > first, 20, "a retried connection")
            again = condition(the_slice(), "IngressReady")
            assert again is not None and again["lastTransitionTime"] == transition
            assert len(slice_events("IngressNotReady")) == 1

            # A real broker on that port: the agent connects (back-off at most 8 s), both clear.
            with mosquitto_on(broker_port, tmp_path):
                cleared = wait_for(
                    lambda: (c := condition(edge_node(gw1), "IngressReady")) and c["status"] == "True" and c,
                    30, "IngressReady=True on the EdgeNode",
                )  # fmt: skip
                assert cleared["reason"] == "BrokerConnected" and cleared["message"] == ""
                sl = wait_for(
                    lambda: (c := condition(s := the_slice(), "IngressReady")) and c["status"] == "True" and s,
                    30, "IngressReady=True on the slice",
                )  # fmt: skip
                assert condition(sl, "IngressReady")["reason"] == "BrokerConnected"  # type: ignore[index]
                assert sl["status"]["phase"] == "Ready"
                back = wait_for(lambda: slice_events("IngressReady"), 20, "Event IngressReady")
                assert back[0]["type"] == "Normal"
    finally:
        op.stop()
