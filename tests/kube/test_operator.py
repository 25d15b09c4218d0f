"""The operator process on the real API server: restart adoption, leader election, invalid objects."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import kubeenv
import pytest

from .operator_harness import (
    OperatorProcess,
    apply_docs,
    kubectl_items,
    operator_kubeconfig,
    operators,
    wait_for,
    wildfire_docs,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]


def _instances(env: kubeenv.KubeEnv, ns: str) -> dict[str, dict[str, Any]]:
    return {i["metadata"]["name"]: i for i in kubectl_items(env, ns, "nfinstances")}


def _broken_slice(prefix: str) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "Slice",
        "metadata": {"name": "broken"},
        "spec": {
            "services": ["data-collection"],
            "qos": {"maxLatencyMs": 10},
            "attachments": [{"node": f"{prefix}-gw-9"}],
        },
    }


def test_restart_adopts_what_runs_no_duplicates_no_moves(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    apply_docs(kube_env, namespace, [*wildfire_docs(namespace), _broken_slice(namespace)])
    cfg = operator_kubeconfig(kube_env)
    first = OperatorProcess(cfg, namespace, tmp_path, identity="first", lease_name=f"lease-{namespace}")
    with operators(first):
        before = wait_for(
            lambda: (i := _instances(kube_env, namespace)) and len(i) >= 9 and i, 60, "9 NFInstances"
        )
        # One invalid slice never blocks the valid one; it says why in its status and in an Event.
        broken = wait_for(
            lambda: kube_env.kubectl_json("-n", namespace, "get", "slice", "broken").get("status"),
            20,
            "status",
        )
        assert broken["phase"] == "Pending"
        placed = {c["type"]: c for c in broken["conditions"]}["Placed"]
        assert (placed["status"], placed["reason"]) == ("False", "Invalid")
        assert any(f"EdgeNode '{namespace}-gw-9' does not exist" in r for r in broken["reasons"])
        warnings = kubectl_items(
            kube_env, namespace, "events", "--field-selector", "involvedObject.name=broken"
        )
        assert any(e["type"] == "Warning" and e["reason"] == "Invalid" for e in warnings)
        wait_for(
            lambda: kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire").get("status", {}).get("phase"),
            20, "wildfire status",
        )  # fmt: skip
        before = _instances(kube_env, namespace)
        first.stop(
            signal.SIGKILL
        )  # a crash: the lease is not released, the new replica waits for it to expire
    second = OperatorProcess(cfg, namespace, tmp_path, identity="second", lease_name=f"lease-{namespace}")
    with operators(second):
        status = wait_for(
            lambda: (s := second.status()) and s["leader"] and s["passes"] >= 3 and s, 40, "3 passes"
        )
        assert status["nfinstances"] == {"created": 0, "updated": 0, "deleted": 0}, second.tail()
        after = _instances(kube_env, namespace)
        assert sorted(after) == sorted(before)
        for name, inst in after.items():
            # Not written at all: same object, same version, same node and flavour.
            assert inst["metadata"]["uid"] == before[name]["metadata"]["uid"]
            assert inst["metadata"]["resourceVersion"] == before[name]["metadata"]["resourceVersion"], name
            assert inst["spec"] == before[name]["spec"]
        lease = kube_env.kubectl_json("-n", "flyslice-system", "get", "lease", f"lease-{namespace}")
        assert lease["spec"]["holderIdentity"] == "second"
        assert lease["spec"]["leaseTransitions"] >= 1

        # A spec change updates the affected NFInstance in place (same object, new spec), nothing else.
        alarm = {"alarm": {"field": "temperature", "above": 75, "topic": "alarms/fire"}}
        kube_env.kubectl(
            "-n", namespace, "patch", "slice", "wildfire", "--type=merge",
            "-p", json.dumps({"spec": {"config": {"sp-cloud": alarm}}}),
        )  # fmt: skip
        updated = wait_for(
            lambda: (i := _instances(kube_env, namespace)["wildfire-sp-cloud"])["spec"]["config"] == alarm and i,
            20, "the new sp-cloud config",
        )  # fmt: skip
        assert updated["metadata"]["uid"] == before["wildfire-sp-cloud"]["metadata"]["uid"]
        assert updated["metadata"]["generation"] == before["wildfire-sp-cloud"]["metadata"]["generation"] + 1
        status = wait_for(
            lambda: (s := second.status()) and s["nfinstances"]["updated"] >= 1 and s, 10, "update"
        )
        assert status["nfinstances"] == {"created": 0, "updated": 1, "deleted": 0}
        generation = kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")["metadata"][
            "generation"
        ]
        wait_for(
            lambda: kube_env.kubectl_json("-n", namespace, "get", "slice", "wildfire")["status"]["observedGeneration"]
            == generation,
            10, "observedGeneration to follow",
        )  # fmt: skip


def test_two_replicas_one_leader_and_handover(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    apply_docs(kube_env, namespace, wildfire_docs(namespace))
    cfg = operator_kubeconfig(kube_env)
    lease = f"lease-{namespace}"
    a = OperatorProcess(cfg, namespace, tmp_path, identity="replica-a", lease_name=lease)
    b = OperatorProcess(cfg, namespace, tmp_path, identity="replica-b", lease_name=lease)
    with operators(a, b):
        wait_for(lambda: len(_instances(kube_env, namespace)) >= 9, 60, "9 NFInstances")
        time.sleep(3)  # several renew periods: the standby must stay a standby
        sa, sb = wait_for(
            lambda: (x := a.status()) and (y := b.status()) and (x, y), 10, "both status endpoints"
        )
        assert [sa["leader"], sb["leader"]].count(True) == 1, (sa, sb)
        leader, standby = (a, b) if sa["leader"] else (b, a)
        st_standby = sb if leader is a else sa
        assert st_standby["passes"] == 0 and st_standby["apiRequests"] < 20
        assert a.healthz() == b.healthz() == 200
        held = kube_env.kubectl_json("-n", "flyslice-system", "get", "lease", lease)["spec"]
        assert held["holderIdentity"] == leader.identity
        instances = _instances(kube_env, namespace)
        assert len(instances) == 9

        assert leader.stop(signal.SIGTERM) == 0  # a clean stop releases the lease at once
        took = time.monotonic()
        wait_for(
            lambda: (s := standby.status()) and s["leader"] and s["passes"] >= 1, 15, "the standby to lead"
        )
        assert time.monotonic() - took < 4, "the released lease should be taken before it would have expired"
        wait_for(lambda: (s := standby.status()) and s["passes"] >= 2, 10, "a second pass")
        assert standby.status()["nfinstances"]["created"] == 0  # type: ignore[index]
        assert sorted(_instances(kube_env, namespace)) == sorted(instances)
