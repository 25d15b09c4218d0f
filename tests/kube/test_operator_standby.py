"""Two operator processes on the real API server: the standby says who leads (status, console,
metrics), and the leader's pod carries ``flyslice.io/leader=true`` for the console Service, across a
handover. The pods are real Pod objects in flyslice-system (no kubelet runs them); each process gets
its pod's name from ``POD_NAME``/``POD_NAMESPACE``, as the downward API gives it in deploy/k3s."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

import kubeenv
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flyslice.operator.kube.kopf_operator import leadership
from flyslice.operator.kube.leader import LEADER_LABEL, LeaderPodLabel

from .operator_harness import (
    REPO,
    OperatorProcess,
    apply_docs,
    kubectl_items,
    operator_kubeconfig,
    operators,
    wait_for,
    wildfire_docs,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(150)]

SYSTEM = "flyslice-system"


def _get(proc: OperatorProcess, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}{path}", timeout=3) as resp:
        body: bytes = resp.read()
        return body


def _console(proc: OperatorProcess) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_get(proc, "/console/state"))
    return doc


def _leader_gauge(proc: OperatorProcess) -> dict[str, float]:
    text = _get(proc, "/metrics").decode()
    (fam,) = [f for f in text_string_to_metric_families(text) if f.name == "flyslice_leader"]
    return {s.labels["identity"]: s.value for s in fam.samples}


def _named_leader(proc: OperatorProcess) -> dict[str, Any] | None:
    st = proc.status()
    return st if st and st.get("leaderIdentity") else None


def _console_selector() -> str:
    svc = yaml.safe_load((REPO / "deploy" / "k3s" / "console-service.yaml").read_text())
    return ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())


def _pod(name: str, test: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "flyslice-operator", "flyslice.io/test": test}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": SYSTEM, "labels": labels},
        "spec": {
            "serviceAccountName": "flyslice-operator",
            "automountServiceAccountToken": False,
            "containers": [{"name": "operator", "image": "ghcr.io/flyslice/operator:0.1.0"}],
        },
    }


def _labels(env: kubeenv.KubeEnv, test: str) -> dict[str, str | None]:
    pods = kubectl_items(env, SYSTEM, "pods", "-l", f"flyslice.io/test={test}")
    return {p["metadata"]["name"]: p["metadata"].get("labels", {}).get(LEADER_LABEL) for p in pods}


def _routed(env: kubeenv.KubeEnv, test: str) -> list[str]:
    """The pods the console Service's selector picks (among this test's)."""
    pods = kubectl_items(env, SYSTEM, "pods", "-l", f"{_console_selector()},flyslice.io/test={test}")
    return sorted(p["metadata"]["name"] for p in pods)


def test_standby_names_the_leader_and_the_service_follows_the_leader(
    kube_env: kubeenv.KubeEnv, crds_installed: list[str], namespace: str, tmp_path: Path
) -> None:
    apply_docs(kube_env, namespace, wildfire_docs(namespace))
    cfg = operator_kubeconfig(kube_env)  # also applies deploy/k3s RBAC (patch on pods in flyslice-system)
    pods = {"replica-a": f"{namespace}-op-a", "replica-b": f"{namespace}-op-b"}
    stale = _pod(pods["replica-b"], namespace)
    stale["metadata"]["labels"][LEADER_LABEL] = "true"  # left over from an earlier container in that pod
    kube_env.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": [_pod(pods["replica-a"], namespace), stale]}
        ),
    )
    lease = f"lease-{namespace}"
    procs = [
        OperatorProcess(
            cfg,
            namespace,
            tmp_path,
            identity=ident,
            lease_name=lease,
            env={"POD_NAME": pod, "POD_NAMESPACE": SYSTEM},
        )
        for ident, pod in pods.items()
    ]
    try:
        with operators(*procs):
            a, b = procs
            wait_for(lambda: len(kubectl_items(kube_env, namespace, "nfinstances")) >= 9, 60, "9 NFInstances")
            sa = wait_for(lambda: b.status() and a.status(), 10, "both status endpoints")
            leader, standby = (a, b) if sa["leader"] else (b, a)
            st = wait_for(lambda: _named_leader(standby), 10, "the standby to name the leader")

            # The standby answers clearly, from the Lease holder: /status, the console, the metrics.
            assert st["leader"] is False and st["role"] == "standby"
            assert st["leaderIdentity"] == leader.identity
            assert st["message"] == f"standby: not the leader; the leader is {leader.identity}"
            doc = _console(standby)["status"]
            assert doc["message"] == st["message"] and doc["slices"] == []
            lst = leader.status()
            assert lst is not None and lst["role"] == "leader" and lst["leaderIdentity"] == leader.identity
            assert _leader_gauge(leader) == {leader.identity: 1.0}
            assert _leader_gauge(standby) == {standby.identity: 0.0}
            # The page itself draws the banner from that document.
            js = _get(standby, "/console/console.js").decode()
            assert 'status.role === "standby"' in js and 'id="role"' in _get(standby, "/console/").decode()

            # Only the leader's pod is labelled (the stale "true" was cleared), so the Service routes there.
            wanted = {pods[leader.identity]: "true", pods[standby.identity]: "false"}
            wait_for(lambda: _labels(kube_env, namespace) == wanted, 10, f"labels {wanted}")
            assert _routed(kube_env, namespace) == [pods[leader.identity]]

            # Handover: the leader stops; the other takes the Lease, its label and the console's slices.
            assert leader.stop(signal.SIGTERM) == 0
            assert _labels(kube_env, namespace)[pods[leader.identity]] == "false"  # off before release
            wait_for(
                lambda: (s := standby.status()) and s["leader"] and s["passes"] >= 1,
                15,
                "the standby to lead",
            )
            wait_for(
                lambda: _routed(kube_env, namespace) == [pods[standby.identity]], 10, "the Service to follow"
            )
            assert _labels(kube_env, namespace) == {
                pods[leader.identity]: "false",
                pods[standby.identity]: "true",
            }
            now = wait_for(
                lambda: (
                    (d := _console(standby)["status"])
                    and sum(len(s["instances"]) for s in d["slices"]) == 9
                    and d
                ),
                15,
                "the new leader's console to show the 9 instances",
            )
            assert now["role"] == "leader" and now["leaderIdentity"] == standby.identity
            assert len(now["slices"]) >= 1 and all(s["phase"] for s in now["slices"]), now
            assert _leader_gauge(standby) == {standby.identity: 1.0}
    finally:
        kube_env.kubectl("-n", SYSTEM, "delete", "pod", *pods.values(), "--wait=false", check=False)


def test_unknown_pod_name_never_writes_a_label() -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"unexpected API call {name}")

    for ns, pod in ((None, None), ("flyslice-system", None), (None, "op-a"), ("", "")):
        label = LeaderPodLabel(NoCalls(), ns, pod)
        assert not label.enabled and label.set(True) is False and label.value is None


def test_leadership_message() -> None:
    assert leadership("b_1", False, "a_2")["message"] == "standby: not the leader; the leader is a_2"
    assert leadership("b_1", False, "") == {
        "role": "standby",
        "leaderIdentity": None,
        "message": "standby: not the leader; the leader is unknown (no replica holds the lease yet)",
    }
    assert leadership("a_2", True, "a_2")["role"] == "leader"


def test_unset_pod_env_disables_the_label(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.setenv("POD_NAMESPACE", "flyslice-system")
    assert not LeaderPodLabel.from_env(object()).enabled
