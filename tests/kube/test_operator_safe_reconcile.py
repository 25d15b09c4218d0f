"""Issue 11 in the kopf operator against the real API server: a tightened, infeasible budget keeps the
running slice (Degraded / NewIntentNotAdmitted, an Event) until restored; and a pass that fails — here
because an admin narrowed the operator's RBAC — marks the Slice Stalled, never Ready, until fixed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubeenv
import pytest

from flyslice.nodeagent.kube.agent import api_client_for

from .fake_kubelet import FakeKubelet
from .operator_harness import (
    REPO,
    OperatorProcess,
    apply_docs,
    cluster_agents,
    kubectl_items,
    operator_kubeconfig,
    wait_for,
    wildfire_docs,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(180)]


def _slice_status(env: kubeenv.KubeEnv, ns: str) -> dict[str, Any]:
    status: dict[str, Any] = env.kubectl_json("-n", ns, "get", "slice", "wildfire").get("status") or {}
    return status


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions", [])}


def _events(env: kubeenv.KubeEnv, ns: str, reason: str) -> list[dict[str, Any]]:
    items = kubectl_items(env, ns, "events", "--field-selector", "involvedObject.name=wildfire")
    return [e for e in items if e["reason"] == reason]


def _set_budget(env: kubeenv.KubeEnv, ns: str, ms: float) -> None:
    patch = json.dumps({"spec": {"qos": {"maxLatencyMs": ms}}})
    env.kubectl("-n", ns, "patch", "slice", "wildfire", "--type=merge", "-p", patch)


def _instances(env: kubeenv.KubeEnv, ns: str) -> dict[str, tuple[str, str]]:
    return {
        i["metadata"]["name"]: (i["spec"]["node"], i["spec"]["flavor"])
        for i in kubectl_items(env, ns, "nfinstances")
    }


def test_an_infeasible_budget_keeps_the_nfinstances_until_restored(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    docs = wildfire_docs(namespace)
    nodes = [d["metadata"]["name"] for d in docs if d["kind"] == "EdgeNode"]
    apply_docs(kube_env, namespace, docs)
    op = OperatorProcess(
        operator_kubeconfig(kube_env), namespace, tmp_path, identity="safe", lease_name=f"lease-{namespace}"
    )
    core = client.CoreV1Api(api_client_for(str(kube_env.kubeconfig)))
    try:
        placed = wait_for(lambda: len(i := _instances(kube_env, namespace)) == 9 and i, 60, "9 NFInstances")
        vnf_nodes = {n for n, f in placed.values() if f == "vnf"}
        with (
            cluster_agents(kube_env, namespace, nodes, tmp_path / "agents"),
            FakeKubelet(core, namespace, vnf_nodes),
        ):
            wait_for(lambda: _slice_status(kube_env, namespace).get("phase") == "Ready", 60, "slice Ready")
            uids = {i["metadata"]["uid"] for i in kubectl_items(kube_env, namespace, "nfinstances")}

            _set_budget(kube_env, namespace, 5)  # no placement meets 5 ms
            held = wait_for(
                lambda: (s := _slice_status(kube_env, namespace)).get("phase") == "Degraded" and s,
                30,
                "the new intent refused",
            )
            conditions = _conditions(held)
            assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == (
                "True",
                "NewIntentNotAdmitted",
            )
            assert conditions["Ready"]["status"] == "False"
            (event,) = wait_for(lambda: _events(kube_env, namespace, "NewIntentNotAdmitted"), 10, "an Event")
            assert event["type"] == "Warning"
            # Nothing was torn down or replaced: the same 9 objects, where they were, still Running.
            assert _instances(kube_env, namespace) == placed
            current = kubectl_items(kube_env, namespace, "nfinstances")
            assert {i["metadata"]["uid"] for i in current} == uids
            assert {i["status"]["state"] for i in current} == {"Running"}
            for _ in range(3):  # and stays so over later passes (resync 1 s)
                assert _slice_status(kube_env, namespace)["phase"] == "Degraded"
                assert len(kubectl_items(kube_env, namespace, "nfinstances")) == 9
                time.sleep(1)

            _set_budget(kube_env, namespace, 10)
            ready = wait_for(
                lambda: (s := _slice_status(kube_env, namespace)).get("phase") == "Ready" and s,
                60,
                "Ready again",
            )
            assert _conditions(ready)["Degraded"]["status"] == "False"
            assert _instances(kube_env, namespace) == placed
            wait_for(
                lambda: _events(kube_env, namespace, "NewIntentAdmitted"), 10, "a NewIntentAdmitted Event"
            )
    finally:
        op.stop()
        print(op.tail())


@pytest.fixture
def own_operator_account(kube_env: kubeenv.KubeEnv, namespace: str) -> Iterator[tuple[str, Path]]:
    """The deploy/k3s operator RBAC under names of this test's own, so narrowing it touches no other test."""
    operator_kubeconfig(kube_env)  # the namespace flyslice-system and the shared objects exist
    name = f"fso-{namespace}"[:63]
    text = (REPO / "deploy" / "k3s" / "rbac-operator.yaml").read_text().replace("flyslice-operator", name)
    kube_env.kubectl("apply", "-f", "-", input=text)
    try:
        yield name, kube_env.service_account_kubeconfig("flyslice-system", name, create=False)
    finally:
        kube_env.kubectl("delete", "--ignore-not-found", "-f", "-", input=text, check=False)


def test_a_failing_pass_marks_the_slice_stalled_until_it_passes_again(
    kube_env: kubeenv.KubeEnv,
    crds_installed: list[str],
    namespace: str,
    tmp_path: Path,
    own_operator_account: tuple[str, Path],
) -> None:
    role, kubeconfig = own_operator_account
    apply_docs(kube_env, namespace, wildfire_docs(namespace))
    op = OperatorProcess(kubeconfig, namespace, tmp_path, identity="stall", lease_name=f"lease-{namespace}")
    try:
        wait_for(lambda: len(_instances(kube_env, namespace)) == 9, 60, "9 NFInstances")
        wait_for(lambda: op.healthz() == 200, 20, "healthy")
        placed = _instances(kube_env, namespace)
        # An admin takes away the operator's right to read NFPackages: every pass fails to list them.
        rule = json.dumps([{"op": "replace", "path": "/rules/0/resources",
                            "value": ["slices", "networkservices", "edgenodes", "nfinstances", "gitsources"]}])  # fmt: skip
        kube_env.kubectl("patch", "clusterrole", role, "--type=json", "-p", rule)
        stalled = wait_for(
            lambda: (
                _conditions(s := _slice_status(kube_env, namespace)).get("Stalled", {}).get("status")
                == "True"
                and s
            ),
            30,
            "Stalled",
        )
        conditions = _conditions(stalled)
        assert conditions["Ready"]["status"] == "False"
        assert "nfpackages" in conditions["Stalled"]["message"]  # the API server's own words
        assert stalled["phase"] != "Ready"
        (event,) = wait_for(lambda: _events(kube_env, namespace, "Stalled"), 10, "a Stalled Event")
        assert event["type"] == "Warning" and "reconcile pass failed" in event["message"]
        wait_for(lambda: op.healthz() == 503, 30, "/healthz 503 after 3 failed passes")
        status = op.status()
        assert status is not None
        assert _instances(kube_env, namespace) == placed  # what runs is left alone

        kube_env.kubectl(
            "apply",
            "-f",
            "-",
            input=(REPO / "deploy" / "k3s" / "rbac-operator.yaml")
            .read_text()
            .replace("flyslice-operator", role),
        )
        wait_for(
            lambda: (
                _conditions(_slice_status(kube_env, namespace)).get("Stalled", {}).get("status") == "False"
            ),
            60,
            "Stalled cleared",
        )
        wait_for(lambda: op.healthz() == 200, 30, "healthy again")
        assert _instances(kube_env, namespace) == placed
        assert len(_events(kube_env, namespace, "Stalled")) == 1  # once, not once per failed pass
    finally:
        op.stop()
        print(op.tail())
