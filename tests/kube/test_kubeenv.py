"""The test environment itself: a real, RBAC-enforcing API server that starts and stops cleanly."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import kubeenv
import pytest

pytestmark = pytest.mark.kube


def test_server_is_the_pinned_kubernetes_version(kube_env: kubeenv.KubeEnv) -> None:
    version = json.loads(kube_env.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == f"v{kubeenv.K8S_VERSION}"
    assert kube_env.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"


def test_rbac_is_enforced_for_a_minted_user(kube_env: kubeenv.KubeEnv) -> None:
    cfg = kube_env.user_kubeconfig("nobody-in-particular", groups=["some-team"])
    who = kube_env.kubectl("auth", "whoami", "-o", "json", kubeconfig=cfg)
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"] == "nobody-in-particular" and "some-team" in info["groups"]
    denied = kube_env.kubectl("get", "secrets", "-n", "default", kubeconfig=cfg, check=False)
    assert denied.returncode != 0
    assert 'User "nobody-in-particular" cannot list resource "secrets"' in denied.stderr


def test_service_account_token_authenticates_as_the_service_account(
    kube_env: kubeenv.KubeEnv, namespace: str
) -> None:
    cfg = kube_env.service_account_kubeconfig(namespace, "robot")
    info = json.loads(kube_env.kubectl("auth", "whoami", "-o", "json", kubeconfig=cfg).stdout)
    assert info["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:robot"


def test_controller_manager_collects_garbage_of_owned_objects(
    kube_env: kubeenv.KubeEnv, namespace: str
) -> None:
    if "kube-controller-manager" not in kube_env.pids():
        pytest.skip("kube-controller-manager not built")
    owner = kube_env.kubectl_json("-n", namespace, "create", "configmap", "owner")
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "dependent",
            "namespace": namespace,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
            ],
        },
    }
    kube_env.kubectl("apply", "-f", "-", input=json.dumps(dependent))
    kube_env.kubectl("-n", namespace, "delete", "configmap", "owner")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if kube_env.kubectl("-n", namespace, "get", "configmap", "dependent", check=False).returncode != 0:
            return
        time.sleep(0.3)
    pytest.fail("the garbage collector did not delete the dependent of a deleted owner in 30 s")


def test_start_and_stop_leave_no_process_and_no_directory(tmp_path: Path) -> None:
    try:
        binaries = kubeenv.find_binaries()
    except kubeenv.KubeEnvUnavailable as exc:
        pytest.skip(str(exc))
    env = kubeenv.KubeEnv(binaries, controller_manager=False)
    env.start()
    try:
        pids = env.pids()
        assert set(pids) == {"etcd", "kube-apiserver"}
        assert env.kubectl("get", "namespaces").returncode == 0
        workdir = env.workdir
    finally:
        started = time.monotonic()
        env.stop()
    assert time.monotonic() - started < 15
    assert not workdir.exists()
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_missing_binary_is_reported_with_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(kubeenv.KubeEnvUnavailable, match=r"tools/kubeenv/build\.sh"):
        kubeenv.find_binaries(tmp_path)


def test_a_component_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    try:
        real = kubeenv.find_binaries()
    except kubeenv.KubeEnvUnavailable as exc:
        pytest.skip(str(exc))
    env = kubeenv.KubeEnv(real, controller_manager=False, extra_apiserver_args=["--no-such-flag"])
    with pytest.raises(kubeenv.KubeEnvError, match=r"(?s)kube-apiserver exited .*no-such-flag"):
        env.start()
    assert not env.workdir.exists() and not env.running


def test_fake_kubelet_reports_a_bound_pod_running(kube_env: kubeenv.KubeEnv, namespace: str) -> None:
    kubelet = kubeenv.FakeKubelet(kube_env, f"node-{namespace}")
    kubelet.register()
    node = kube_env.kubectl_json("get", "node", kubelet.node)
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "nf", "namespace": namespace},
        "spec": {"nodeName": kubelet.node, "containers": [{"name": "nf", "image": "nf-runner"}]},
    }
    kube_env.kubectl("apply", "-f", "-", input=json.dumps(pod))
    assert (
        kube_env.kubectl_json("-n", namespace, "get", "pod", "nf").get("status", {}).get("phase") == "Pending"
    )
    kubelet.run_pod(namespace, "nf")
    status = kube_env.kubectl_json("-n", namespace, "get", "pod", "nf")["status"]
    assert status["phase"] == "Running" and status["podIP"] == "127.0.0.1"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    kubelet.fail_pod(namespace, "nf", "ImagePullBackOff", "no registry here")
    waiting = kube_env.kubectl_json("-n", namespace, "get", "pod", "nf")["status"]["containerStatuses"][0]
    assert waiting["state"]["waiting"]["reason"] == "ImagePullBackOff"


def test_fake_kubelet_refuses_a_pod_bound_elsewhere(kube_env: kubeenv.KubeEnv, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "elsewhere", "namespace": namespace},
        "spec": {"nodeName": "other-node", "containers": [{"name": "nf", "image": "nf-runner"}]},
    }
    kube_env.kubectl("apply", "-f", "-", input=json.dumps(pod))
    with pytest.raises(kubeenv.KubeEnvError, match="bound to 'other-node'"):
        kubeenv.FakeKubelet(kube_env, "this-node").run_pod(namespace, "elsewhere")


def test_api_request_counts_see_every_write(kube_env: kubeenv.KubeEnv, namespace: str) -> None:
    before = kube_env.api_requests(group="")
    for i in range(3):
        kube_env.kubectl("-n", namespace, "create", "configmap", f"c{i}")
    after = kube_env.api_requests(group="")
    created = after.get(("POST", "configmaps"), 0) - before.get(("POST", "configmaps"), 0)
    assert created == 3
    # The group filter keeps only that group: no apiextensions resources among the core counts.
    assert not any(resource == "customresourcedefinitions" for _, resource in after)
    assert ("POST", "configmaps") not in kube_env.api_requests(group="apiextensions.k8s.io")
