"""NF sharing through the real API server (issue 15, "Done when"): examples/shared-gateways applied to a
real kube-apiserver, the operator in its own process (its least-privilege service account) and one bare
cluster agent per node, each with only its own node's credentials, the towers' with a real mosquitto each.

The operator gives the two sharing agencies' broker-gw NFInstances at each tower one ``sharedInstance.name``
(the instance the offline solver opens; the rangers' have none); each tower's agent runs ONE broker for it,
whose tenants are exactly those NFInstances; each tenant's status counts its own readings; the Slices become
Ready. Deleting one sharing slice deletes its NFInstances, and the other's broker keeps running: the same
NF object, built at the same time, built once, still counting its readings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import kubeenv
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from flyslice.nodeagent.kube.agent import api_client_for
from flyslice.operator.intake.manifests import Manifest
from flyslice.operator.intake.validation import validate
from flyslice.operator.planning.actions import instance_name
from flyslice.operator.planning.pipeline import plan
from tests.e2e.test_mqtt_outage import mosquitto_on

from .fake_kubelet import FakeKubelet
from .operator_harness import (
    REPO,
    OperatorProcess,
    apply_docs,
    cluster_agents,
    kubectl_items,
    operator_kubeconfig,
    wait_for,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(240)]

EXAMPLE = REPO / "examples" / "shared-gateways"
NODES = ("region-cloud", "region-fog", "tower-1", "tower-2")
SHARERS = ("air-quality", "fire-watch")
RANGERS = "ranger-tracking"
SLICES = (*SHARERS, RANGERS)
#: Readings per tower and slice, a different number for each: counters summed over a shared instance's
#: tenants (or credited to the wrong one) cannot pass for a tenant's own.
READINGS = {"fire-watch": 4, "air-quality": 7, RANGERS: 3}


def example_docs(prefix: str) -> list[dict[str, Any]]:
    """The example with its EdgeNodes renamed ``<prefix>-<node>`` (EdgeNodes are cluster-scoped)."""
    rename = {n: f"{prefix}-{n}" for n in NODES}
    docs = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            spec = doc.get("spec", {})
            if doc["kind"] == "EdgeNode":
                doc["metadata"]["name"] = rename[doc["metadata"]["name"]]
                for link in spec.get("links", []):
                    link["node"] = rename[link["node"]]
            if doc["kind"] == "Slice":
                for att in spec.get("attachments", []):
                    att["node"] = rename[att["node"]]
            docs.append(doc)
    return docs


def offline_instances(docs: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """NFInstance name -> shared instance id, as the solver places the same objects offline."""
    namespaced = [
        d if d["kind"] == "EdgeNode" else dict(d, metadata={**d["metadata"], "namespace": namespace})
        for d in docs
    ]
    result = validate(Manifest("test", 0, d) for d in namespaced)
    assert result.ok, result.errors
    the_plan = plan(result.catalog)
    return {
        instance_name(sp.slice.name, nf): shared
        for sp in the_plan.slices
        for nf, shared in sp.placement.instance_of.items()
    }


@contextmanager
def tower_brokers(towers: list[str], tmp: Path) -> Iterator[dict[str, tuple[str, int]]]:
    """A real mosquitto per tower (the gateway's own broker, as deployed): tower -> (host, port)."""
    with ExitStack() as stack:
        brokers = {}
        for tower in towers:
            port = kubeenv.free_port()
            (tmp / tower).mkdir(parents=True)
            stack.enter_context(mosquitto_on(port, tmp / tower))
            brokers[tower] = ("127.0.0.1", port)
        yield brokers


def publish(port: int, slice_name: str, count: int) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"devices-{slice_name}-{port}")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for seq in range(count):
            payload = {"origin": slice_name, "seq": seq, "temperature": 21.5, "pm25": 3.0, "battery": 80.0}
            client.publish(
                f"flyslice/{slice_name}/readings/forest", json.dumps(payload), qos=1
            ).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


def nfinstances(env: kubeenv.KubeEnv, namespace: str) -> dict[str, dict[str, Any]]:
    return {i["metadata"]["name"]: i for i in kubectl_items(env, namespace, "nfinstances")}


def counted_in(
    env: kubeenv.KubeEnv, namespace: str, want: dict[str, int]
) -> dict[str, dict[str, Any]] | None:
    """The NFInstances once each named one's status.counters.in is the wanted number."""
    items = nfinstances(env, namespace)
    ok = all(
        ((items.get(n) or {}).get("status") or {}).get("counters", {}).get("in") == c for n, c in want.items()
    )
    return items if ok else None


def test_sharing_slices_get_one_broker_per_tower_with_per_tenant_status_and_survive_a_peer_leaving(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    t0 = time.monotonic()
    docs = example_docs(namespace)
    towers = [f"{namespace}-{t}" for t in ("tower-1", "tower-2")]
    nodes = [f"{namespace}-{n}" for n in NODES]
    offline = offline_instances(docs, namespace)
    gw = {(s, t): instance_name(s, f"broker-gw@{t}") for s in SLICES for t in towers}

    apply_docs(kube_env, namespace, docs)
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="op-a", lease_name=f"lease-{namespace}"
    )
    try:
        items = wait_for(
            lambda: (i := nfinstances(kube_env, namespace)) and len(i) >= 18 and i, 90, "18 NFInstances"
        )
        assert len(items) == 18, sorted(items)
        shared_of = {
            n: i["spec"]["sharedInstance"]["name"] for n, i in items.items() if "sharedInstance" in i["spec"]
        }
        # Exactly the two sharers' broker-gw at each tower are tenants, and of the instance the solver opens.
        assert shared_of == offline, (shared_of, offline)
        assert sorted(shared_of) == sorted(gw[(s, t)] for s in SHARERS for t in towers)
        names = {t: shared_of[gw[(SHARERS[0], t)]] for t in towers}
        for t in towers:
            assert shared_of[gw[(SHARERS[1], t)]] == names[t]  # one instance for both agencies
            assert items[gw[(SHARERS[0], t)]]["spec"]["node"] == t
            assert items[gw[(SHARERS[0], t)]]["spec"]["sharedInstance"]["perTenant"] == {
                "cpu": "5m",
                "memory": "2Mi",
            }
        assert names[towers[0]] != names[towers[1]]

        core = client.CoreV1Api(api_client_for(str(kube_env.kubeconfig)))
        vnf_nodes = {i["spec"]["node"] for i in items.values() if i["spec"]["flavor"] == "vnf"}
        with (
            tower_brokers(towers, tmp_path / "mqtt") as brokers,
            cluster_agents(kube_env, namespace, nodes, tmp_path / "agents", mqtt=brokers) as agents,
            FakeKubelet(core, namespace, vnf_nodes),
        ):
            for a in agents.values():
                a.report_s = 0.5  # write counters within a second (30 s by default)

            def slices_ready() -> bool:
                return all(
                    (kube_env.kubectl_json("-n", namespace, "get", "slice", s).get("status") or {}).get(
                        "phase"
                    )
                    == "Ready"
                    for s in SLICES
                )

            wait_for(slices_ready, 90, "the three Slices Ready")
            ready_s = time.monotonic() - t0

            # Each tower's agent runs ONE broker for the two agencies: one shared NF object, whose tenants are
            # their NFInstances; the rangers' broker is an fNF of its own, outside it.
            built: dict[str, tuple[object, float]] = {}
            for t in towers:
                platform = agents[t].agent.platform
                assert sorted(platform.shared) == [names[t]], sorted(platform.shared)
                si = platform.shared[names[t]]
                assert sorted(si.tenants) == sorted(gw[(s, t)] for s in SHARERS)
                assert platform.shared_builds[names[t]] == 1
                assert gw[(RANGERS, t)] in platform.instances and gw[(RANGERS, t)] not in si.tenants
                assert platform.instances[gw[(RANGERS, t)]].nf is not si.nf
                built[t] = (si.nf, si.built_at)
            assert all(not agents[n].agent.platform.shared for n in nodes if n not in towers)

            # Devices publish at each tower; each tenant's status counts its own readings only.
            wait_for(
                lambda: all(not agents[t].agent.warnings() for t in towers), 30, "tower agents subscribed"
            )
            for t in towers:
                for s in SLICES:
                    publish(brokers[t][1], s, READINGS[s])
            want = {gw[(s, t)]: READINGS[s] for s in SLICES for t in towers}
            items = wait_for(
                lambda: counted_in(kube_env, namespace, want), 30, f"status.counters.in == {want}"
            )
            for s in SLICES:
                for t in towers:
                    status = items[gw[(s, t)]]["status"]
                    assert status["state"] == "Running" and status["counters"].get("rejected", 0) == 0, status
            # What the filters behind them received went through the right tenant's next hops.
            for s in SLICES:
                for t in towers:
                    f = agents[t].agent.status()[instance_name(s, f"filter-gw@{t}")]
                    assert f.counters["in"] == READINGS[s], (s, t, f.counters)
            traffic_s = time.monotonic() - t0 - ready_s

            # One agency leaves: its NFInstances go; the other's broker keeps running, untouched.
            leaving, staying = SHARERS
            kube_env.kubectl("-n", namespace, "delete", "slice", leaving, "--wait=false")
            wait_for(
                lambda: kube_env.kubectl("-n", namespace, "get", "slice", leaving, check=False).returncode != 0,
                60, f"Slice {leaving} deleted after its teardown",
            )  # fmt: skip
            left = nfinstances(kube_env, namespace)
            assert not [n for n, i in left.items() if i["spec"]["slice"] == leaving], sorted(left)
            assert len(left) == 12
            wait_for(
                lambda: all(sorted(agents[t].agent.platform.shared[names[t]].tenants) == [gw[(staying, t)]]
                            for t in towers),
                30, f"{leaving}'s tenants detached",
            )  # fmt: skip
            for t in towers:
                platform = agents[t].agent.platform
                assert sorted(platform.shared) == [names[t]]
                si = platform.shared[names[t]]
                nf, built_at = built[t]
                assert si.nf is nf and si.built_at == built_at and platform.shared_builds[names[t]] == 1
                assert left[gw[(staying, t)]]["spec"]["sharedInstance"]["name"] == names[t]
                assert (left[gw[(staying, t)]].get("status") or {}).get("state") == "Running"
            ready = kube_env.kubectl_json("-n", namespace, "get", "slice", staying)["status"]
            assert ready["phase"] == "Ready", ready

            # The remaining tenant still serves its agency: more readings, counted on top of the first.
            for t in towers:
                publish(brokers[t][1], staying, 2)
            want = {gw[(staying, t)]: READINGS[staying] + 2 for t in towers}
            wait_for(lambda: counted_in(kube_env, namespace, want), 30, f"status.counters.in == {want}")
            for t in towers:
                assert agents[t].agent.platform.shared[names[t]].nf is built[t][0]
            teardown_s = time.monotonic() - t0 - ready_s - traffic_s
    finally:
        op.stop()
        print(op.tail())
    print(f"shared-gateways on kube: Ready {ready_s:.1f}s, traffic {traffic_s:.1f}s, leave {teardown_s:.1f}s")
