"""Least-privilege RBAC and the agent node restriction (deploy/k3s), on a real API server with
real credentials: node A's agent is refused on node B's objects and allowed on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import kubeenv
import pytest

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
SYSTEM_NS = "flyslice-system"
POLICY = "flyslice-agent-node-restriction"
DIGEST = "sha256:" + "0" * 64


def _apply(env: kubeenv.KubeEnv, obj: dict[str, Any]) -> None:
    env.kubectl("apply", "-f", "-", input=json.dumps(obj))


def _edgenode(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "EdgeNode",
        "metadata": {"name": name},
        "spec": {"tier": "gateway", "runtimes": ["vnf", "fnf"], "capacity": {"cpu": "1", "memory": "512Mi"}},
    }


def _nfinstance(name: str, namespace: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "flyslice.io/v1alpha1",
        "kind": "NFInstance",
        "metadata": {"name": name, "namespace": namespace, "labels": {"flyslice.io/node": node}},
        "spec": {"slice": "s", "role": "broker", "package": "broker", "flavor": "fnf", "node": node,
                 "module": "builtin:broker", "digest": DIGEST},
    }  # fmt: skip


def _pod(name: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": "flyslice-agent",
        "containers": [{"name": "nf", "image": "ghcr.io/flyslice/nf-runner:0.1.0"}],
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": SYSTEM_NS},
        "spec": spec,
    }


class Lab:
    """Two EdgeNodes (A and B), one NFInstance on each, and credentials for each node's agent."""

    def __init__(self, env: kubeenv.KubeEnv) -> None:
        suffix = uuid.uuid4().hex[:6]
        self.env = env
        self.ns = f"restrict-{suffix}"
        self.node_a, self.node_b = f"gw-a-{suffix}", f"gw-b-{suffix}"
        env.kubectl("create", "namespace", self.ns)
        for node in (self.node_a, self.node_b):
            _apply(env, _edgenode(node))
        self.nfi_a, self.nfi_b = "nfi-a", "nfi-b"
        _apply(env, _nfinstance(self.nfi_a, self.ns, self.node_a))
        _apply(env, _nfinstance(self.nfi_b, self.ns, self.node_b))
        # A bare gateway's agent: client certificate for system:flyslice-agent:<node>.
        self.cert_a = env.user_kubeconfig(f"system:flyslice-agent:{self.node_a}", ["system:flyslice-agents"])
        self.cert_b = env.user_kubeconfig(f"system:flyslice-agent:{self.node_b}", ["system:flyslice-agents"])
        # A DaemonSet agent: its service account's token bound to its pod on Node A. No kubelet
        # exists here, so the test registers the Node object itself, as a kubelet would.
        _apply(env, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_a}})
        self.agent_pod = f"flyslice-agent-{suffix}"
        _apply(env, _pod(self.agent_pod, self.node_a))
        self.sa_a = env.service_account_kubeconfig(SYSTEM_NS, "flyslice-agent", create=False,
                                                   bound_pod=self.agent_pod)  # fmt: skip
        self.sa_unbound = env.service_account_kubeconfig(SYSTEM_NS, "flyslice-agent", create=False)

    def patch_status(self, kubeconfig: Path, resource: str, name: str, status: dict[str, Any]) -> Any:
        ns = [] if resource == "edgenode" else ["-n", self.ns]
        return self.env.kubectl(
            "patch", f"{resource}.flyslice.io", name, *ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), kubeconfig=kubeconfig, check=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def lab(kube_env: kubeenv.KubeEnv, crds_installed: list[str]) -> Lab:
    rendered = kube_env.kubectl("kustomize", str(REPO / "deploy" / "k3s")).stdout
    kube_env.kubectl("apply", "-f", "-", input=rendered)
    lab = Lab(kube_env)
    # The policy takes effect once the API server's informers see it; wait for the first refusal.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = lab.patch_status(lab.cert_a, "edgenode", lab.node_b, {"instances": 0})
        if out.returncode != 0 and POLICY in out.stderr:
            return lab
        time.sleep(0.5)
    pytest.fail(f"{POLICY} never took effect: {out.stdout} {out.stderr}")


def _can_i(env: kubeenv.KubeEnv, verb: str, resource: str, namespace: str, *auth: str,
           kubeconfig: Path | None = None) -> str:  # fmt: skip
    """``kubectl auth can-i``; ``resource`` may name a subresource as ``nfinstances/status``."""
    resource, _, sub = resource.partition("/")
    args = [
        "auth",
        "can-i",
        *auth,
        verb,
        resource,
        "-n",
        namespace,
        *([f"--subresource={sub}"] if sub else []),
    ]
    return str(env.kubectl(*args, kubeconfig=kubeconfig, check=False).stdout.strip())


def _refused_by_policy(out: Any, *fragments: str) -> None:
    assert out.returncode != 0, f"expected a refusal, got: {out.stdout}"
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


def test_gateway_agent_writes_its_own_nfinstance_status(lab: Lab) -> None:
    out = lab.patch_status(lab.cert_a, "nfinstance", lab.nfi_a, {"state": "Running", "message": "up"})
    assert out.returncode == 0, out.stderr
    stored = lab.env.kubectl_json("-n", lab.ns, "get", "nfinstance", lab.nfi_a)
    assert stored["status"]["state"] == "Running"


def test_gateway_agent_is_refused_on_another_nodes_nfinstance(lab: Lab) -> None:
    out = lab.patch_status(lab.cert_a, "nfinstance", lab.nfi_b, {"state": "Failed"})
    _refused_by_policy(out, f"the agent of node {lab.node_a} may only write NFInstances of its own node",
                       f"{lab.ns}/{lab.nfi_b} is on node {lab.node_b}")  # fmt: skip
    stored = lab.env.kubectl_json("-n", lab.ns, "get", "nfinstance", lab.nfi_b)
    assert "status" not in stored or stored["status"].get("state") != "Failed"
    # ... while B's own agent may.
    assert lab.patch_status(lab.cert_b, "nfinstance", lab.nfi_b, {"state": "Running"}).returncode == 0


def test_gateway_agent_writes_only_its_own_edgenode_heartbeat(lab: Lab) -> None:
    beat = {"heartbeatTime": "2026-01-01T00:00:00Z", "load": 0.25}
    assert lab.patch_status(lab.cert_a, "edgenode", lab.node_a, beat).returncode == 0
    assert lab.env.kubectl_json("get", "edgenode", lab.node_a)["status"]["load"] == 0.25
    out = lab.patch_status(lab.cert_a, "edgenode", lab.node_b, beat)
    _refused_by_policy(out, f"may only write its own EdgeNode, not {lab.node_b}")


def test_agent_rbac_grants_status_only(lab: Lab) -> None:
    cfg = lab.cert_a
    spec_patch = lab.env.kubectl(
        "-n", lab.ns, "patch", "nfinstance", lab.nfi_a, "--type=merge", "-p", '{"spec":{"node":"elsewhere"}}',
        kubeconfig=cfg, check=False,
    )  # fmt: skip
    assert spec_patch.returncode != 0 and 'cannot patch resource "nfinstances"' in spec_patch.stderr
    for verb, resource in [
        ("delete", "nfinstances"), ("create", "nfinstances"), ("update", "slices"), ("list", "secrets"),
        ("create", "pods"), ("patch", "edgenodes"),
    ]:  # fmt: skip
        assert _can_i(lab.env, verb, resource, lab.ns, kubeconfig=cfg) == "no", (verb, resource)
    for verb, resource in [("patch", "nfinstances/status"), ("watch", "nfinstances"), ("get", "edgenodes")]:
        assert _can_i(lab.env, verb, resource, lab.ns, kubeconfig=cfg) == "yes", (verb, resource)


def test_daemonset_agent_token_is_restricted_to_its_pods_node(lab: Lab) -> None:
    who = json.loads(lab.env.kubectl("auth", "whoami", "-o", "json", kubeconfig=lab.sa_a).stdout)
    extra = who["status"]["userInfo"].get("extra", {})
    assert extra.get("authentication.kubernetes.io/node-name") == [lab.node_a]
    assert lab.patch_status(lab.sa_a, "nfinstance", lab.nfi_a, {"state": "Installing"}).returncode == 0
    _refused_by_policy(lab.patch_status(lab.sa_a, "nfinstance", lab.nfi_b, {"state": "Installing"}),
                       f"is on node {lab.node_b}")  # fmt: skip


def test_agent_token_without_a_node_is_refused_everything(lab: Lab) -> None:
    out = lab.patch_status(lab.sa_unbound, "nfinstance", lab.nfi_a, {"state": "Running"})
    _refused_by_policy(out, "must name its node")


def test_daemonset_agent_pins_vnf_pods_to_its_own_node_only(lab: Lab) -> None:
    def create(name: str, node: str | None) -> Any:
        return lab.env.kubectl("apply", "-f", "-", input=json.dumps(_pod(name, node)), kubeconfig=lab.sa_a,
                               check=False)  # fmt: skip

    suffix = uuid.uuid4().hex[:6]
    assert create(f"nf-own-{suffix}", lab.node_a).returncode == 0
    _refused_by_policy(create(f"nf-other-{suffix}", lab.node_b), "pinned to its own node")
    _refused_by_policy(create(f"nf-unpinned-{suffix}", None), "pinned to its own node")
    deleted = lab.env.kubectl("-n", SYSTEM_NS, "delete", "pod", f"nf-own-{suffix}", "--wait=false",
                              kubeconfig=lab.sa_a, check=False)  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    # Pods elsewhere are out of reach altogether (RBAC: the Role is bound in flyslice-system only).
    can = lab.env.kubectl("auth", "can-i", "create", "pods", "-n", lab.ns, kubeconfig=lab.sa_a, check=False)
    assert can.stdout.strip() == "no"


@pytest.mark.parametrize(
    "escalation",
    [
        {"hostNetwork": True},
        {"hostPID": True},
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        {"containers": [{"name": "nf", "image": "nf-runner", "securityContext": {"privileged": True}}]},
    ],
    ids=["hostNetwork", "hostPID", "hostPath", "privileged"],
)
def test_daemonset_agent_cannot_escalate_through_pods(lab: Lab, escalation: dict[str, Any]) -> None:
    pod = _pod(f"nf-escalate-{uuid.uuid4().hex[:6]}", lab.node_a)
    pod["spec"].update(escalation)
    out = lab.env.kubectl("apply", "-f", "-", input=json.dumps(pod), kubeconfig=lab.sa_a, check=False)
    _refused_by_policy(out, "may not create privileged pods")


def test_users_and_the_operator_are_not_subject_to_the_agent_policy(lab: Lab) -> None:
    assert lab.patch_status(lab.env.kubeconfig, "nfinstance", lab.nfi_b, {"message": "admin"}).returncode == 0


def test_operator_rbac_is_least_privilege(lab: Lab) -> None:
    op = f"--as=system:serviceaccount:{SYSTEM_NS}:flyslice-operator"

    def can(verb: str, resource: str, namespace: str) -> str:
        return _can_i(lab.env, verb, resource, namespace, op)

    for verb, resource in [
        ("create", "nfinstances"), ("delete", "nfinstances"), ("patch", "slices/status"),
        ("update", "slices/finalizers"), ("create", "events"), ("watch", "gitsources"),
    ]:  # fmt: skip
        assert can(verb, resource, lab.ns) == "yes", (verb, resource)
    for verb, resource in [
        ("patch", "nfinstances/status"), ("patch", "edgenodes/status"), ("create", "pods"), ("get", "secrets"),
        ("delete", "namespaces"),
        ("create", "customresourcedefinitions"),
    ]:  # fmt: skip
        assert can(verb, resource, lab.ns) == "no", (verb, resource)
    assert can("get", "secrets", SYSTEM_NS) == "yes"  # GitSource credentials, in its own namespace only
    assert can("update", "leases", SYSTEM_NS) == "yes" and can("update", "leases", lab.ns) == "no"


def _start_agent(
    lab: Lab, node: str, kubeconfig: Path, workdir: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """The real cluster-mode agent of a bare gateway, as its systemd unit runs it."""
    log = workdir / f"agent-{node}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flyslice.nodeagent.kube.agent", "--node", node, "--kubeconfig", str(kubeconfig),
             "--state-dir", str(workdir / f"state-{node}"), "--no-pods", "--namespace", lab.ns,
             "--listen", "127.0.0.1:0", "--interval", "1", "--heartbeat", "1",
             "--insecure-plaintext"],  # API-server node restriction, not the data plane: no signer runs
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return proc, log


def _stop_agent(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def test_the_real_agent_works_under_the_policy_and_an_impostor_is_refused(lab: Lab, tmp_path: Path) -> None:
    digest = subprocess.run(
        ["flyslice", "digest", "builtin:broker"], capture_output=True, text=True, check=True
    )
    good = _nfinstance("nfi-a-real", lab.ns, lab.node_a)
    good["spec"]["digest"] = digest.stdout.strip()
    _apply(lab.env, good)

    # Node A's agent, and an impostor: node A's credentials with --node B, which tries B's status
    # and heartbeat. Both at once; the server lets the first do its work and refuses the second.
    before = lab.env.kubectl_json("get", "edgenode", lab.node_b).get("status", {}).get("heartbeatTime")
    agent, log = _start_agent(lab, lab.node_a, lab.cert_a, tmp_path)
    impostor, impostor_log = _start_agent(lab, lab.node_b, lab.cert_a, tmp_path)
    try:

        def running() -> bool:
            status = lab.env.kubectl_json("-n", lab.ns, "get", "nfinstance", "nfi-a-real").get("status", {})
            return status.get("state") == "Running"

        _wait(running, 30, f"the agent of {lab.node_a} to report its fNF Running:\n{log.read_text()[-2000:]}")
        beat = _wait(lambda: lab.env.kubectl_json("get", "edgenode", lab.node_a).get("status", {}).get("heartbeatTime"),
                     15, "the heartbeat of its EdgeNode")  # fmt: skip
        assert beat
        _wait(lambda: f"heartbeat of EdgeNode {lab.node_b}: Forbidden" in impostor_log.read_text(), 30,
              "the impostor's heartbeat to be refused")  # fmt: skip
        _wait(lambda: f"status of NFInstance {lab.ns}/{lab.nfi_b}: Forbidden" in impostor_log.read_text(), 30,
              "the impostor's status write to be refused")  # fmt: skip
    finally:
        _stop_agent(agent)
        _stop_agent(impostor)
    assert (
        lab.env.kubectl_json("get", "edgenode", lab.node_b).get("status", {}).get("heartbeatTime") == before
    )
